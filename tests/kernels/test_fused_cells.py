"""The fused CPU kernels of the other cell families (rnnkit.cells) against the reference loop:
outputs, final states and every gradient (input, initial state, each parameter), over layers,
directions, padded/packed input, with and without an initial state; and gradcheck on a tiny case."""
from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import kernels
from rnnkit.cells import (GRUCell, IndRNNCell, LayerNormGRUCell, LayerNormLSTMCell, MinGRUCell, MinLSTMCell,
                          PeepholeLSTMCell)
from rnnkit.kernels.cpu import common, split

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
INPUT, HIDDEN, STEPS, BATCH = 5, 6, 6, 4
LENGTHS = [4, 6, 1, 4]  # packed (unsorted): shrinking batch, a length shared, a length-1 sequence

# name -> (cell class, cell kwargs, whether the kernel has the two strategies).
# LN_CELLS: the layer norms in the loop (over few features here) amplify float32 rounding:
# the float32 reference itself is off from the float64 result by up to ~1e-3 on these
# gradients (of size ~10-100, ~2e-5 of their size), so two float32 implementations cannot
# agree to 1e-5.  For those, float32 is checked against the float64 reference on the same
# inputs: the fused kernel's largest error must be at most 4x the float32 reference's own
# (floor 1e-5 of the tensor's size).  float64 is compared directly at 1e-10.
CELLS = {
    "indrnn_relu": (IndRNNCell, dict(nonlinearity="relu"), False),
    "indrnn_tanh": (IndRNNCell, dict(nonlinearity="tanh"), False),
    "indrnn_clip": (IndRNNCell, dict(nonlinearity="relu", recurrent_max_abs=0.3), False),
    "peephole_lstm": (PeepholeLSTMCell, {}, True),
    "gru_reset_before": (GRUCell, dict(reset_after=False), True),
    "layernorm_lstm": (LayerNormLSTMCell, {}, True),
    "layernorm_gru": (LayerNormGRUCell, {}, True),
    "min_gru": (MinGRUCell, {}, False),
    "min_lstm": (MinLSTMCell, {}, False),
}
LN_CELLS = ("layernorm_lstm", "layernorm_gru")

# (num_layers, bidirectional, inputs, with_state, bias): every value of every axis occurs
CONFIGS = [
    (1, False, "padded", False, True),
    (2, True, "packed", True, True),
    (1, True, "packed", False, False),
    (2, False, "padded", True, True),
]


# the kernels that split the batch rows across threads (in float32)
SPLIT_CELLS = ("layernorm_lstm",)


@pytest.fixture(params=["loop", "step"])
def strategy(request, monkeypatch):
    """"loop": the whole time loop in one jitted call; "step": per-step BLAS products + jitted math."""
    monkeypatch.setattr(common, "WHOLE_LOOP_MAX_FLOPS", 1e12 if request.param == "loop" else -1.0)
    monkeypatch.setattr(split, "thread_parts", lambda batch: 1)
    return request.param


def make(name, backend, dtype, num_layers, bidirectional, bias):
    cell, kw, _ = CELLS[name]
    return rnnkit.Recurrent(cell, INPUT, HIDDEN, num_layers, bidirectional=bidirectional, backend=backend,
                            bias=bias, **kw).to(dtype)


def run(layer, dtype, inputs, with_state, n_states):
    gen = torch.Generator().manual_seed(1)
    D = 2 if layer.bidirectional else 1
    # drawn in float64 whatever the dtype, so that runs in float32 and float64 see the same values
    x = torch.randn(STEPS, BATCH, INPUT, generator=gen, dtype=torch.float64).to(dtype).requires_grad_(True)
    leaves = [x]
    inp = x if inputs == "padded" else pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    hx = None
    if with_state:
        state = [(0.5 * torch.randn(layer.num_layers * D, BATCH, HIDDEN, generator=gen, dtype=torch.float64))
                 .to(dtype).requires_grad_(True) for _ in range(n_states)]
        leaves += state
        hx = state[0] if n_states == 1 else tuple(state)
    out, hn = layer(inp, hx)
    out = out if inputs == "padded" else out.data
    hn = hn if isinstance(hn, tuple) else (hn,)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=torch.float64).to(dtype)).sum() for t in (out,) + hn)
    grads = torch.autograd.grad(loss, leaves + list(layer.parameters()))
    return [out.detach(), *[h.detach() for h in hn], *grads]


def cases():
    for name in CELLS:
        for dtype in (torch.float32, torch.float64):
            for cfg in CONFIGS:
                yield pytest.param(name, dtype, cfg, id=f"{name}-{str(dtype)[6:]}-" + "-".join(map(str, cfg)))


@pytest.mark.parametrize("name,dtype,cfg", list(cases()))
def test_fused_equals_reference(name, dtype, cfg, strategy):
    if strategy == "step" and not CELLS[name][2]:
        pytest.skip("one strategy only (no matrix product in the loop)")
    check_against_reference(name, dtype, cfg)


@pytest.mark.parametrize("name", SPLIT_CELLS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda cfg: "-".join(map(str, cfg)))
def test_rows_split_equals_reference(name, cfg, monkeypatch):
    """The batch rows split across threads as far as it goes (one row per chunk), in float32."""
    monkeypatch.setattr(common, "WHOLE_LOOP_MAX_FLOPS", 1e12)
    monkeypatch.setattr(split, "thread_parts", lambda batch: batch)
    check_against_reference(name, torch.float32, cfg)


def check_against_reference(name, dtype, cfg):
    num_layers, bidirectional, inputs, with_state, bias = cfg
    torch.manual_seed(0)
    ref = make(name, "reference", dtype, num_layers, bidirectional, bias)
    fused = make(name, "fused", dtype, num_layers, bidirectional, bias)
    fused.load_state_dict(ref.state_dict())
    with torch.no_grad():  # move every parameter off its initial value (gains of one, zero shifts)
        for p in ref.parameters():
            p.add_(0.2 * torch.randn(p.shape, dtype=dtype))
    fused.load_state_dict(ref.state_dict())
    n_states = len(ref.cells[0].equations.state_names)
    expected = run(ref, dtype, inputs, with_state, n_states)
    got = run(fused, dtype, inputs, with_state, n_states)
    assert len(got) == len(expected)
    if name in LN_CELLS and dtype == torch.float32:
        ref64 = make(name, "reference", torch.float64, num_layers, bidirectional, bias)
        ref64.load_state_dict(ref.state_dict())
        truth = run(ref64, torch.float64, inputs, with_state, n_states)
        for k, (g, e, t) in enumerate(zip(got, expected, truth)):
            assert g.dtype == torch.float32 and g.shape == t.shape
            err_fused = (g.double() - t).abs().max().item()
            err_ref = (e.double() - t).abs().max().item()
            assert err_fused <= max(4 * err_ref, 1e-5 * (1 + t.abs().max().item())), (k, err_fused, err_ref)
        return
    for k, (g, e) in enumerate(zip(got, expected)):
        torch.testing.assert_close(g, e, rtol=TOL[dtype], atol=TOL[dtype], msg=lambda m: f"tensor {k}: {m}")


def test_fused_is_selected():
    x = torch.randn(3, INPUT)
    for name in CELLS:
        cell = CELLS[name][0](INPUT, HIDDEN, **CELLS[name][1])
        assert kernels.select("fused", cell.equations, x, cell.cell_weights()).name == "fused"


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("reverse,packed", [(False, False), (True, True)], ids=["forward-padded", "reverse-packed"])
def test_gradcheck(name, reverse, packed, strategy):
    if strategy == "step" and not CELLS[name][2]:
        pytest.skip("one strategy only (no matrix product in the loop)")
    gen = torch.Generator().manual_seed(3)
    cell = CELLS[name][0](INPUT, 3, **CELLS[name][1]).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    sizes = [3, 3, 2, 1] if packed else [3, 3, 3, 3]
    x = (0.5 * torch.randn(sum(sizes), INPUT, generator=gen, dtype=torch.float64)).requires_grad_(True)
    ns = len(cell.equations.state_names)
    state0 = tuple((0.5 * torch.randn(3, 3, generator=gen, dtype=torch.float64)).requires_grad_(True)
                   for _ in range(ns))
    params = [p for p in cell.parameters()]
    kernel = kernels.BACKENDS["fused"]
    names = [n for n, _ in cell.named_parameters()]

    def f(x, *rest):
        st, ps = rest[:ns], rest[ns:]
        for n, p in zip(names, ps):  # the cell's parameters replaced by the checked leaves
            cell._parameters[n] = p
        out, final = kernel.layer(cell.equations, x, sizes, st, cell.cell_weights(), reverse)
        return (out,) + tuple(final)

    try:
        assert torch.autograd.gradcheck(f, (x, *state0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)
    finally:
        for n, p in zip(names, params):
            cell._parameters[n] = p


@pytest.mark.parametrize("name", list(CELLS))
def test_no_grad_forward_matches_grad_forward(name):
    """Without a gradient the kernels keep nothing for backward (another path through them)."""
    torch.manual_seed(0)
    layer = make(name, "fused", torch.float64, 2, True, True)
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
    inp = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    with torch.no_grad():
        a, ha = layer(inp)
    b, hb = layer(inp)
    ha = ha if isinstance(ha, tuple) else (ha,)
    hb = hb if isinstance(hb, tuple) else (hb,)
    assert torch.equal(a.data, b.data.detach())
    assert all(torch.equal(p, q.detach()) for p, q in zip(ha, hb))
