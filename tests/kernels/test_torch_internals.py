"""Pins the private parts of torch that rnnkit/kernels/_torch_internals.py reads: if a torch release
moves them, this fails, not a silent wrong choice of kernel."""
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import grad, jvp, vmap

from rnnkit.kernels import _torch_internals as internals


def test_any_batched_sees_the_gradients_of_is_grads_batched():
    seen = []

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x * 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, g):
            seen.append(internals.any_batched([g]))
            return g * 2

    x = torch.randn(3, requires_grad=True)
    y = Probe.apply(x)
    torch.autograd.grad(y, x, torch.eye(3), retain_graph=True, is_grads_batched=True)
    torch.autograd.grad(y, x, torch.ones(3))
    assert seen == [True, False]
    assert not internals.any_batched([None, torch.randn(2)])


def test_in_functorch_transform_inside_each_transform_only():
    inside = []

    def probe(t):
        inside.append(internals.in_functorch_transform())
        return (t * 2).sum()

    x = torch.randn(3)
    probe(x)
    vmap(probe)(torch.randn(2, 3))
    grad(probe)(x)
    jvp(probe, (x,), (x,))
    assert inside == [False, True, True, True]
    assert not internals.in_functorch_transform()


def test_forward_ad_active_inside_a_dual_level_only():
    assert not internals.forward_ad_active()
    with fwAD.dual_level():
        assert internals.forward_ad_active()
    assert not internals.forward_ad_active()
