"""rnnkit.attention.Attn against the study notes' module and formulas, for B = 1 and row-wise for B > 1."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import assert_within_rounding, float64_truth_of
from rnnkit.attention import Attn

SIZES = dict(query_size=32, key_size=32, value_size1=32, value_size2=64, output_size=64)


class NotesAttn(nn.Module):
    """The notes' module as printed there (B = 1 only): the reference."""

    def __init__(self, query_size, key_size, value_size1, value_size2, output_size):
        super().__init__()
        self.attn = nn.Linear(query_size + key_size, value_size1)
        self.attn_combine = nn.Linear(query_size + value_size2, output_size)

    def forward(self, Q, K, V):
        attn_weights = F.softmax(self.attn(torch.cat((Q[0], K[0]), 1)), dim=1)
        attn_applied = torch.bmm(attn_weights.unsqueeze(0), V)
        output = torch.cat((Q[0], attn_applied[0]), 1)
        output = self.attn_combine(output).unsqueeze(0)
        return output, attn_weights


def qkv(batch, sizes=SIZES, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, batch, sizes["query_size"], generator=g, dtype=dtype),
            torch.randn(1, batch, sizes["key_size"], generator=g, dtype=dtype),
            torch.randn(batch, sizes["value_size1"], sizes["value_size2"], generator=g, dtype=dtype))


def test_the_notes_example_shapes():
    attn = Attn(32, 32, 32, 64, 64)
    output, weights = attn(torch.randn(1, 1, 32), torch.randn(1, 1, 32), torch.randn(1, 32, 64))
    assert output.shape == (1, 1, 64)
    assert weights.shape == (1, 32)


def test_same_seed_same_parameters_as_the_notes_module():
    torch.manual_seed(0)
    ref = NotesAttn(**SIZES)
    torch.manual_seed(0)
    ours = Attn(**SIZES)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in ref.state_dict().items())
    ref.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(ref.state_dict(), strict=True)


def test_b1_equals_the_notes_module_outputs_and_gradients():
    torch.manual_seed(0)
    ref = NotesAttn(**SIZES).double()
    torch.manual_seed(0)
    ours = Attn(**SIZES).double()
    Q, K, V = (t.requires_grad_() for t in qkv(1))
    (o1, w1), (o2, w2) = ref(Q, K, V), ours(Q, K, V)
    assert torch.equal(o2, o1) and torch.equal(w2, w1)
    g1 = torch.autograd.grad(o1.sum() + (w1 * w1).sum(), [Q, K, V, *ref.parameters()])
    g2 = torch.autograd.grad(o2.sum() + (w2 * w2).sum(), [Q, K, V, *ours.parameters()])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)


def test_b1_matches_the_formulas():
    attn = Attn(**SIZES).double()
    Q, K, V = qkv(1, seed=3)
    output, weights = attn(Q, K, V)
    W, b = attn.attn.weight, attn.attn.bias
    scores = W @ torch.cat([Q[0, 0], K[0, 0]]) + b  # (value_size1,)
    expected_w = torch.exp(scores) / torch.exp(scores).sum()
    applied = (expected_w[:, None] * V[0]).sum(0)  # (value_size2,)
    expected_out = attn.attn_combine.weight @ torch.cat([Q[0, 0], applied]) + attn.attn_combine.bias
    torch.testing.assert_close(weights[0], expected_w)
    torch.testing.assert_close(output[0, 0], expected_out)
    torch.testing.assert_close(weights.sum(1), torch.ones(1, dtype=torch.float64))


@pytest.mark.parametrize("batch", [2, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_row_equals_its_own_b1_call(batch, dtype):
    sizes = dict(query_size=6, key_size=5, value_size1=7, value_size2=4, output_size=3)
    attn = Attn(**sizes).to(dtype)
    Q, K, V = qkv(batch, sizes, seed=batch, dtype=dtype)
    output, weights = attn(Q, K, V)
    assert output.shape == (1, batch, 3) and weights.shape == (batch, 7)
    rows = [attn(Q[:, b:b + 1], K[:, b:b + 1], V[b:b + 1]) for b in range(batch)]
    alone = [torch.cat([o for o, _ in rows], 1), torch.cat([w for _, w in rows], 0)]
    if dtype == torch.float64:  # float64: the batch's products and each row's round alike to ~1e-16
        torch.testing.assert_close(output, alone[0])
        torch.testing.assert_close(weights, alone[1])
        return
    # float32: a batch of B rows and one row are other matrix products (other kernels, other orders of
    # summation); both within float32's rounding of the float64 truth (helpers: a bound derived from the
    # computation's sensitivity to rounding, not fitted to one machine's rounding)
    truth, sensitivities = float64_truth_of(lambda m, *qkv: m(*qkv), attn, [Q, K, V], grad=False)
    assert_within_rounding([output, weights], truth, sensitivities, dtype, who="the batch")
    assert_within_rounding(alone, truth, sensitivities, dtype, who="row by row")


def test_padding_mask_gives_padded_rows_zero_weight_and_renormalises():
    sizes = dict(query_size=4, key_size=4, value_size1=6, value_size2=3, output_size=5)
    attn = Attn(**sizes).double()
    Q, K, V = qkv(3, sizes, seed=1)
    lengths = torch.tensor([6, 2, 4])
    mask = torch.arange(6)[None, :] >= lengths[:, None]  # (B, value_size1)
    output, weights = attn(Q, K, V, key_padding_mask=mask)
    assert torch.all(weights[mask] == 0)
    torch.testing.assert_close(weights.sum(1), torch.ones(3, dtype=torch.float64))
    # unmasked rows' weights are the unmasked softmax restricted and renormalised
    _, full = attn(Q, K, V)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(weights[b, :n], full[b, :n] / full[b, :n].sum())
    # what sits in the padded value rows does not matter
    V2 = V.clone()
    V2[mask] = 1e6
    torch.testing.assert_close(attn(Q, K, V2, key_padding_mask=mask)[0], output)
    # no mask = the notes' behaviour
    no_mask = torch.zeros_like(mask)
    torch.testing.assert_close(attn(Q, K, V, key_padding_mask=no_mask)[1], full)


def test_fully_masked_row_gives_zero_weights_and_finite_gradients():
    sizes = dict(query_size=4, key_size=4, value_size1=3, value_size2=2, output_size=2)
    attn = Attn(**sizes)
    Q, K, V = (t.float().requires_grad_() for t in qkv(2, sizes))
    mask = torch.tensor([[True, True, True], [False, True, False]])
    output, weights = attn(Q, K, V, key_padding_mask=mask)
    assert torch.all(weights[0] == 0)
    (output.sum() + weights.sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in (Q, K, V))
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


@pytest.mark.parametrize("shapes,match", [
    (((1, 2, 32), (1, 2, 32), (3, 32, 64)), r"expected Q of shape \(1, 3, 32\)"),
    (((2, 2, 32), (1, 2, 32), (2, 32, 64)), r"expected Q of shape \(1, 2, 32\).*got \(2, 2, 32\)"),
    (((1, 1, 32), (1, 1, 31), (1, 32, 64)), r"expected K of shape \(1, 1, 32\).*got \(1, 1, 31\)"),
    (((1, 1, 32), (1, 1, 32), (1, 30, 64)), r"expected V of shape \(1, 32, 64\).*got \(1, 30, 64\)"),
    (((1, 32), (1, 1, 32), (1, 32, 64)), r"expected Q to be 3-D, got a 2-D"),
])
def test_bad_shapes_rejected_with_clear_messages(shapes, match):
    attn = Attn(**SIZES)
    with pytest.raises(ValueError, match=match):
        attn(*(torch.randn(s) for s in shapes))


def test_bad_constructor_and_mask_rejected():
    with pytest.raises(ValueError, match="value_size1 should be a positive int, got 0"):
        Attn(4, 4, 0, 4, 4)
    attn = Attn(2, 2, 3, 2, 2)
    Q, K, V = torch.randn(1, 1, 2), torch.randn(1, 1, 2), torch.randn(1, 3, 2)
    with pytest.raises(TypeError, match="bool"):
        attn(Q, K, V, key_padding_mask=torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(1, 3\).*got \(1, 4\)"):
        attn(Q, K, V, key_padding_mask=torch.zeros(1, 4, dtype=torch.bool))
