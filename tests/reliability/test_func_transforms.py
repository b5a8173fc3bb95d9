"""torch.func transforms (vmap, grad, jacrev, jacfwd, jvp) and forward-mode AD on rnnkit's layers.

The fused kernels have no vmap or jvp rules, so they refuse under a transform and backend="auto"
runs the reference loop, plain torch ops that every transform handles (kernels/_torch_internals.py).
Each result is compared in float64 with torch.nn's (where torch.nn runs the transform) or with the
same quantity computed without the transform (per-sample loops, ordinary backward)."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vmap

import rnnkit
from rnnkit.cells import LayerNormLSTMCell

TOL = dict(rtol=1e-10, atol=1e-12)
FAMILIES = [("lstm", rnnkit.LSTM, nn.LSTM, {}), ("gru", rnnkit.GRU, nn.GRU, {}),
            ("rnn_tanh", rnnkit.RNN, nn.RNN, {}), ("lstm_proj", rnnkit.LSTM, nn.LSTM, {"proj_size": 2})]


def twins(ours_cls, torch_cls, kwargs, seed=0):
    torch.manual_seed(seed)
    ours = ours_cls(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, **kwargs)
    torch.manual_seed(seed)
    ref = torch_cls(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, **kwargs)
    return ours, ref


def output_of(layer):
    return lambda x: layer(x)[0]


@pytest.mark.parametrize("name, ours_cls, torch_cls, kwargs", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_jacrev_equals_torch_nn(name, ours_cls, torch_cls, kwargs):
    ours, ref = twins(ours_cls, torch_cls, kwargs)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(jacrev(output_of(ours))(x), jacrev(output_of(ref))(x), **TOL)


@pytest.mark.parametrize("name, ours_cls, torch_cls, kwargs", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_vmap_equals_a_loop_over_samples(name, ours_cls, torch_cls, kwargs):
    ours, _ = twins(ours_cls, torch_cls, kwargs)
    xs = torch.randn(4, 5, 3, dtype=torch.float64)  # 4 unbatched sequences (L, H_in)
    batched = vmap(output_of(ours))(xs)
    torch.testing.assert_close(batched, torch.stack([ours(x)[0] for x in xs]), **TOL)


@pytest.mark.parametrize("name, ours_cls, torch_cls, kwargs", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_jvp_and_jacfwd_equal_the_reverse_mode_jacobian(name, ours_cls, torch_cls, kwargs):
    ours, _ = twins(ours_cls, torch_cls, kwargs)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    v = torch.randn_like(x)
    out, tangent = jvp(output_of(ours), (x,), (v,))
    jacobian = jacrev(output_of(ours))(x)  # (5, 2, 8, 5, 2, 3)
    torch.testing.assert_close(out, ours(x)[0], **TOL)
    torch.testing.assert_close(tangent, torch.einsum("abcdef,def->abc", jacobian, v), **TOL)
    torch.testing.assert_close(jacfwd(output_of(ours))(x), jacobian, **TOL)


def test_grad_over_parameters_equals_backward():
    ours, ref = twins(rnnkit.LSTM, nn.LSTM, {})
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    params = dict(ours.named_parameters())

    def loss(p):
        return functional_call(ours, p, (x,))[0].pow(2).sum()

    grads = grad(loss)(params)
    ref(x)[0].pow(2).sum().backward()
    for name, p in ref.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, **TOL)


def test_per_sample_gradients_with_vmap_of_grad():
    ours, _ = twins(rnnkit.GRU, nn.GRU, {})
    xs = torch.randn(3, 5, 3, dtype=torch.float64)
    params = {k: v.detach() for k, v in ours.named_parameters()}

    def loss(p, x):
        return functional_call(ours, p, (x,))[0].sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, xs)
    for i, x in enumerate(xs):
        ours.zero_grad()
        ours(x)[0].sum().backward()
        for name, p in ours.named_parameters():
            torch.testing.assert_close(per_sample[name][i], p.grad, **TOL)


def test_forward_mode_ad_outside_torch_func():
    ours, _ = twins(rnnkit.GRU, nn.GRU, {})
    x, v = torch.randn(5, 2, 3, dtype=torch.float64), torch.randn(5, 2, 3, dtype=torch.float64)
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(ours(fwAD.make_dual(x, v))[0]).tangent
    _, want = jvp(output_of(ours), (x,), (v,))
    torch.testing.assert_close(tangent, want, **TOL)


def test_a_fused_cell_through_recurrent_under_vmap():
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(LayerNormLSTMCell, 3, 4, dtype=torch.float64)
    xs = torch.randn(2, 5, 1, 3, dtype=torch.float64)
    batched = vmap(lambda x: layer(x)[0])(xs)
    torch.testing.assert_close(batched, torch.stack([layer(x)[0] for x in xs]), **TOL)


def test_a_named_fused_backend_refuses_a_transform():
    torch.manual_seed(0)
    layer = rnnkit.LSTM(3, 4, backend="fused")
    with pytest.raises(rnnkit.UnsupportedBackendError, match="torch.func transforms"):
        vmap(lambda x: layer(x)[0])(torch.randn(2, 5, 3))
    layer(torch.randn(5, 2, 3))  # and runs outside one
