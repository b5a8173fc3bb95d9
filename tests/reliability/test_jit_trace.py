"""torch.jit.trace (issue 16, item 4): a trace, saved and loaded, computes what the module computes (the
reference loop's numbers, which the fused kernels match to rounding), under no_grad as with grad; on an input
of another shape it raises; what a trace cannot hold (a PackedSequence, lengths) is refused at trace time."""
import io
import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from helpers import assert_within_rounding, float64_truth_of
from rnnkit.cells import LayerNormLSTMCell

MODELS = {
    "lstm": lambda backend: rnnkit.LSTM(4, 5, batch_first=True, num_layers=2, bidirectional=True, backend=backend),
    "gru": lambda backend: rnnkit.GRU(4, 5, batch_first=True, backend=backend),
    "rnn": lambda backend: rnnkit.RNN(4, 5, batch_first=True, backend=backend),
    "recurrent": lambda backend: rnnkit.Recurrent(LayerNormLSTMCell, 4, 5, batch_first=True, backend=backend),
}


def saved_and_loaded(traced):
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def trace(model, example, grad):
    with torch.set_grad_enabled(grad), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(model, (example,))


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("name", list(MODELS))
def test_a_saved_trace_computes_what_the_module_computes(name, grad):
    torch.manual_seed(0)
    model = MODELS[name]("auto").eval()
    reference = MODELS[name]("reference").eval()
    reference.load_state_dict(model.state_dict())
    loaded = saved_and_loaded(trace(model, torch.randn(2, 6, 4), grad))
    x = torch.randn(2, 6, 4)
    with torch.no_grad():
        got, expected, fused = loaded(x), reference(x), model(x)
    got, expected, fused = (torch.utils._pytree.tree_leaves(v) for v in (got, expected, fused))
    assert all(torch.equal(a, b) for a, b in zip(got, expected))  # the trace records the reference loop
    # and that is the module's output to rounding: both within float32's rounding of the float64 computation
    # (helpers: a bound derived from the computation's sensitivity to rounding, not one machine's luck)
    truth, sensitivities = float64_truth_of(lambda m, x: m(x), model, [x], grad=False)
    assert_within_rounding(got, truth, sensitivities, torch.float32, who="the trace")
    assert_within_rounding(fused, truth, sensitivities, torch.float32, who="the module")
    assert max(t.abs().max() for t in got) < 10  # not uninitialised memory (the issue saw 1e4 to 1e34)


@pytest.mark.parametrize("shape", [(3, 6, 4), (2, 7, 4), (1, 12, 4), (4, 3, 4), (12, 1, 4)])
def test_a_trace_raises_on_another_shape(shape):
    torch.manual_seed(0)
    loaded = saved_and_loaded(trace(MODELS["gru"]("auto").eval(), torch.randn(2, 6, 4), False))
    with pytest.raises(RuntimeError, match="split_with_sizes"):
        loaded(torch.randn(*shape))


def test_a_trace_of_batch_one_raises_on_a_larger_batch_of_the_same_rows():
    """Without the shape pins this case broadcast the batch of 1 into a wrong output, silently."""
    torch.manual_seed(0)
    loaded = saved_and_loaded(trace(MODELS["gru"]("auto").eval(), torch.randn(1, 6, 4), False))
    with pytest.raises(RuntimeError, match="split_with_sizes"):
        loaded(torch.randn(2, 3, 4))


def test_tracing_warns_that_the_trace_is_for_its_shape():
    with pytest.warns(torch.jit.TracerWarning, match="only on inputs of the traced shape"):
        torch.jit.trace(rnnkit.GRU(4, 5), (torch.randn(6, 2, 4),))


def test_what_a_trace_cannot_hold_is_refused():
    packed = pack_padded_sequence(torch.randn(6, 2, 4), [3, 6], enforce_sorted=False)  # every field a tensor
    with pytest.raises(RuntimeError, match="PackedSequence"):
        torch.jit.trace(rnnkit.LSTM(4, 5), (packed,))
    layer = rnnkit.Recurrent(LayerNormLSTMCell, 4, 5)
    with pytest.raises(RuntimeError, match="lengths"):
        torch.jit.trace(lambda x: layer(x, lengths=[6, 3])[0], (torch.randn(6, 2, 4),))


def test_a_named_fused_backend_refuses_tracing():
    with pytest.raises(rnnkit.UnsupportedBackendError, match="torch.jit.trace"):
        torch.jit.trace(rnnkit.LSTM(4, 5, backend="fused"), (torch.randn(6, 2, 4),))
