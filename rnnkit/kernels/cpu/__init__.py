"""The "numba" backend: rnnkit's numba CPU kernels of torch.nn's recurrences (numba-compiled time
loops + BLAS products), where rnnkit._C is not built.

One module per concern: ``_jit`` (numba options, activations), ``gemm`` (the in-loop matrix product),
``common`` (step layout, matrix-product providers), ``split`` (a time loop run over chunks of batch rows
on torch's threads), ``blocks`` (the backward in blocks of steps), and one module per recurrence
(``elman``, ``lstm``, ``gru``) holding its jitted step math, its forward/backward time loops and its
``torch.autograd.Function``.

``backend="auto"`` runs them for torch.nn's families only where rnnkit._C is not built (its C++ operators
run them otherwise).  rnnkit's other cells had numba kernels here too, one hand-written module per cell
(forward and hand-derived backward); they were removed on 2026-12-07 once the kernels generated from the
cells' own equations measured within 10% of them or faster, forward and forward+backward, on the bench
grid's four sizes (figures: GeneratedKernel.auto_cells, kernels/generator/layer.py; the record:
benchmarks/results/generated-vs-hand-avx2.json).  Those cells run on their generated kernels, or where
rnnkit._C is not built on the reference loop (or, for the min cells, the parallel scan).

Nothing here imports numba until a fused kernel first runs, so ``import rnnkit`` stays
cheap; compiled code is cached on disk by numba (``cache=True``).
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache

import torch

from ..._memo import memoized
from ...cells import ELMAN_RELU, ELMAN_TANH, GRU_EQUATIONS, LSTM_EQUATIONS
from ...errors import UnsupportedBackendError
from ..base import Kernel, check_tensors, refuse_under_transforms

DTYPES = (torch.float32, torch.float64)


class Plan:
    """What the Functions need to know besides tensors: the packed layout and the strategy.

    ``whole``: one jitted call runs the time loop (``split.run_rows``), else each step's product
    goes to torch's BLAS.  ``chunks`` (when not None) is ``split.row_chunks``'s split of the batch
    rows across ``parts`` threads, each running the whole loop on its rows (so ``whole`` holds).
    ``eq`` and ``weights_type``: the recurrence and its weights' record, for the backward that
    recomputes on the reference loop (``differentiable.layer_reference``).
    """

    __slots__ = ("offsets", "bsz", "steps", "reverse", "save", "whole", "relu", "chunks", "parts", "eq",
                 "weights_type")

    def __init__(self, offsets, bsz, reverse, save, whole, relu=False, chunks=None, eq=None, weights_type=None):
        self.offsets, self.bsz, self.steps = offsets, bsz, len(bsz)
        self.reverse, self.save, self.relu = reverse, save, relu
        self.eq, self.weights_type = eq, weights_type
        self.whole = whole or chunks is not None
        self.chunks = chunks
        self.parts = 1 if chunks is None else len(chunks[0]) - 1


@lru_cache(maxsize=64)
def _layout(batch_sizes: tuple):
    from .common import layout
    offsets, bsz = layout(batch_sizes)
    offsets.setflags(write=False)
    bsz.setflags(write=False)
    # the batch of the first step, or -1 (which no state matches) for a layout the loops cannot index:
    # a negative or growing size (the layers check this first; the kernels must not trust it)
    valid = len(bsz) > 0 and bsz[-1] >= 0 and bool((bsz[1:] <= bsz[:-1]).all())
    return offsets, bsz, int(bsz[0]) if valid else -1


@lru_cache(maxsize=64)
def _chunks(batch_sizes: tuple, parts: int):
    from .split import row_chunks
    chunks = row_chunks(*_layout(batch_sizes)[:2], parts)
    for a in chunks:
        a.setflags(write=False)
    return None if len(chunks[0]) <= 2 else chunks


def row_split(batch_sizes, batch: int, dtype):
    """``Plan.chunks`` for a layer-direction: the batch rows split across threads, or None.

    ``batch_sizes``: the tuple of step sizes, or the step-size array (made a tuple only when a
    split is wanted).  float32 only: a split costs two more small compilations per argument-type
    list on first use (~0.5 s together), and float64 runs are for checking, where speed matters
    less."""
    from . import split
    parts = split.thread_parts(batch) if dtype == torch.float32 else 1
    if parts < 2:
        return None
    key = batch_sizes if isinstance(batch_sizes, tuple) else tuple(batch_sizes.tolist())
    return _chunks(key, parts)


@memoized(maxsize=1)
def _have_numba() -> bool:
    return importlib.util.find_spec("numba") is not None


@memoized(maxsize=1)
def _functions() -> dict:
    """torch.nn's recurrences -> their autograd Function: imported on first use (they import numba),
    then one dict lookup per call."""
    from .elman import ElmanFunction
    from .gru import GRUFunction
    from .lstm import LSTMFunction
    return {LSTM_EQUATIONS: LSTMFunction, GRU_EQUATIONS: GRUFunction, ELMAN_TANH: ElmanFunction,
            ELMAN_RELU: ElmanFunction}


def _needs_grad(tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _call(function, plan, *args):
    """The Function through autograd when a gradient is wanted; else its forward directly
    (no graph to record, and the per-call cost matters at small sizes)."""
    if plan.save:
        return function.apply(plan, *args)
    return function.forward(None, plan, *args)


class FusedKernel(Kernel):
    """Fused CPU kernels for the Elman (tanh, relu), LSTM (projection or not) and GRU recurrences; float32
    and float64, padded or packed, either direction."""

    name = "numba"

    def check(self, eq, x, weights) -> None:
        if eq not in (ELMAN_TANH, ELMAN_RELU, LSTM_EQUATIONS, GRU_EQUATIONS):
            raise UnsupportedBackendError(
                f"backend 'numba' has no kernel for the recurrence {eq.name!r} (it runs torch.nn's: rnn_tanh, "
                "rnn_relu, lstm, gru); rnnkit's other cells run on the kernels generated from their equations: "
                "use backend='generated', 'auto' or 'reference'")
        if torch.is_autocast_enabled("cpu"):  # autocast acts on each torch op, the fused loop has none
            raise UnsupportedBackendError(
                "backend 'numba' does not run under torch.autocast (autocast casts torch ops one by one, as in "
                "torch.nn's loop; the fused loop is one kernel); use backend='auto' or 'reference'")
        if torch.jit.is_tracing():  # the trace would record the kernel's outputs as empty tensors
            raise UnsupportedBackendError(
                "backend 'numba' cannot be recorded by torch.jit.trace (the tracer sees torch ops only, and the "
                "fused loop is numba code); use backend='auto' or 'reference', which trace")
        refuse_under_transforms("numba")
        dtype = x.dtype
        if (dtype in DTYPES and _have_numba()
                and all(t is None or (t.is_cpu and t.dtype == dtype and t.layout == torch.strided)
                        for t in (x, *weights))):
            return  # the common case, checked cheaply: it is paid on every call
        check_tensors("numba", x, weights, "cpu", DTYPES)
        if not _have_numba():
            raise UnsupportedBackendError("backend 'numba' needs numba (pip install numba)")

    def layer(self, eq, x, batch_sizes, state0, weights, reverse):
        key = tuple(batch_sizes)
        offsets, bsz, most = _layout(key)
        x = x.contiguous()
        state0 = tuple(s.contiguous() for s in state0)
        w = [None if t is None else t.contiguous() for t in weights]
        save = _needs_grad([x, *state0, *w])
        batch, P = state0[0].shape
        # The jitted loops index without bounds checks: refuse inconsistent shapes up front.
        if (len(bsz) == 0 or x.dim() != 2 or x.shape[0] != int(offsets[-1]) or batch != most
                or any(s.dim() != 2 or s.shape[0] != batch for s in state0)):
            raise ValueError(
                f"fused kernel: inconsistent shapes: input {tuple(x.shape)}, batch_sizes {list(key)} "
                f"(summing to {int(offsets[-1])}, non-negative and non-increasing), "
                f"states {[tuple(s.shape) for s in state0]}")
        w_ih, w_hh, b_ih, b_hh, w_hr = w
        function = _functions().get(eq)
        if function is None:
            raise UnsupportedBackendError(f"backend 'numba' has no kernel for the recurrence {eq.name!r}")
        from .common import whole_loop
        plan = Plan(offsets, bsz, reverse, save, whole_loop(batch, P, w_hh.shape[0]), relu=eq is ELMAN_RELU,
                    chunks=row_split(key, batch, x.dtype), eq=eq, weights_type=type(weights))
        if eq is LSTM_EQUATIONS:
            out, h, c = _call(function, plan, x, state0[0], state0[1], w_ih, w_hh, b_ih, b_hh, w_hr)
            return out, (h, c)
        out, h = _call(function, plan, x, state0[0], w_ih, w_hh, b_ih, b_hh)
        return out, (h,)


__all__ = ["FusedKernel", "Plan"]
