"""rnnkit cells equal torch.nn's in every input form: values, gradients, init, repr."""
import pytest
import torch
from torch import nn

import rnnkit
from helpers import assert_within_rounding, float64_truth_of, outputs_and_grads

CELLS = {
    "rnn_tanh": (rnnkit.RNNCell, nn.RNNCell, {}),
    "rnn_relu": (rnnkit.RNNCell, nn.RNNCell, {"nonlinearity": "relu"}),
    "lstm": (rnnkit.LSTMCell, nn.LSTMCell, {}),
    "gru": (rnnkit.GRUCell, nn.GRUCell, {}),
}
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def cell_twins(name, dtype, bias=True):
    ours_cls, ref_cls, kw = CELLS[name]
    torch.manual_seed(3)
    ours = ours_cls(4, 5, bias=bias, dtype=dtype, **kw)
    torch.manual_seed(3)
    ref = ref_cls(4, 5, bias=bias, dtype=dtype, **kw)
    return ours, ref


def as_list(v):
    return list(v) if isinstance(v, tuple) else [v]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("form", ["batched", "unbatched", "batched_nohx", "unbatched_nohx"])
@pytest.mark.parametrize("name", CELLS)
def test_cell_parity(name, form, bias, dtype):
    ours, ref = cell_twins(name, dtype, bias)
    assert repr(ours) == repr(ref)
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), ref.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    gen = torch.Generator().manual_seed(1)
    batch_shape = (3,) if form.startswith("batched") else ()
    x = torch.randn(*batch_shape, 4, dtype=dtype, generator=gen, requires_grad=True)
    states = []
    if not form.endswith("nohx"):
        arity = 2 if name == "lstm" else 1
        states = [torch.randn(*batch_shape, 5, dtype=dtype, generator=gen, requires_grad=True) for _ in range(arity)]

    def call(cell, x, *states):
        return cell(x, None if not states else (tuple(states) if len(states) == 2 else states[0]))

    # outputs, then the gradients of a fixed random weighting of them w.r.t. x, the states, the parameters
    results = [outputs_and_grads(call, cell, [x, *states]) for cell in (ours, ref)]
    assert [a.shape for a in results[0]] == [b.shape for b in results[1]]
    if dtype == torch.float64:  # two float64 implementations agree to ~1e-15 of these magnitudes
        for a, b in zip(*results):
            assert (a - b).abs().max().item() <= TOL[dtype]
        return
    # float32: each within float32's rounding of the float64 truth (helpers: a bound derived from the
    # computation's sensitivity to rounding, not fitted to one machine's rounding)
    truth, sensitivities = float64_truth_of(call, ref, [x, *states])
    assert_within_rounding(results[0], truth, sensitivities, dtype, who="rnnkit")
    assert_within_rounding(results[1], truth, sensitivities, dtype, who="torch.nn float32")


def test_notes_cell_loops():
    x = torch.randn(10, 3, 100)
    cell1 = rnnkit.RNNCell(100, 20)
    h1 = torch.zeros(3, 20)
    for xt in x:
        h1 = cell1(xt, h1)
    assert h1.shape == (3, 20)
    cell1, cell2 = rnnkit.RNNCell(100, 30), rnnkit.RNNCell(30, 20)
    h1, h2 = torch.zeros(3, 30), torch.zeros(3, 20)
    for xt in x:
        h1 = cell1(xt, h1)
        h2 = cell2(h1, h2)
    assert (h1.shape, h2.shape) == ((3, 30), (3, 20))
    cell = rnnkit.LSTMCell(input_size=100, hidden_size=20)
    h, c = torch.randn(3, 20), torch.randn(3, 20)
    for xt in x:
        h, c = cell(xt, (h, c))
    assert h.shape == c.shape == (3, 20)


def test_cell_equals_one_layer_step():
    """A layer is its cell run over time: GRU(4,5) == GRUCell loop with the same parameters.  In float64:
    the layer's fused kernel and the cell's ops round differently, and float64 leaves ~1e-16 of that."""
    torch.manual_seed(0)
    layer = rnnkit.GRU(4, 5, dtype=torch.float64)
    cell = rnnkit.GRUCell(4, 5, dtype=torch.float64)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    x = torch.randn(6, 2, 4, dtype=torch.float64)
    h = torch.zeros(2, 5, dtype=torch.float64)
    outs = []
    for xt in x:
        h = cell(xt, h)
        outs.append(h)
    out, h_n = layer(x)
    torch.testing.assert_close(out, torch.stack(outs), atol=TOL[torch.float64], rtol=0)
    torch.testing.assert_close(h_n[0], h, atol=TOL[torch.float64], rtol=0)


def test_cell_state_dict_loads_both_ways():
    for name in CELLS:
        ours, ref = cell_twins(name, torch.float32)
        ours.load_state_dict(ref.state_dict(), strict=True)
        ref.load_state_dict(ours.state_dict(), strict=True)
