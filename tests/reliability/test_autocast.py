"""torch.autocast on the CPU (issue 16, item 7): rnnkit's layers behave as torch.nn's: the same output and
state dtypes, the same numbers up to bfloat16 rounding, gradients too; a named fused backend refuses."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit

FAMILIES = {"lstm": (rnnkit.LSTM, nn.LSTM), "gru": (rnnkit.GRU, nn.GRU), "rnn": (rnnkit.RNN, nn.RNN)}
FORMS = {
    "padded": {},
    "2layers_bi": {"num_layers": 2, "bidirectional": True},
    "batch_first": {"batch_first": True},
    "packed": {},
    "unbatched": {},
}
# bfloat16 keeps 8 bits: one rounding is a relative 2^-8 = 0.0039.  The two loops round at different
# places (torch.nn's oneDNN LSTM accumulates in float32, the reference loop rounds each op), a few
# roundings per step over 6 steps on values of order 1: a bound of 8 roundings.
BF16_TOL = 8 * 2.0 ** -8


def run(layer, form):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, generator=gen)
    if form == "unbatched":
        x = x[:, 0]
    x.requires_grad_()
    inp = pack_padded_sequence(x, [6, 4, 2]) if form == "packed" else x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, hx = layer(inp)
    out = out.data if form == "packed" else out
    hx = hx if isinstance(hx, tuple) else (hx,)
    (out.float().pow(2).sum() + sum(h.float().sum() for h in hx)).backward()
    return out, hx, [x.grad] + [p.grad for p in layer.parameters()]


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_autocast_matches_torch_nn(family, form):
    ours_cls, torch_cls = FAMILIES[family]
    torch.manual_seed(0)
    ours = ours_cls(4, 5, **FORMS[form])
    torch.manual_seed(0)
    ref = torch_cls(4, 5, **FORMS[form])
    (out_a, hx_a, grads_a), (out_b, hx_b, grads_b) = run(ours, form), run(ref, form)
    assert out_a.dtype == out_b.dtype and [h.dtype for h in hx_a] == [h.dtype for h in hx_b]
    for a, b in zip((out_a, *hx_a), (out_b, *hx_b)):
        torch.testing.assert_close(a.float(), b.float(), rtol=BF16_TOL, atol=BF16_TOL)
    for a, b in zip(grads_a, grads_b):
        scale = b.abs().max().item() + 1.0
        torch.testing.assert_close(a.float(), b.float(), rtol=BF16_TOL, atol=BF16_TOL * scale)


def test_lstm_with_projections_autocasts_op_by_op_as_torch_nn():
    """torch.nn's oneDNN LSTM (cast whole) takes no projections: its loop runs op by op, and so does ours."""
    torch.manual_seed(0)
    ours = rnnkit.LSTM(4, 5, proj_size=2)
    torch.manual_seed(0)
    ref = nn.LSTM(4, 5, proj_size=2)
    (out_a, hx_a, _), (out_b, hx_b, _) = run(ours, "padded"), run(ref, "padded")
    assert [out_a.dtype, *(h.dtype for h in hx_a)] == [out_b.dtype, *(h.dtype for h in hx_b)]
    torch.testing.assert_close(out_a.float(), out_b.float(), rtol=BF16_TOL, atol=BF16_TOL)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_named_fused_backend_refuses_autocast(family):
    layer = FAMILIES[family][0](4, 5, backend="fused")
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(rnnkit.UnsupportedBackendError, match="autocast"):
        layer(torch.randn(6, 3, 4))


def test_outside_autocast_the_fused_kernel_runs_again():
    layer = rnnkit.GRU(4, 5, backend="fused")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rnnkit.GRU(4, 5)(torch.randn(6, 3, 4))
    out, _ = layer(torch.randn(6, 3, 4))
    assert out.dtype == torch.float32
