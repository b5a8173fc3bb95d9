"""torch.jit.script of models holding rnnkit's layers and cells (rnnkit/export/torchscript.py): the scripted
twin computes what the eager layer computes on the same operators (bitwise, against backend="ops") and
torch.nn's numbers, gradients included; it shares the layer's parameters; a saved model loads in a fresh
process after `import rnnkit` and runs on shapes never seen before; what it cannot run is refused clearly."""
import re
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from helpers import MODES, TOL, flat
from rnnkit.cells import LayerNormLSTMCell
from test_purity import FORBIDDEN_OPS, OpRecorder

I, H, T, B = 4, 5, 6, 3
DTYPE = torch.float64  # the float64 computation: torch.nn's numbers to TOL, not to float32's rounding
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|save|load)` is deprecated:DeprecationWarning")


def layer_and_torch_twin(mode, **kwargs):
    """(an rnnkit layer on backend="ops", the torch.nn layer with its state_dict)."""
    ours_cls, torch_cls, extra = MODES[mode]
    ours = ours_cls(I, H, dtype=DTYPE, backend="ops", **extra, **kwargs)
    ref = torch_cls(I, H, dtype=DTYPE, **extra, **kwargs)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def inputs(layer, batched, with_hx, seed=0):
    """(input, hx or None, the leaves to differentiate: input first, then the initial states)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, I, dtype=DTYPE, generator=gen)  # (T, B, I)
    if layer.batch_first:
        x = x.transpose(0, 1).contiguous()  # (B, T, I)
    if not batched:
        x = x[0] if layer.batch_first else x[:, 0]  # (T, I)
    x.requires_grad_()
    if not with_hx:
        return x, None, [x]
    layers = layer.num_layers * (2 if layer.bidirectional else 1)
    sizes = [layer.proj_size or layer.hidden_size] + ([layer.hidden_size] if layer.mode == "LSTM" else [])
    states = [torch.randn((layers, B, size) if batched else (layers, size), dtype=DTYPE, generator=gen,
                          requires_grad=True) for size in sizes]
    return x, (tuple(states) if len(states) == 2 else states[0]), [x] + states


def results_and_grads(module, params, x, hx, leaves):
    """(every output tensor, the gradients of a fixed random weighting of them w.r.t. leaves and params)."""
    out = module(x, hx)
    tensors = flat(out)
    gen = torch.Generator().manual_seed(123)
    loss = sum((t * torch.randn(t.shape, dtype=t.dtype, generator=gen)).sum() for t in tensors)
    return tensors, list(torch.autograd.grad(loss, leaves + params))


def assert_same_structure(a, b):
    """torch.nn's return types: (output, h_n) or (output, (h_n, c_n))."""
    assert type(a) is type(b) and len(a) == len(b) == 2
    assert isinstance(a[1], tuple) == isinstance(b[1], tuple)


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_first", "batch_first"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("mode", list(MODES))
def test_the_scripted_layer_computes_the_eager_layers_and_torch_nns_numbers(mode, num_layers, bidirectional,
                                                                            batch_first):
    torch.manual_seed(0)
    layer, ref = layer_and_torch_twin(mode, num_layers=num_layers, bidirectional=bidirectional,
                                      batch_first=batch_first)
    scripted = torch.jit.script(layer)
    params = list(layer.parameters())
    ref_params = list(ref.parameters())
    for batched in (True, False):
        for with_hx in (False, True):
            x, hx, leaves = inputs(layer, batched, with_hx)
            eager_out = layer(x, hx)
            script_out = scripted(x, hx)
            assert_same_structure(script_out, eager_out)
            assert_same_structure(script_out, ref(x, hx))
            got = results_and_grads(scripted, params, x, hx, leaves)
            eager = results_and_grads(layer, params, x, hx, leaves)
            torch_nn = results_and_grads(ref, ref_params, x, hx, leaves)
            for g, e, t in zip(got[0] + got[1], eager[0] + eager[1], torch_nn[0] + torch_nn[1]):
                assert g.shape == e.shape == t.shape
                assert torch.equal(g, e), (batched, with_hx)  # the same operators, the same numbers
                torch.testing.assert_close(g, t, rtol=TOL[DTYPE], atol=TOL[DTYPE])


@pytest.mark.parametrize("mode", list(MODES))
def test_the_scripted_layer_runs_rnnkits_operators_never_torch_nns(mode):
    layer, _ = layer_and_torch_twin(mode, num_layers=2, bidirectional=True)
    scripted = torch.jit.script(layer)
    x = torch.randn(T, B, I, dtype=DTYPE, requires_grad=True)
    with OpRecorder() as rec:
        scripted(x)[0].sum().backward()
    assert not [op for op in rec.ops if FORBIDDEN_OPS.search(op)]
    operator = layer.mode.lower()  # "lstm", "gru", "rnn_tanh", "rnn_relu"
    assert {f"rnnkit::{operator}", f"rnnkit::{operator}_backward"} <= rec.ops


class Tagger(nn.Module):
    """A model holding an rnnkit layer and an nn.Linear: what torch.jit.script meets in practice."""

    def __init__(self):
        super().__init__()
        self.rnn = rnnkit.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * H, 3)

    def forward(self, x):
        out, (h, c) = self.rnn(x)
        return self.head(out), h, c


def test_a_saved_scripted_model_loads_after_import_rnnkit_in_a_fresh_process_and_takes_new_shapes(tmp_path):
    torch.manual_seed(0)
    model = Tagger()
    scripted = torch.jit.script(model)
    scripted(torch.randn(2, 6, I))  # run once on one shape; the saved graph must not keep it
    torch.jit.save(scripted, str(tmp_path / "model.pt"))
    x = torch.randn(5, 11, I)  # another batch and length than any used before
    torch.save(x, tmp_path / "x.pt")
    code = ("import sys, torch, rnnkit; d = sys.argv[1]; "
            "m = torch.jit.load(d + '/model.pt'); x = torch.load(d + '/x.pt').requires_grad_(); "
            "out = m(x); out[0].sum().backward(); torch.save([t.detach() for t in out] + [x.grad], d + '/out.pt')")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = torch.load(tmp_path / "out.pt")
    x.requires_grad_()
    expected = model(x)
    expected[0].sum().backward()
    for g, e in zip(got, [t.detach() for t in expected] + [x.grad]):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e)  # float32: the eager backend need not be the operators


@pytest.mark.parametrize("cls", [rnnkit.RNNCell, rnnkit.LSTMCell, rnnkit.GRUCell])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_scripted_cells_compute_torch_nns_numbers(cls, bias):
    torch.manual_seed(0)
    cell = cls(I, H, bias=bias, dtype=DTYPE)
    ref = getattr(nn, cls.__name__)(I, H, bias=bias, dtype=DTYPE)
    ref.load_state_dict(cell.state_dict())
    scripted = torch.jit.script(cell)
    params = list(cell.parameters())
    for batched in (True, False):
        for with_hx in (False, True):
            gen = torch.Generator().manual_seed(1)
            x = torch.randn((B, I) if batched else (I,), dtype=DTYPE, generator=gen, requires_grad=True)
            hx, leaves = None, [x]
            if with_hx:
                states = [torch.randn((B, H) if batched else (H,), dtype=DTYPE, generator=gen, requires_grad=True)
                          for _ in range(2 if cls is rnnkit.LSTMCell else 1)]
                hx, leaves = (tuple(states) if len(states) == 2 else states[0]), [x] + states
            out = scripted(x, hx)
            assert type(out) is type(ref(x, hx))  # h' or (h', c')
            got = results_and_grads(scripted, params, x, hx, leaves)
            expected = results_and_grads(ref, list(ref.parameters()), x, hx, leaves)
            for g, e in zip(got[0] + got[1], expected[0] + expected[1]):
                torch.testing.assert_close(g, e, rtol=TOL[DTYPE], atol=TOL[DTYPE])


def test_a_relu_cell_scripts_to_the_relu_operator():
    torch.manual_seed(0)
    cell = rnnkit.RNNCell(I, H, nonlinearity="relu", dtype=DTYPE)
    ref = nn.RNNCell(I, H, nonlinearity="relu", dtype=DTYPE)
    ref.load_state_dict(cell.state_dict())
    x = torch.randn(B, I, dtype=DTYPE)
    torch.testing.assert_close(torch.jit.script(cell)(x), ref(x), rtol=TOL[DTYPE], atol=TOL[DTYPE])


def test_dropout_between_layers_is_eagers_in_eval_and_runs_in_training():
    torch.manual_seed(0)
    layer = rnnkit.GRU(I, H, num_layers=3, dropout=0.5, dtype=DTYPE, backend="ops")
    scripted = torch.jit.script(layer)
    x = torch.randn(T, B, I, dtype=DTYPE)
    scripted.eval()
    layer.eval()
    assert all(torch.equal(a, b) for a, b in zip(scripted(x), layer(x)))
    scripted.train()
    layer.train()
    torch.manual_seed(1)
    out, h = scripted(x)
    assert out.shape == (T, B, H) and h.shape == (3, B, H)
    torch.manual_seed(1)
    expected_out, _ = layer(x)  # the same draws, in the same order
    assert torch.equal(out, expected_out)
    assert not torch.equal(out, layer.eval()(x)[0])  # dropout did act


def test_the_scripted_layer_holds_the_layers_own_parameters():
    torch.manual_seed(0)
    layer = rnnkit.LSTM(I, H, num_layers=2, proj_size=3, bidirectional=True, dtype=DTYPE, backend="ops")
    scripted = torch.jit.script(layer)
    assert list(scripted.state_dict()) == list(layer.state_dict())
    x = torch.randn(T, B, I, dtype=DTYPE)
    with torch.no_grad():
        layer.weight_hh_l1_reverse.mul_(2)  # changed in place on the eager layer
        assert torch.equal(scripted(x)[0], layer(x)[0])
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    scripted(x)[0].sum().backward()  # the scripted model's gradients land on the layer's parameters
    assert all(p.grad is not None for p in layer.parameters())
    optimizer.step()
    with torch.no_grad():
        assert torch.equal(scripted(x)[0], layer(x)[0])


def test_the_model_you_scripted_keeps_its_eager_behaviour():
    """torch.jit.script puts the twin in the layer's place in your Python model too; called eagerly the twin
    runs the original layer, so the model still takes a PackedSequence and follows train()/eval()."""
    torch.manual_seed(0)
    model = Tagger()
    original, keys = model.rnn, list(model.state_dict())
    torch.jit.script(model)
    twin = model.rnn
    assert twin is not original and list(model.state_dict()) == keys
    x = torch.randn(2, 7, I)
    assert torch.equal(twin(x)[0], original(x)[0])
    out, _ = twin(pack_padded_sequence(x, [7, 4], batch_first=True))
    assert out.data.shape == (11, 2 * H)
    model.eval()
    twin(x)
    assert not original.training


def test_what_the_scripted_layer_cannot_take_is_refused():
    scripted = torch.jit.script(rnnkit.LSTM(I, H))
    packed = pack_padded_sequence(torch.randn(T, B, I), [6, 4, 1])
    with pytest.raises(RuntimeError, match="Tensor"):  # TorchScript's own type check of the argument
        scripted(packed)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", ["4-D input", "input size", "hx shape", "hx dims", "empty sequence"])
def test_bad_input_gets_torch_nns_message(mode, case):
    torch.manual_seed(0)
    layer, ref = layer_and_torch_twin(mode, num_layers=2)
    scripted = torch.jit.script(layer)
    x = torch.randn(T, B, I, dtype=DTYPE)
    _, hx, _ = inputs(layer, batched=True, with_hx=True)
    if case == "4-D input":
        args = (x[None], None)
    elif case == "input size":
        args = (torch.randn(T, B, I + 1, dtype=DTYPE), None)
    elif case == "hx shape":
        args = (x[:, :2], hx)
    elif case == "hx dims":
        args = (x[:, 0], hx)
    else:
        args = (x[:0], None)
    with pytest.raises(Exception) as expected:
        ref(*args)
    with pytest.raises(torch.jit.Error, match=re.escape(str(expected.value))):
        scripted(*args)


def test_cells_outside_torch_nns_families_are_refused_clearly():
    with pytest.raises(rnnkit.UnsupportedBackendError, match=r"TorchScript.*supported for.*torch\.jit\.trace or torch\.export"):
        torch.jit.script(LayerNormLSTMCell(I, H))
    with pytest.raises(rnnkit.UnsupportedBackendError, match="TorchScript"):
        torch.jit.script(rnnkit.GRUCell(I, H, reset_after=False))  # not torch.nn's GRU equations


@pytest.mark.parametrize("module", [lambda: rnnkit.GRU(I, H), lambda: rnnkit.LSTMCell(I, H)], ids=["layer", "cell"])
def test_scripting_without_the_extension_says_how_to_build_it(extension_missing, module):
    with pytest.raises(rnnkit.UnsupportedBackendError, match=r"rnnkit\._C.*--no-build-isolation"):
        torch.jit.script(module())


def test_what_the_operators_cannot_run_is_refused_at_scripting():
    with pytest.raises(rnnkit.UnsupportedBackendError, match="float32 or float64"):
        torch.jit.script(rnnkit.GRU(I, H, dtype=torch.bfloat16))
    layer = torch.nn.utils.parametrizations.weight_norm(rnnkit.LSTM(I, H), "weight_hh_l0")
    with pytest.raises(rnnkit.UnsupportedBackendError, match="weight_hh_l0 is not a plain parameter"):
        torch.jit.script(layer)
