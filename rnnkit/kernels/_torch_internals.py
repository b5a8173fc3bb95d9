"""The one place the kernels read a private part of torch; tests/kernels/test_torch_internals.py pins it.

``any_batched``: whether a backward's output gradients are vmap's batched tensors (what
``torch.autograd.grad(..., is_grads_batched=True)`` hands each node's backward).  Such tensors have no
storage of their own, so a kernel that reads memory directly (numba, Triton) cannot take them, and
torch has no public test for them.
"""
from __future__ import annotations

from torch._C import _functorch


def any_batched(tensors) -> bool:
    return any(t is not None and (_functorch.is_batchedtensor(t) or _functorch.is_legacy_batchedtensor(t))
               for t in tensors)


__all__ = ["any_batched"]
