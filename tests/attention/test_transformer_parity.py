"""rnnkit's TransformerEncoderLayer / TransformerEncoder against torch.nn's: init, outputs, gradients, errors."""
import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnnkit.attention as rka
from helpers import assert_within_rounding, float64_truth_of, outputs_and_grads

D, NHEAD, FF, S, N = 8, 2, 16, 5, 3
F64 = torch.float64


def swish(x):
    return x * torch.sigmoid(x)


ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "F.relu": F.relu, "F.gelu": F.gelu, "callable": swish}


def layer_twins(seed=0, dtype=F64, dropout=0.0, **kwargs):
    torch.manual_seed(seed)
    ref = nn.TransformerEncoderLayer(D, NHEAD, FF, dropout=dropout, dtype=dtype, **kwargs)
    torch.manual_seed(seed)
    ours = rka.TransformerEncoderLayer(D, NHEAD, FF, dropout=dropout, dtype=dtype, **kwargs)
    return ref, ours


def encoder_twins(num_layers, norm=False, seed=0, dtype=F64, **kwargs):
    ref_layer, our_layer = layer_twins(seed, dtype, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.nn: "enable_nested_tensor is True, but ..."
        ref = nn.TransformerEncoder(ref_layer, num_layers, norm=nn.LayerNorm(D, dtype=dtype) if norm else None)
    ours = rka.TransformerEncoder(our_layer, num_layers, norm=nn.LayerNorm(D, dtype=dtype) if norm else None)
    return ref, ours


def source(batch_first, dtype=F64, batched=True, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = ((N, S, D) if batch_first else (S, N, D)) if batched else (S, D)
    return torch.randn(shape, generator=g, dtype=dtype).requires_grad_()


def padding(dtype=torch.bool):
    kpm = torch.zeros(N, S, dtype=torch.bool)
    kpm[0, 3:] = True
    kpm[2, 4] = True
    return kpm if dtype == torch.bool else torch.zeros(N, S, dtype=dtype).masked_fill(kpm, float("-inf"))


def mask_kwargs(kind, dtype=F64, causal_hint_name="is_causal"):
    causal = nn.Transformer.generate_square_subsequent_mask(S, dtype=dtype)
    return {
        "none": {},
        "kpm_bool": {"src_key_padding_mask": padding()},
        "kpm_float": {"src_key_padding_mask": padding(dtype)},
        "mask_bool_2d": {"src_mask": torch.rand(S, S, generator=torch.Generator().manual_seed(4)) < 0.3},
        "mask_float_3d": {"src_mask": torch.randn(N * NHEAD, S, S, dtype=dtype,
                                                  generator=torch.Generator().manual_seed(5))},
        "both": {"src_mask": causal, "src_key_padding_mask": padding(dtype)},
        "causal": {"src_mask": causal, causal_hint_name: True},
    }[kind]


def forward_backward(module, x, **kwargs):
    y = module(x, **kwargs)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    grads = torch.autograd.grad((y * weights).sum(), [x] + list(module.parameters()))
    return y, grads


def assert_same(a, b, **tol):
    (y1, g1), (y2, g2) = a, b
    torch.testing.assert_close(y2, y1, **tol)
    assert len(g1) == len(g2)
    for p, q in zip(g1, g2):
        torch.testing.assert_close(q, p, **tol)


# ----- construction -------------------------------------------------------------------------------
@pytest.mark.parametrize("bias,norm_first,batch_first,activation", list(itertools.product(
    [True, False], [False, True], [False, True], sorted(ACTIVATIONS))))
def test_layer_same_seed_same_parameters_and_state_dicts_load_both_ways(bias, norm_first, batch_first, activation):
    kwargs = dict(bias=bias, norm_first=norm_first, batch_first=batch_first, activation=ACTIVATIONS[activation])
    ref, ours = layer_twins(**kwargs)
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(our_sd) == list(ref_sd)
    for name in ref_sd:
        assert torch.equal(our_sd[name], ref_sd[name]), name
    other_ref, other_ours = layer_twins(seed=7, **kwargs)
    ours.load_state_dict(other_ref.state_dict(), strict=True)
    ref.load_state_dict(other_ours.state_dict(), strict=True)
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in other_ref.state_dict().items())
    assert ours.activation_relu_or_gelu == ref.activation_relu_or_gelu
    assert ours.norm_first == ref.norm_first and ours.self_attn.batch_first == ref.self_attn.batch_first


@pytest.mark.parametrize("num_layers,norm", [(1, False), (3, True), (2, False)])
def test_encoder_same_seed_same_parameters_and_state_dicts_load_both_ways(num_layers, norm):
    ref, ours = encoder_twins(num_layers, norm)
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(our_sd) == list(ref_sd)
    assert all(torch.equal(our_sd[k], v) for k, v in ref_sd.items())
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    assert ours.num_layers == ref.num_layers == num_layers
    assert len(ours.layers) == num_layers
    # every layer starts as a copy of the given one, but owns its parameters
    assert ours.layers[0].linear1.weight is not ours.layers[-1].linear1.weight or num_layers == 1


# ----- the layer: outputs and gradients, training mode, dropout 0 ------------------------------
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu", "callable"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mask", ["none", "kpm_bool", "kpm_float", "mask_bool_2d", "mask_float_3d", "both", "causal"])
def test_layer_forward_and_gradients_match_torch(batch_first, norm_first, activation, bias, mask):
    ref, ours = layer_twins(batch_first=batch_first, norm_first=norm_first,
                            activation=ACTIVATIONS[activation], bias=bias)
    assert ref.training and ours.training
    x = source(batch_first)
    kwargs = mask_kwargs(mask)
    assert_same(forward_backward(ref, x, **kwargs), forward_backward(ours, x, **kwargs))


@pytest.mark.parametrize("mask", ["none", "kpm_bool", "mask_bool_2d", "causal"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_layer_unbatched_matches_torch(mask, norm_first):
    ref, ours = layer_twins(norm_first=norm_first, batch_first=True)
    x = source(True, batched=False)
    kwargs = mask_kwargs(mask)
    if "src_key_padding_mask" in kwargs:
        kwargs["src_key_padding_mask"] = kwargs["src_key_padding_mask"][0]
    y1, y2 = forward_backward(ref, x, **kwargs), forward_backward(ours, x, **kwargs)
    assert y2[0].shape == (S, D)
    assert_same(y1, y2)


def test_layer_float32_larger():
    """float32: rnnkit and torch.nn each within float32's rounding of the float64 truth (helpers: a bound
    derived from the computation's sensitivity to rounding, not fitted to one machine's rounding)."""
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, activation="gelu")
    torch.manual_seed(0)
    ours = rka.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, activation="gelu")
    x = torch.randn(4, 12, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    kpm = torch.zeros(4, 12, dtype=torch.bool)
    kpm[1, 7:] = True

    def call(module, x, kpm):
        return module(x, src_key_padding_mask=kpm)
    truth, sensitivities = float64_truth_of(call, ref, [x, kpm])
    for who, module in (("rnnkit", ours), ("torch.nn float32", ref)):
        assert_within_rounding(outputs_and_grads(call, module, [x, kpm]), truth, sensitivities, torch.float32, who=who)


# ----- eval mode: torch.nn's fast path; equal at non-padded positions -------------------------------
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_layer_eval_matches_torch_fast_path_at_non_padded_positions(norm_first, activation):
    ref, ours = layer_twins(dtype=torch.float32, dropout=0.1, batch_first=True, norm_first=norm_first,
                            activation=activation)
    ref.eval()
    ours.eval()
    x = source(True, dtype=torch.float32).detach()
    kpm = padding()
    with torch.no_grad():
        y1 = ref(x, src_key_padding_mask=kpm)
        y2 = ours(x, src_key_padding_mask=kpm)
    keep = ~kpm
    # each within float32's rounding of the float64 truth (op by op: helpers.float64_truth_of)
    truth, sensitivities = float64_truth_of(lambda m, x, kpm: m(x, src_key_padding_mask=kpm)[~kpm], ref, [x, kpm],
                                            grad=False)
    assert_within_rounding([y1[keep]], truth, sensitivities, torch.float32, who="torch.nn's fast path")
    assert_within_rounding([y2[keep]], truth, sensitivities, torch.float32, who="rnnkit")


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")  # torch.nn's own path
@pytest.mark.parametrize("num_layers,norm", [(1, False), (3, True)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_encoder_eval_matches_torch_at_non_padded_positions(num_layers, norm, batch_first):
    ref, ours = encoder_twins(num_layers, norm, dtype=torch.float32, dropout=0.1, batch_first=batch_first)
    ref.eval()
    ours.eval()
    x = source(batch_first, dtype=torch.float32).detach()
    kpm = torch.zeros(N, S, dtype=torch.bool)
    kpm[0, 3:] = True  # left-aligned padding: torch.nn runs its nested-tensor path
    kpm[2, 4:] = True
    with torch.no_grad():
        y1 = ref(x, src_key_padding_mask=kpm)
        y2 = ours(x, src_key_padding_mask=kpm)
    keep = ~kpm
    if not batch_first:
        y1, y2 = y1.transpose(0, 1), y2.transpose(0, 1)

    def kept(module, x, kpm):
        y = module(x, src_key_padding_mask=kpm)
        return (y if batch_first else y.transpose(0, 1))[~kpm]
    # each within float32's rounding of the float64 truth (op by op: helpers.float64_truth_of)
    truth, sensitivities = float64_truth_of(kept, ref, [x, kpm], grad=False)
    assert_within_rounding([y1[keep]], truth, sensitivities, torch.float32, who="torch.nn's nested-tensor path")
    assert_within_rounding([y2[keep]], truth, sensitivities, torch.float32, who="rnnkit")
    assert torch.isfinite(y2).all()


@pytest.mark.parametrize("norm_first", [False, True])
def test_eval_with_grad_matches_torch_outputs_and_gradients(norm_first):
    ref, ours = layer_twins(dropout=0.3, norm_first=norm_first)
    ref.eval()
    ours.eval()
    x = source(False)
    kwargs = mask_kwargs("kpm_bool")
    assert_same(forward_backward(ref, x, **kwargs), forward_backward(ours, x, **kwargs))


# ----- the encoder stack ---------------------------------------------------------------------------
@pytest.mark.parametrize("num_layers,norm", [(1, False), (2, True), (3, False)])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("mask", ["none", "kpm_bool", "mask_float_3d", "both", "causal", "causal_detected"])
def test_encoder_forward_and_gradients_match_torch(num_layers, norm, batch_first, norm_first, mask):
    ref, ours = encoder_twins(num_layers, norm, batch_first=batch_first, norm_first=norm_first)
    x = source(batch_first)
    if mask == "causal_detected":  # is_causal=None: detected from the mask
        kwargs = {"mask": nn.Transformer.generate_square_subsequent_mask(S, dtype=F64)}
    else:
        kwargs = mask_kwargs(mask, causal_hint_name="is_causal")
        if "src_mask" in kwargs:
            kwargs["mask"] = kwargs.pop("src_mask")
    assert_same(forward_backward(ref, x, **kwargs), forward_backward(ours, x, **kwargs))


def test_encoder_accepts_torch_signature_and_keeps_flags():
    layer = rka.TransformerEncoderLayer(D, NHEAD, FF, batch_first=True)
    enc = rka.TransformerEncoder(layer, num_layers=2, norm=None, enable_nested_tensor=False, mask_check=False)
    assert enc.enable_nested_tensor is False and enc.mask_check is False and enc.use_nested_tensor is False
    assert rka.TransformerEncoder(layer, 0)(torch.ones(2, S, D)).equal(torch.ones(2, S, D))


def test_causal_mask_detection():
    causal = rka.generate_square_subsequent_mask(S)
    assert torch.equal(causal, nn.Transformer.generate_square_subsequent_mask(S))
    assert rka.masks.detect_is_causal(causal, None, S)
    assert not rka.masks.detect_is_causal(causal.T, None, S)
    assert not rka.masks.detect_is_causal(causal, None, S + 1)
    assert rka.masks.detect_is_causal(None, True, S)
    assert not rka.masks.detect_is_causal(causal, False, S)


# ----- bad input ----------------------------------------------------------------------------------
def raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the point is which type
        return e
    return None


BAD_LAYER_CALLS = {
    "4d_src": lambda m: m(torch.randn(1, S, N, D)),
    "wrong_d_model": lambda m: m(torch.randn(S, N, D + 1)),
    "int_padding_mask": lambda m: m(torch.randn(S, N, D), src_key_padding_mask=torch.zeros(N, S, dtype=torch.long)),
    "padding_mask_wrong_shape": lambda m: m(torch.randn(S, N, D), src_key_padding_mask=torch.zeros(N, S + 1, dtype=torch.bool)),
    "src_mask_wrong_shape": lambda m: m(torch.randn(S, N, D), src_mask=torch.zeros(S, S + 1, dtype=torch.bool)),
    "is_causal_without_mask": lambda m: m(torch.randn(S, N, D), is_causal=True),
}


@pytest.mark.parametrize("case", sorted(BAD_LAYER_CALLS))
def test_layer_bad_input_rejected_like_torch(case):
    ref, ours = layer_twins(dtype=torch.float32)
    expected, got = raised(lambda: BAD_LAYER_CALLS[case](ref)), raised(lambda: BAD_LAYER_CALLS[case](ours))
    assert expected is not None and got is not None
    assert isinstance(got, type(expected)), f"{case}: torch {type(expected).__name__}, rnnkit {type(got).__name__}: {got}"


def test_layer_constructor_errors_like_torch():
    for cls in (nn.TransformerEncoderLayer, rka.TransformerEncoderLayer):
        with pytest.raises(RuntimeError, match="activation should be relu/gelu, not tanh"):
            cls(D, NHEAD, activation="tanh")
        with pytest.raises(AssertionError):
            cls(10, 3)
        with pytest.raises(ValueError):
            cls(0, 2)
    with pytest.raises(TypeError, match="callable"):
        rka.TransformerEncoderLayer(D, NHEAD, activation=3)


def test_mismatched_mask_types_warn_like_torch():
    ref, ours = layer_twins(dtype=torch.float32)
    x = torch.randn(S, N, D)
    for module in (ref, ours):
        with pytest.warns(UserWarning, match="mismatched src_key_padding_mask and src_mask"):
            module(x, src_mask=torch.zeros(S, S), src_key_padding_mask=torch.zeros(N, S, dtype=torch.bool))
