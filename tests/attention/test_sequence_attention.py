"""Additive (Bahdanau), dot and general (Luong) attention over a padded memory (B, S, D)."""
import pytest
import torch

import rnnkit.attention as rka

B, S, DQ, DK, DV = 3, 6, 5, 5, 4
LENGTHS = [6, 2, 4]
KINDS = ["additive", "dot", "general"]
F64 = torch.float64


def build(kind, seed=0):
    torch.manual_seed(seed)
    return rka.sequence_attention(kind, DQ, DK, hidden_size=7).double()


def data(seed=0, queries=None):
    g = torch.Generator().manual_seed(seed)
    q_shape = (B, DQ) if queries is None else (B, queries, DQ)
    return (torch.randn(q_shape, generator=g, dtype=F64), torch.randn(B, S, DK, generator=g, dtype=F64),
            torch.randn(B, S, DV, generator=g, dtype=F64))


def mask():
    return rka.lengths_to_padding_mask(LENGTHS, S)


def expected_scores(attn, kind, q, m):
    """The textbook formulas, one query (DQ,) against one memory (S, DK) -> (S,)."""
    if kind == "dot":
        return m @ q
    if kind == "general":
        return (m @ attn.key_proj.weight.T) @ q
    proj = torch.tanh(attn.query_proj.weight @ q + m @ attn.key_proj.weight.T + attn.key_proj.bias)  # (S, H)
    return proj @ attn.v.weight[0]


@pytest.mark.parametrize("kind", KINDS)
def test_matches_the_formulas_row_by_row_on_the_unpadded_part(kind):
    attn = build(kind)
    q, m, v = data()
    context, weights = attn(q, m, mask(), values=v)
    assert context.shape == (B, DV) and weights.shape == (B, S)
    for b, n in enumerate(LENGTHS):
        w = torch.softmax(expected_scores(attn, kind, q[b], m[b, :n]), dim=0)
        torch.testing.assert_close(weights[b, :n], w)
        torch.testing.assert_close(context[b], w @ v[b, :n])
        # the same row, alone and without padding
        c1, w1 = attn(q[b:b + 1], m[b:b + 1, :n], values=v[b:b + 1, :n])
        torch.testing.assert_close(c1[0], context[b])
        torch.testing.assert_close(w1[0], weights[b, :n])


@pytest.mark.parametrize("kind", KINDS)
def test_padded_keys_get_exactly_zero_weight_and_no_gradient(kind):
    attn = build(kind)
    q, m, v = data(1)
    m.requires_grad_()
    v.requires_grad_()
    pad = mask()
    context, weights = attn(q, m, pad, values=v)
    assert torch.all(weights[pad] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, dtype=F64))
    context.sum().backward()
    assert torch.all(m.grad[pad] == 0) and torch.all(v.grad[pad] == 0)
    # whatever the padding holds, nothing changes
    m2, v2 = m.detach().clone(), v.detach().clone()
    m2[pad], v2[pad] = 1e3, -1e3
    c2, w2 = attn(q, m2, pad, values=v2)
    torch.testing.assert_close(c2, context)
    torch.testing.assert_close(w2, weights)


@pytest.mark.parametrize("kind", KINDS)
def test_t_queries_at_once_equal_t_single_queries(kind):
    attn = build(kind)
    q, m, v = data(2, queries=4)
    context, weights = attn(q, m, mask(), values=v)
    assert context.shape == (B, 4, DV) and weights.shape == (B, 4, S)
    for t in range(4):
        c_t, w_t = attn(q[:, t], m, mask(), values=v)
        torch.testing.assert_close(context[:, t], c_t)
        torch.testing.assert_close(weights[:, t], w_t)


@pytest.mark.parametrize("kind", KINDS)
def test_precomputed_keys_equal_forward(kind):
    attn = build(kind)
    q, m, v = data(3)
    keys = attn.project_keys(m)
    c1, w1 = attn.attend(q, keys, v, mask())
    c2, w2 = attn(q, m, mask(), values=v)
    assert torch.equal(c1, c2) and torch.equal(w1, w2)
    c3, _ = attn(q, m, mask())  # values default to the memory
    torch.testing.assert_close(c3, attn.attend(q, keys, m, mask())[0])


@pytest.mark.parametrize("kind", KINDS)
def test_all_padded_row_gives_zero_weights_and_finite_gradients(kind):
    attn = build(kind)
    q, m, v = data(4)
    q.requires_grad_()
    m.requires_grad_()
    pad = mask()
    pad[1] = True
    context, weights = attn(q, m, pad, values=v)
    assert torch.all(weights[1] == 0) and torch.all(context[1] == 0)
    (context.sum() + weights.sum()).backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(m.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


def test_dot_scaled_and_sizes():
    q, m, _ = data(5)
    plain, scaled = rka.DotAttention(DQ), rka.DotAttention(DQ, scaled=True)
    _, w = scaled(q, m)
    torch.testing.assert_close(w, torch.softmax(torch.einsum("bd,bsd->bs", q, m) / DQ ** 0.5, -1))
    _, w = plain(q, m)
    torch.testing.assert_close(w, torch.softmax(torch.einsum("bd,bsd->bs", q, m), -1))
    with pytest.raises(ValueError, match="query_size == key_size.*GeneralAttention"):
        rka.DotAttention(4, 5)
    general = rka.GeneralAttention(3, 8)
    assert general(torch.randn(2, 3), torch.randn(2, 6, 8))[1].shape == (2, 6)


def test_lengths_to_padding_mask():
    expected = torch.tensor([[False] * 6, [False, False] + [True] * 4, [False] * 4 + [True] * 2])
    assert torch.equal(rka.lengths_to_padding_mask(LENGTHS, S), expected)
    assert torch.equal(rka.lengths_to_padding_mask(torch.tensor(LENGTHS)), expected)
    assert rka.lengths_to_padding_mask([2, 3], 5).shape == (2, 5)
    with pytest.raises(ValueError, match=r"\[0, 4\].*max 6"):
        rka.lengths_to_padding_mask(LENGTHS, 4)
    with pytest.raises(ValueError, match="1-D integer"):
        rka.lengths_to_padding_mask(torch.tensor([1.5, 2.0]))


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_rejected_with_clear_messages(kind):
    attn = build(kind)
    q, m, v = data()
    with pytest.raises(ValueError, match=rf"query of shape \(B, {DQ}\).*got \(3, 4\)"):
        attn(torch.randn(3, 4, dtype=F64), m)
    with pytest.raises(ValueError, match=rf"memory of shape \(B, S, {DK}\).*got \(3, 6\)"):
        attn(q, m[:, :, 0])
    with pytest.raises(ValueError, match="batch size 2 but the memory has 3"):
        attn(q[:2], m)
    with pytest.raises(ValueError, match=r"values of shape \(3, 6, value_size\).*got \(3, 5, 4\)"):
        attn(q, m, values=v[:, :5])
    with pytest.raises(TypeError, match="bool"):
        attn(q, m, mask().double())
    with pytest.raises(ValueError, match=r"key_padding_mask of shape \(3, 6\).*got \(3, 5\)"):
        attn(q, m, mask()[:, :5])
    with pytest.raises(ValueError, match="attention should be one of"):
        rka.sequence_attention("cosine", 4, 4)
