"""The "fused_cuda" backend: rnnkit's own GPU kernels (Triton + cuBLAS, CUDA graphs).

Elman (tanh, relu), LSTM (with or without projection) and GRU, forward and backward,
padded or packed, either direction, float32 / bfloat16 / float16, on CUDA tensors.
The design (see ``_run``): the input projection of all steps as one matrix product,
then per step the recurrent product (cuBLAS) and one fused Triton kernel for the
pointwise math; the per-step launches of a configuration seen before are replayed
from a CUDA graph.  Float32 products use TF32 exactly when torch allows it for cuDNN
(``torch.backends.cudnn.allow_tf32``), as torch.nn's cuDNN RNNs do.

Nothing here imports triton until a layer runs on CUDA: ``check`` only looks at
devices and dtypes (and whether triton is installed), so registering this kernel on
a CPU-only install is harmless: it refuses CPU tensors and ``auto`` moves on.
"""
from __future__ import annotations

import importlib.util

import torch

from ...cells import ELMAN_RELU, ELMAN_TANH, GRU_EQUATIONS, LSTM_EQUATIONS
from ...errors import UnsupportedBackendError
from ..base import Kernel, check_tensors, refuse_under_transforms

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_CELLS = {id(ELMAN_TANH): "elman", id(ELMAN_RELU): "elman", id(LSTM_EQUATIONS): "lstm",
          id(GRU_EQUATIONS): "gru"}


def _needs_grad(tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class CudaFusedKernel(Kernel):
    """Fused CUDA kernels for the Elman (tanh, relu), LSTM (projection or not) and GRU recurrences."""

    name = "fused_cuda"

    def check(self, eq, x, weights) -> None:
        if id(eq) not in _CELLS:
            raise UnsupportedBackendError(
                f"backend 'fused_cuda' has no kernel for the recurrence {eq.name!r} "
                "(it runs rnn_tanh, rnn_relu, lstm and gru); use backend='reference'")
        refuse_under_transforms("fused_cuda")
        check_tensors("fused_cuda", x, weights, "cuda", DTYPES)
        if importlib.util.find_spec("triton") is None:
            raise UnsupportedBackendError("backend 'fused_cuda' needs triton (pip install triton)")

    def layer(self, eq, x, batch_sizes, state0, weights, reverse):
        from . import _run
        cell = _CELLS.get(id(eq))
        if cell is None:
            raise UnsupportedBackendError(f"backend 'fused_cuda' has no kernel for the recurrence {eq.name!r}")
        lay = _run.layout(batch_sizes)
        w_ih, w_hh, b_ih, b_hh, w_hr = weights
        h0 = state0[0]
        c0 = state0[1] if cell == "lstm" else None
        batch, P = h0.shape
        if (lay.T == 0 or x.dim() != 2 or x.shape[0] != lay.N or batch != lay.B
                or any(s.dim() != 2 or s.shape[0] != batch for s in state0)
                or any(lay.bsz[t] < lay.bsz[t + 1] for t in range(lay.T - 1))):
            raise ValueError(
                f"fused_cuda kernel: inconsistent shapes: input {tuple(x.shape)}, batch_sizes summing to "
                f"{lay.N} at most {lay.B} per step (non-increasing), states {[tuple(s.shape) for s in state0]}")
        save = _needs_grad([x, *state0, *weights])
        tf32 = x.dtype == torch.float32 and bool(torch.backends.cudnn.allow_tf32)
        plan = _run.Plan(cell, lay, bool(reverse), save, tf32, relu=eq is ELMAN_RELU, eq=eq)
        out, h, c = _run.RecurrenceFunction.apply(plan, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
        return out, ((h, c) if cell == "lstm" else (h,))


def clear_cache() -> None:
    """Free the CUDA graphs and buffers the backend keeps between calls."""
    import sys
    run = sys.modules.get(__name__ + "._run")
    if run is not None:
        run.clear_cache()


__all__ = ["CudaFusedKernel", "clear_cache"]
