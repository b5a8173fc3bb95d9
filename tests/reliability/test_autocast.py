"""torch.autocast on the CPU (issue 16, item 7): rnnkit's layers behave as torch.nn's: the same output and
state dtypes, the same numbers up to bfloat16 rounding, gradients too; a named fused backend refuses."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from helpers import reference_copy, rounding_bound, rounding_sensitivity

FAMILIES = {"lstm": (rnnkit.LSTM, nn.LSTM), "gru": (rnnkit.GRU, nn.GRU), "rnn": (rnnkit.RNN, nn.RNN)}
FORMS = {
    "padded": {},
    "2layers_bi": {"num_layers": 2, "bidirectional": True},
    "batch_first": {"batch_first": True},
    "packed": {},
    "unbatched": {},
}
def data(form):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, generator=gen)
    return x[:, 0] if form == "unbatched" else x


def forward_backward(layer, x, form, params=None):
    """(output, final states, gradients of out^2 + the states w.r.t. x and every parameter)."""
    x = x.detach().requires_grad_()
    inp = pack_padded_sequence(x, [6, 4, 2]) if form == "packed" else x
    names = [n for n, _ in layer.named_parameters()]
    params = [p for _, p in layer.named_parameters()] if params is None else params
    out, hx = torch.func.functional_call(layer, dict(zip(names, params)), (inp,))
    out = out.data if form == "packed" else out
    hx = hx if isinstance(hx, tuple) else (hx,)
    loss = out.float().pow(2).sum() + sum(h.float().sum() for h in hx)
    return out, hx, list(torch.autograd.grad(loss, [x] + params))


def run(layer, form):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return forward_backward(layer, data(form), form)


def run_torch_nn(layer, form):
    """run() on a torch.nn layer, or None where torch.nn cannot run it on this CPU: its LSTM casts whole to
    bfloat16 for oneDNN, which has no bfloat16 LSTM on a CPU without AVX-512 (AMD EPYC Zen 3: "could not
    create a primitive descriptor for the LSTM forward propagation primitive")."""
    try:
        return run(layer, form)
    except RuntimeError as e:
        if "primitive descriptor" in str(e) and isinstance(layer, nn.LSTM):
            return None
        raise


def autocast_dtypes(result, layer, form):
    """The dtypes of (output, [states], [gradients]) of a run(), or, where torch.nn could not run (None),
    those autocast prescribes for a recurrent layer on the CPU: output and states in bfloat16 (torch's
    CPU autocast lists lstm, gru, rnn_tanh, rnn_relu), each gradient in the dtype of what it differentiates."""
    if result is not None:
        out, hx, grads = result
        return out.dtype, [h.dtype for h in hx], [g.dtype for g in grads]
    states = 2 if isinstance(layer, nn.LSTM) else 1
    return torch.bfloat16, [torch.bfloat16] * states, [torch.float32] * (1 + len(list(layer.parameters())))


def assert_within_bfloat16_rounding(layer, form, results, who):
    """Every result within bfloat16's rounding of the float64 computation (no autocast) on the same
    values: helpers.rounding_bound of its sensitivity to rounding at bfloat16's unit roundoff (every op
    of the float64 run rounded at random by a relative 2^-8: rounding_sensitivity with dtype bfloat16;
    LOW_PRECISION_ROUNDING_FACTOR).  A bound derived from the computation, the same on every machine, not
    a count of roundings fitted to one machine's (this test's bound before: 8 x 2^-8 between the two)."""
    layer64 = reference_copy(layer)
    n = len(list(layer64.parameters()))

    def results_of(moved):
        out, hx, grads = forward_backward(layer64, moved[0], form, [p.detach().requires_grad_() for p in moved[1:]])
        return [out.detach(), *(h.detach() for h in hx), *grads]

    truth, sensitivities = rounding_sensitivity(
        results_of, [data(form).double()] + [p.detach() for p in layer64.parameters()], dtype=torch.bfloat16)
    out, hx, grads = results
    assert len(truth) == 1 + len(hx) + 1 + n
    for k, (got, want, s) in enumerate(zip([out, *hx, *grads], truth, sensitivities)):
        err, bound = (got.double() - want).abs().max().item(), rounding_bound(s, torch.bfloat16)
        assert err <= bound, f"{who}: tensor {k}: error {err:.3g} > bound {bound:.3g}"


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_autocast_matches_torch_nn(family, form):
    ours_cls, torch_cls = FAMILIES[family]
    torch.manual_seed(0)
    ours = ours_cls(4, 5, **FORMS[form])
    torch.manual_seed(0)
    ref = torch_cls(4, 5, **FORMS[form])
    ours_result, ref_result = run(ours, form), run_torch_nn(ref, form)
    assert autocast_dtypes(ours_result, ours, form) == autocast_dtypes(ref_result, ref, form)
    assert_within_bfloat16_rounding(ref, form, ours_result, "rnnkit")
    if ref_result is not None:
        assert_within_bfloat16_rounding(ref, form, ref_result, "torch.nn")


def test_lstm_with_projections_autocasts_op_by_op_as_torch_nn():
    """torch.nn's oneDNN LSTM (cast whole) takes no projections: its loop runs op by op, and so does ours."""
    torch.manual_seed(0)
    ours = rnnkit.LSTM(4, 5, proj_size=2)
    torch.manual_seed(0)
    ref = nn.LSTM(4, 5, proj_size=2)
    (out_a, hx_a, _), (out_b, hx_b, _) = ours_result, ref_result = run(ours, "padded"), run(ref, "padded")
    assert [out_a.dtype, *(h.dtype for h in hx_a)] == [out_b.dtype, *(h.dtype for h in hx_b)]
    assert_within_bfloat16_rounding(ref, "padded", ours_result, "rnnkit")
    assert_within_bfloat16_rounding(ref, "padded", ref_result, "torch.nn")


@pytest.mark.parametrize("family", ["gru", "rnn"])
def test_a_named_fused_backend_refuses_autocast_op_by_op(family):
    """torch.nn's GRU and RNN autocast op by op (each product on its own): the fused kernels, one
    operator for the whole loop, cannot, and a named fused backend says so."""
    layer = FAMILIES[family][0](4, 5, backend="fused")
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(rnnkit.UnsupportedBackendError, match="autocast"):
        layer(torch.randn(6, 3, 4))


@pytest.mark.parametrize("form", ["padded", "2layers_bi", "batch_first"])
def test_lstm_cast_whole_runs_on_the_operators(form):
    """Where torch.nn casts its LSTM whole (oneDNN's), rnnkit's runs its C++ operators on the bfloat16
    call, in float32 inside (kernels/ops: HALF_DTYPES): a named fused backend runs it, within bfloat16's
    rounding, with torch.nn's dtypes."""
    pytest.importorskip("rnnkit._C")
    torch.manual_seed(0)
    ours = rnnkit.LSTM(4, 5, backend="fused", **FORMS[form])
    torch.manual_seed(0)
    ref = nn.LSTM(4, 5, **FORMS[form])
    ours_result = run(ours, form)
    assert ours_result[0].dtype == torch.bfloat16
    assert autocast_dtypes(ours_result, ours, form) == autocast_dtypes(run_torch_nn(ref, form), ref, form)
    assert_within_bfloat16_rounding(ref, form, ours_result, "rnnkit")


def test_outside_autocast_the_fused_kernel_runs_again():
    layer = rnnkit.GRU(4, 5, backend="fused")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rnnkit.GRU(4, 5)(torch.randn(6, 3, 4))
    out, _ = layer(torch.randn(6, 3, 4))
    assert out.dtype == torch.float32
