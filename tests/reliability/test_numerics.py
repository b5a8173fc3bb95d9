"""Numerical safety (issue 7, item 3): inputs of magnitude 1e4 give no NaN or inf on any backend,
float64 stays float64, bfloat16 and float16 run on the reference backend (and "auto" falls back to it)."""
from __future__ import annotations

import pytest
import torch

import rnnkit
from helpers import MODES
from rnnkit.cli.reference import torch_twin
from rnnkit.errors import UnsupportedBackendError
from rnnkit.verify.fuzz import cell_classes, supported_backends

LAYER_MODES = list(MODES)  # rnn_tanh, rnn_relu, lstm, lstm_proj, gru
BACKENDS = ["reference", "fused"]


def _layer(mode, backend, dtype=torch.float32, seed=0, **kwargs):
    cls, _, extra = MODES[mode]
    torch.manual_seed(seed)
    return cls(4, 6, num_layers=2, bidirectional=True, backend=backend, dtype=dtype, **{**extra, **kwargs})


def _run(layer, x, hx=None):
    out, state = layer(x, hx)
    states = list(state) if isinstance(state, tuple) else [state]
    loss = out.sum() + sum(s.sum() for s in states)
    loss.backward()
    return [out] + states


def _all_finite(tensors):
    return all(bool(torch.isfinite(t).all()) for t in tensors)


EPS32 = 2.0 ** -23  # float32's spacing just below 1


def _huge_cases():
    for mode in LAYER_MODES:
        for backend in BACKENDS:
            for with_state in (False, True):
                yield pytest.param(mode, backend, with_state,
                                   id=f"{mode}-{backend}-{'huge_state' if with_state else 'zero_state'}")


def _huge_run(mode, backend, with_state):
    """[(outputs and states, input/state gradients, weight gradients)] for the layer, its torch twin and
    the torch twin in float64 (the exact result, to within float32's rounding)."""
    layer = _layer(mode, backend)
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(12, 3, 4, generator=gen) * 1e4).requires_grad_()
    D = 2 * 2
    h0 = torch.randn(D, 3, layer.proj_size or 6, generator=gen) * 1e4
    c0 = torch.randn(D, 3, 6, generator=gen) * 1e4
    results = []
    for module in (layer, torch_twin(layer), torch_twin(layer).double()):
        dt = next(module.parameters()).dtype
        x = x.detach().to(dt).requires_grad_()
        h0, c0 = h0.to(dt), c0.to(dt)
        leaves = [x] + ([h0.clone().requires_grad_(), c0.clone().requires_grad_()] if with_state else [])
        if with_state and not isinstance(layer, rnnkit.LSTM):
            leaves = leaves[:2]
        hx = None if not with_state else (tuple(leaves[1:]) if len(leaves) == 3 else leaves[1])
        outs = _run_collect(module, x, hx)
        grads = torch.autograd.grad(sum(t.sum() for t in outs), leaves + list(module.parameters()))
        results.append((outs, list(grads[:len(leaves)]), list(grads[len(leaves):])))
    return x, results


@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "huge_state"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", LAYER_MODES)
def test_huge_inputs_stay_finite(mode, backend, with_state):
    """|x| ~ 1e4 (and h0/c0 ~ 1e4) saturates every gate: outputs, states and every gradient stay finite."""
    _, results = _huge_run(mode, backend, with_state)
    outs, dins, dws = results[0]
    assert _all_finite(outs) and _all_finite(dins) and _all_finite(dws)


@pytest.mark.parametrize("mode,backend,with_state", list(_huge_cases()))
def test_huge_inputs_still_give_torch_numbers(mode, backend, with_state):
    """At |x| ~ 1e4 the results still equal torch.nn's: outputs, states and the gradients with respect
    to the input and h0/c0 to 1e-5 (relative beyond 1: rnn_relu does not saturate, its values reach ~1e4).

    A weight gradient dW = sum_t dgate_t x_t^T is ill-conditioned here: a saturated activation's
    derivative 1 - y^2 is a rounding of y away from 0 (one ulp of y changes it by 2^-23 or more), and
    each such rounding is multiplied by |x| ~ 1e4; torch.nn's oneDNN cell and torch.tanh already
    differ by 5e-4 there.  Weight gradients must agree within 1e-5 plus 4 such roundings per input row.
    """
    x, ((outs, dins, dws), (ref_outs, ref_dins, ref_dws), (ex_outs, ex_dins, ex_dws)) = _huge_run(
        mode, backend, with_state)
    rounding = 4 * EPS32 * x.detach().abs().amax(-1).sum().item()
    triples = zip(outs + dins + dws, ref_outs + ref_dins + ref_dws, ex_outs + ex_dins + ex_dws)
    for k, (a, b, exact) in enumerate(triples):
        tol = 1e-5 * max(1.0, b.abs().max().item()) + (rounding if k >= len(outs + dins) else 0.0)
        err = (a - b).abs().max().item()
        if err > tol:
            # Where torch's float32 result is itself off from the exact one (through gates whose
            # pre-activations sum terms of 1e4, with rounding errors of ~1e-3 that any other order of
            # summation rounds differently, times states of 1e4 in the weight gradients), rnnkit must
            # be as close to the exact result as torch is: at most 4x torch's own error.
            own = (b.double() - exact).abs().max().item()
            assert (a.double() - exact).abs().max().item() <= 4 * own + tol, (k, err, tol, own)


def _run_collect(layer, x, hx):
    out, state = layer(x, hx)
    return [out] + (list(state) if isinstance(state, tuple) else [state])


@pytest.mark.parametrize("cell", list(cell_classes()))
def test_huge_inputs_stay_finite_for_every_cell_and_backend(cell):
    cls = cell_classes()[cell]
    config = {"kind": "recurrent", "cell": cell, "input_size": 4, "hidden_size": 6, "dtype": "float32"}
    for backend in supported_backends(config):
        torch.manual_seed(0)
        layer = rnnkit.Recurrent(cls, 4, 6, 2, bidirectional=True, backend=backend)
        x = (torch.randn(12, 3, 4) * 1e4).requires_grad_()
        out, h_n = layer(x)
        states = list(h_n) if isinstance(h_n, tuple) else [h_n]
        (out.sum() + sum(s.sum() for s in states)).backward()
        assert _all_finite([out, *states, x.grad] + [p.grad for p in layer.parameters() if p.grad is not None]), backend


@pytest.mark.parametrize("backend", ["auto"] + BACKENDS)
@pytest.mark.parametrize("mode", LAYER_MODES)
def test_float64_is_computed_in_float64(mode, backend):
    """Asked for float64, every backend computes in float64: the result equals torch.nn's float64
    to 1e-10, far below what a float32 detour would leave (about 1e-7)."""
    layer = _layer(mode, backend, dtype=torch.float64)
    x = torch.randn(9, 3, 4, dtype=torch.float64, requires_grad=True)
    ours = _run(layer, x)
    assert all(t.dtype == torch.float64 for t in ours + [x.grad] + [p.grad for p in layer.parameters()])
    grad_ours = x.grad.clone()
    x.grad = None
    ref = _run(torch_twin(layer), x)
    for a, b in zip(ours + [grad_ours], ref + [x.grad]):
        assert (a - b).abs().max().item() <= 1e-10


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("mode", LAYER_MODES)
def test_low_precision_runs_on_the_reference_backend(mode, dtype):
    """bfloat16 and float16: "auto" falls back to the reference loop (the fused kernels run float32/64
    only), the result keeps the dtype and is as close to the float32 result as the format allows."""
    ref32 = _layer(mode, "auto")
    x32 = torch.randn(7, 3, 4)
    out32 = _run(ref32, x32)[0]
    eps = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}[dtype]
    for backend in ("auto", "reference"):
        layer = _layer(mode, backend, dtype=dtype)
        layer.load_state_dict(ref32.state_dict())
        x = x32.to(dtype).requires_grad_()
        outs = _run(layer, x)
        assert outs[0].dtype == dtype and x.grad.dtype == dtype
        assert _all_finite(outs + [x.grad] + [p.grad for p in layer.parameters()])
        assert (outs[0].float() - out32).abs().max().item() <= 40 * eps  # ~10 roundings of a value < 1, x4
        with torch.no_grad():  # huge inputs in low precision: still no NaN or inf
            assert _all_finite([layer((x32 * 1e4).to(dtype))[0]])
    with pytest.raises(UnsupportedBackendError, match="float32 and float64"):
        _layer(mode, "fused", dtype=dtype)(x32.to(dtype))


def test_low_precision_recurrent_cells_fall_back_too():
    for name, cls in cell_classes().items():
        torch.manual_seed(0)
        layer = rnnkit.Recurrent(cls, 4, 6, 2, bidirectional=True).to(torch.bfloat16)
        out = layer(torch.randn(7, 3, 4, dtype=torch.bfloat16))[0]
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all(), name
