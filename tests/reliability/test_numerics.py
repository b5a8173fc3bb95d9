"""Numerical safety (issue 7, item 3): inputs of magnitude 1e4 give no NaN or inf on any backend,
float64 stays float64, bfloat16 and float16 run on the reference backend (and "auto" falls back to it)."""
from __future__ import annotations

import pytest
import torch

import rnnkit
from helpers import MODES, assert_within_rounding, float64_truth_of, rounding_sensitivity
from rnnkit.cli.reference import torch_twin
from rnnkit.errors import UnsupportedBackendError
from rnnkit.kernels.ops import extension as ops_extension
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
    """At |x| ~ 1e4 the results are still torch.nn's numbers: rnnkit's float32 results (outputs, states,
    the gradients with respect to the input, h0/c0 and every weight) and torch.nn's float32 ones each
    within float32's rounding of the float64 computation (helpers: a bound derived from the computation's
    sensitivity to rounding, on every machine).  That sensitivity is large where the computation is
    ill-conditioned: a weight gradient dW = sum_t dgate_t x_t^T through saturated activations, whose
    derivative 1 - y^2 is a rounding of y away from 0 (one ulp of y changes it by 2^-23 or more), times
    |x| ~ 1e4 (torch.nn's oneDNN cell and torch.tanh differ by 5e-4 there); rnn_relu does not saturate
    and its values reach ~1e4.  The sensitivity perturbs every op of the float64 run as rounding does,
    so it sees exactly that amplification (the bound before: 1e-5 plus 4 roundings per input row, and
    else 4x torch's own error, held by the luck of torch's rounding)."""
    _, ((outs, dins, dws), (ref_outs, ref_dins, ref_dws), _) = _huge_run(mode, backend, with_state)
    truth, sensitivities = _huge_truth(mode, backend, with_state)
    assert_within_rounding(outs + dins + dws, truth, sensitivities, torch.float32, who="rnnkit")
    assert_within_rounding(ref_outs + ref_dins + ref_dws, truth, sensitivities, torch.float32, who="torch.nn float32")


def _huge_truth(mode, backend, with_state):
    """(truth, sensitivities) of _huge_run's results: torch.nn's twin in float64 on the same values."""
    layer = _layer(mode, backend)
    twin = torch_twin(layer).double()
    names = [n for n, _ in twin.named_parameters()]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(12, 3, 4, generator=gen) * 1e4
    h0 = torch.randn(4, 3, layer.proj_size or 6, generator=gen) * 1e4
    c0 = torch.randn(4, 3, 6, generator=gen) * 1e4
    leaves = [x] + ([h0, c0] if with_state else [])  # as _huge_run
    if with_state and not isinstance(layer, rnnkit.LSTM):
        leaves = leaves[:2]

    def results_of(data):
        inputs = [d.detach().requires_grad_() for d in data[:len(leaves)]]
        params = [d.detach().requires_grad_() for d in data[len(leaves):]]
        hx = None if not with_state else (tuple(inputs[1:]) if len(inputs) == 3 else inputs[1])
        out, state = torch.func.functional_call(twin, dict(zip(names, params)), (inputs[0], hx))
        outs = [out] + (list(state) if isinstance(state, tuple) else [state])
        grads = torch.autograd.grad(sum(t.sum() for t in outs), inputs + params)
        return [t.detach() for t in outs] + list(grads)

    return rounding_sensitivity(results_of, [t.double() for t in leaves] + [p.detach() for p in twin.parameters()])


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
def test_low_precision_runs_within_its_rounding(mode, dtype):
    """bfloat16 and float16: "auto" runs the C++ operators (the loop in float32, issue 17), or the reference
    loop without them; the numba kernels refuse.  The result keeps the dtype and is as close to the exact
    result as the format allows on every backend: within
    that dtype's rounding of the float64 computation on the float32 layer's values (helpers: the bound
    from the computation's sensitivity to rounding at the dtype's unit roundoff, the rounding of the data
    to the dtype included; the bound before, 40 x the unit roundoff, assumed values below 1)."""
    ref32 = _layer(mode, "auto")
    x32 = torch.randn(7, 3, 4)
    truth, sensitivities = float64_truth_of(lambda m, x: m(x)[0], ref32, [x32], grad=False, dtype=dtype)
    for backend in ("auto", "reference") + (("ops",) if ops_extension.available() else ()):
        layer = _layer(mode, backend, dtype=dtype)
        layer.load_state_dict(ref32.state_dict())
        x = x32.to(dtype).requires_grad_()
        outs = _run(layer, x)
        assert outs[0].dtype == dtype and x.grad.dtype == dtype
        assert _all_finite(outs + [x.grad] + [p.grad for p in layer.parameters()])
        assert_within_rounding(outs[:1], truth, sensitivities, dtype, who=f"{dtype} on {backend!r}")
        with torch.no_grad():  # huge inputs in low precision: still no NaN or inf
            assert _all_finite([layer((x32 * 1e4).to(dtype))[0]])
    with pytest.raises(UnsupportedBackendError, match="float32 and float64"):
        _layer(mode, "numba", dtype=dtype)(x32.to(dtype))


def test_low_precision_recurrent_cells_fall_back_too():
    for name, cls in cell_classes().items():
        torch.manual_seed(0)
        layer = rnnkit.Recurrent(cls, 4, 6, 2, bidirectional=True).to(torch.bfloat16)
        out = layer(torch.randn(7, 3, 4, dtype=torch.bfloat16))[0]
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all(), name
