"""rnnkit.attention.MultiheadAttention against torch.nn.MultiheadAttention: init, outputs, gradients, errors."""
import itertools
import warnings

import pytest
import torch
from torch import nn

import rnnkit.attention as rka
from helpers import assert_within_rounding, float64_truth_of, outputs_and_grads

E, H, L, S, N = 8, 2, 4, 5, 3
F64 = torch.float64


def twins(*args, seed=0, dtype=F64, **kwargs):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(*args, dtype=dtype, **kwargs)
    torch.manual_seed(seed)
    ours = rka.MultiheadAttention(*args, dtype=dtype, **kwargs)
    return ref, ours


def inputs(kind, batch_first, kdim=E, vdim=E, batched=True, dtype=F64, seed=1):
    """query, key, value as the call will pass them: 'self' (q is k is v), 'kv' (k is v), 'qkv' (all distinct)."""
    g = torch.Generator().manual_seed(seed)

    def make(length, dim):
        shape = ((N, length, dim) if batch_first else (length, N, dim)) if batched else (length, dim)
        return torch.randn(shape, generator=g, dtype=dtype, requires_grad=True)

    if kind == "self":
        x = make(S, E)
        return x, x, x
    q = make(L, E)
    if kind == "kv":
        k = make(S, kdim)
        return q, k, k
    return q, make(S, kdim), make(S, vdim)


def masks(kind, tgt_len, src_len, dtype=F64, batched=True):
    """(key_padding_mask, attn_mask) of one kind."""
    kpm = torch.zeros(N, src_len, dtype=torch.bool)
    kpm[0, src_len - 2:] = True
    kpm[2, src_len - 1] = True
    if not batched:
        kpm = kpm[0]
    attn2 = torch.rand(tgt_len, src_len, generator=torch.Generator().manual_seed(3)) < 0.3
    attn2[:, 0] = False  # every query keeps a key
    float3 = torch.randn((N if batched else 1) * H, tgt_len, src_len, dtype=dtype)
    return {
        "none": (None, None),
        "kpm_bool": (kpm, None),
        "kpm_float": (torch.zeros(kpm.shape, dtype=dtype).masked_fill(kpm, -1e4), None),
        "attn_bool": (None, attn2),
        "attn_float3d": (None, float3),
        "both_bool": (kpm, attn2),
        "causal": (None, torch.triu(torch.full((tgt_len, src_len), float("-inf"), dtype=dtype), diagonal=1)),
    }[kind]


def run(module, q, k, v, **kwargs):
    out, w = module(q, k, v, **kwargs)
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum(),
                                [t for t in {id(t): t for t in (q, k, v)}.values()] + list(module.parameters()))
    return out, w, grads


def assert_same(ref_result, our_result, **tol):
    (o1, w1, g1), (o2, w2, g2) = ref_result, our_result
    torch.testing.assert_close(o2, o1, **tol)
    if w1 is None:
        assert w2 is None
    else:
        torch.testing.assert_close(w2, w1, **tol)
    assert len(g1) == len(g2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, **tol)


# ----- construction ---------------------------------------------------------------------------
@pytest.mark.parametrize("bias,add_bias_kv,kdim,vdim", list(itertools.product(
    [True, False], [False, True], [None, 6], [None, 7])))
def test_same_seed_same_parameters_and_state_dicts_load_both_ways(bias, add_bias_kv, kdim, vdim):
    ref, ours = twins(E, H, bias=bias, add_bias_kv=add_bias_kv, kdim=kdim, vdim=vdim)
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(our_sd) == list(ref_sd)
    for name in ref_sd:
        assert torch.equal(our_sd[name], ref_sd[name]), name
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    # strict loading both ways, from differently-seeded modules
    other_ref, other_ours = twins(E, H, seed=5, bias=bias, add_bias_kv=add_bias_kv, kdim=kdim, vdim=vdim)
    ours.load_state_dict(other_ref.state_dict(), strict=True)
    ref.load_state_dict(other_ours.state_dict(), strict=True)
    for name, value in other_ref.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value)
    assert (ours.in_proj_weight is None) == (ref.in_proj_weight is None)
    assert (ours.bias_k is None) == (ref.bias_k is None)
    for attr in ("embed_dim", "kdim", "vdim", "num_heads", "head_dim", "batch_first", "dropout",
                 "_qkv_same_embed_dim", "add_zero_attn"):
        assert getattr(ours, attr) == getattr(ref, attr), attr


# ----- outputs and gradients ----------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("weights", ["none", "averaged", "per_head"])
@pytest.mark.parametrize("mask", ["none", "kpm_bool", "kpm_float", "attn_bool", "attn_float3d", "both_bool", "causal"])
@pytest.mark.parametrize("kind", ["self", "kv", "qkv"])
def test_forward_and_gradients_match_torch(batch_first, weights, mask, kind):
    ref, ours = twins(E, H, batch_first=batch_first)
    q, k, v = inputs(kind, batch_first)
    tgt_len = S if kind == "self" else L
    kpm, attn = masks(mask, tgt_len, S)
    kwargs = dict(key_padding_mask=kpm, attn_mask=attn, need_weights=weights != "none",
                  average_attn_weights=weights == "averaged")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mixed mask types warn in both
        assert_same(run(ref, q, k, v, **kwargs), run(ours, q, k, v, **kwargs))


@pytest.mark.parametrize("bias,add_bias_kv,add_zero_attn,kvdims", list(itertools.product(
    [True, False], [False, True], [False, True], [(None, None), (6, 7)])))
@pytest.mark.parametrize("need_weights", [False, True])
def test_options_match_torch(bias, add_bias_kv, add_zero_attn, kvdims, need_weights):
    kdim, vdim = kvdims
    ref, ours = twins(E, H, bias=bias, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn,
                      kdim=kdim, vdim=vdim, batch_first=True)
    q, k, v = inputs("qkv", True, kdim=kdim or E, vdim=vdim or E)
    kpm, attn = masks("both_bool", L, S)
    kwargs = dict(key_padding_mask=kpm, attn_mask=attn, need_weights=need_weights)
    assert_same(run(ref, q, k, v, **kwargs), run(ours, q, k, v, **kwargs))


@pytest.mark.parametrize("mask", ["none", "kpm_bool", "attn_bool", "attn_float3d"])
@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("kind", ["self", "qkv"])
def test_unbatched_matches_torch(mask, need_weights, kind):
    ref, ours = twins(E, H, batch_first=True)  # batch_first is ignored for unbatched input
    q, k, v = inputs(kind, True, batched=False)
    tgt_len = S if kind == "self" else L
    kpm, attn = masks(mask, tgt_len, S, batched=False)
    kwargs = dict(key_padding_mask=kpm, attn_mask=attn, need_weights=need_weights, average_attn_weights=False)
    ref_result, our_result = run(ref, q, k, v, **kwargs), run(ours, q, k, v, **kwargs)
    assert our_result[0].shape == (tgt_len, E)
    assert_same(ref_result, our_result)


@pytest.mark.parametrize("with_kpm", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
def test_is_causal_hint_matches_torch(with_kpm, need_weights):
    ref, ours = twins(E, H, batch_first=True)
    q, k, v = inputs("self", True)
    kpm, causal = masks("causal", S, S)
    kwargs = dict(attn_mask=causal, is_causal=True, need_weights=need_weights,
                  key_padding_mask=masks("kpm_float", S, S)[0] if with_kpm else None)
    assert_same(run(ref, q, k, v, **kwargs), run(ours, q, k, v, **kwargs))


def test_float32_and_dropout_zero_in_training():
    """float32: rnnkit and torch.nn each within float32's rounding of the float64 truth (helpers: a bound
    derived from the computation's sensitivity to rounding, not fitted to one machine's rounding)."""
    ref, ours = twins(32, 4, dtype=torch.float32, dropout=0.0, batch_first=True)
    assert ref.training and ours.training
    x = torch.randn(4, 16, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    for need_weights in (False, True):
        def call(module, x):
            return module(x, x, x, need_weights=need_weights)
        truth, sensitivities = float64_truth_of(call, ref, [x])
        for who, module in (("rnnkit", ours), ("torch.nn float32", ref)):
            assert_within_rounding(outputs_and_grads(call, module, [x]), truth, sensitivities, torch.float32, who=who)


def test_dropout_in_eval_is_off_and_eval_fast_path_agrees():
    ref, ours = twins(E, H, dtype=torch.float32, dropout=0.5, batch_first=True)
    ref.eval()
    ours.eval()
    x = torch.randn(N, S, E)
    kpm = masks("kpm_bool", S, S)[0]
    with torch.no_grad():  # torch.nn takes its native fast path here
        o1, w1 = ref(x, x, x, key_padding_mask=kpm)
        o2, w2 = ours(x, x, x, key_padding_mask=kpm)
    # each within float32's rounding of the float64 truth (op by op: helpers.float64_truth_of)
    truth, sensitivities = float64_truth_of(lambda m, x, kpm: m(x, x, x, key_padding_mask=kpm), ref, [x, kpm],
                                            grad=False)
    assert_within_rounding([o1, w1], truth, sensitivities, torch.float32, who="torch.nn's fast path")
    assert_within_rounding([o2, w2], truth, sensitivities, torch.float32, who="rnnkit")


def test_dropout_is_applied_in_training():
    _, ours = twins(E, H, dropout=0.5, batch_first=True)
    q, k, v = inputs("self", True)
    _, w = ours(q, k, v, average_attn_weights=False)
    assert (w == 0).any()  # dropped weights
    ours.eval()
    _, w = ours(q, k, v, average_attn_weights=False)
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))


def test_padded_keys_get_zero_weight():
    _, ours = twins(E, H, batch_first=True)
    q, k, v = inputs("self", True)
    kpm = masks("kpm_bool", S, S)[0]
    _, w = ours(q, k, v, key_padding_mask=kpm, average_attn_weights=False)  # (N, H, S, S)
    assert torch.all(w.masked_select(kpm[:, None, None, :].expand_as(w)) == 0)


# ----- bad input: the same exception types as torch.nn ----------------------------------------------
def raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the point is which type
        return e
    return None


def bad_calls():
    q3, k3 = torch.randn(L, N, E), torch.randn(S, N, E)
    kpm = torch.zeros(N, S, dtype=torch.bool)
    return {
        "4d_query": lambda m: m(q3[None], k3[None], k3[None]),
        "2d_key_for_3d_query": lambda m: m(q3, k3[:, 0], k3[:, 0]),
        "1d_kpm_for_3d_query": lambda m: m(q3, k3, k3, key_padding_mask=kpm[0]),
        "4d_attn_mask": lambda m: m(q3, k3, k3, attn_mask=torch.zeros(1, 1, L, S, dtype=torch.bool)),
        "2d_attn_mask_wrong_shape": lambda m: m(q3, k3, k3, attn_mask=torch.zeros(L, S + 1, dtype=torch.bool)),
        "3d_attn_mask_wrong_shape": lambda m: m(q3, k3, k3, attn_mask=torch.zeros(N, L, S, dtype=torch.bool)),
        "kpm_wrong_shape": lambda m: m(q3, k3, k3, key_padding_mask=torch.zeros(N, S + 1, dtype=torch.bool)),
        "int_mask": lambda m: m(q3, k3, k3, key_padding_mask=kpm.long()),
        "wrong_embed_dim": lambda m: m(torch.randn(L, N, E + 1), k3, k3),
        "key_value_shape_mismatch": lambda m: m(q3, k3, torch.randn(S + 1, N, E)),
        "key_wrong_features": lambda m: m(q3, torch.randn(S, N, E + 2), torch.randn(S, N, E + 2)),
        "is_causal_without_mask": lambda m: m(q3, q3, q3, is_causal=True, need_weights=False),
        "unbatched_2d_key_for_2d_query_3d_kpm": lambda m: m(q3[:, 0], k3[:, 0], k3[:, 0], key_padding_mask=kpm),
        "unbatched_attn_mask_3d_wrong": lambda m: m(q3[:, 0], k3[:, 0], k3[:, 0],
                                                    attn_mask=torch.zeros(H + 1, L, S, dtype=torch.bool)),
        "5d_query": lambda m: m(torch.randn(1, 1, L, N, E), k3, k3),
    }


@pytest.mark.parametrize("case", sorted(bad_calls()))
def test_bad_input_rejected_like_torch(case):
    call = bad_calls()[case]
    ref, ours = twins(E, H, dtype=torch.float32)
    expected, got = raised(lambda: call(ref)), raised(lambda: call(ours))
    assert expected is not None, f"torch accepted {case}"
    assert got is not None, f"rnnkit accepted {case}"
    assert isinstance(got, type(expected)), f"{case}: torch raised {type(expected).__name__}, rnnkit {type(got).__name__}: {got}"
    assert str(got)


@pytest.mark.parametrize("kdim,vdim", [(6, 7)])
def test_bad_key_size_with_separate_weights_rejected_like_torch(kdim, vdim):
    ref, ours = twins(E, H, kdim=kdim, vdim=vdim, dtype=torch.float32)
    q, k, v = torch.randn(L, N, E), torch.randn(S, N, kdim + 1), torch.randn(S, N, vdim)
    expected, got = raised(lambda: ref(q, k, v)), raised(lambda: ours(q, k, v))
    assert isinstance(got, type(expected))
    assert "kdim" in str(got) and str(kdim) in str(got) and str(kdim + 1) in str(got)


def test_constructor_errors_like_torch():
    for args in [(0, 2), (8, 0), (8, -1)]:
        with pytest.raises(ValueError):
            nn.MultiheadAttention(*args)
        with pytest.raises(ValueError, match="greater than 0"):
            rka.MultiheadAttention(*args)
    with pytest.raises(AssertionError):
        nn.MultiheadAttention(10, 3)
    with pytest.raises(AssertionError, match="divisible"):
        rka.MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="embed_dim=10 and num_heads=3"):  # also a ValueError
        rka.MultiheadAttention(10, 3)


def test_messages_say_what_was_expected_and_what_came():
    _, ours = twins(E, H, dtype=torch.float32)
    q, k = torch.randn(L, N, E), torch.randn(S, N, E)
    with pytest.raises(RuntimeError, match=r"\(4, 6\).*should be \(4, 5\)"):
        ours(q, k, k, attn_mask=torch.zeros(L, S + 1, dtype=torch.bool))
    with pytest.raises(AssertionError, match=r"\(3, 5\).*got \(3, 6\)"):
        ours(q, k, k, key_padding_mask=torch.zeros(N, S + 1, dtype=torch.bool))
    with pytest.raises(AssertionError, match="only bool and floating.*torch.int64"):
        ours(q, k, k, key_padding_mask=torch.zeros(N, S, dtype=torch.long))


def test_mismatched_mask_types_warn_like_torch():
    ref, ours = twins(E, H, dtype=torch.float32)
    q, k = torch.randn(L, N, E), torch.randn(S, N, E)
    kpm = torch.zeros(N, S, dtype=torch.bool)
    attn = torch.zeros(L, S)
    for module in (ref, ours):
        with pytest.warns(UserWarning, match="mismatched key_padding_mask and attn_mask"):
            module(q, k, k, key_padding_mask=kpm, attn_mask=attn)
