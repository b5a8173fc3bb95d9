"""The "ops" backend: rnnkit's recurrences as PyTorch operators (``torch.ops.rnnkit.*``).

The operators are C++ (csrc/, built into ``rnnkit._C`` at install time, registered with
``TORCH_LIBRARY``): one generic time loop over the packed layout, a pointwise step per cell, the
products through ATen; their autograd kernels are C++ too (csrc/autograd.cpp).  From Python they get
the rest of what PyTorch asks of an operator: fake kernels for shapes (``fake``) and the differentiable
backward, the reference recompute that a double backward runs (``autograd``).  One module per
concern: ``families`` (which operator runs which recurrence, and their argument orders), ``extension``
(loading rnnkit._C at import when built), ``fake``, ``autograd``, ``kernel`` (the Kernel interface,
registered as the named backend "ops").
"""
from __future__ import annotations

from . import extension
from .kernel import OpsKernel

extension.load_if_built()  # at import: see extension.py

__all__ = ["OpsKernel"]
