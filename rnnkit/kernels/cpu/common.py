"""Helpers shared by the fused CPU recurrences: step layout, views, matrix-product providers."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._jit import helper, njit

# Per-step work (2*b*k*n flops of the recurrent product) below which the whole time loop
# runs inside numba (no per-step dispatch); above it each step's product goes to torch's
# BLAS on all threads and numba does the step's pointwise math.
WHOLE_LOOP_MAX_FLOPS = 2.5e6
# Whole-sequence products (input projection, dx, weight gradients) go to torch's BLAS at every size:
# measured here, MKL's addmm beat a jitted product on this thread even at (100 x 32) @ (32 x 128)
# (16 us against 34) and down to (10 x 8) @ (8 x 32) (8.5 us against 12).


def layout(batch_sizes) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (T+1,), sizes (T,)) of the packed steps, as int64 arrays."""
    bsz = np.asarray(batch_sizes, dtype=np.int64)
    offsets = np.zeros(len(bsz) + 1, dtype=np.int64)
    np.cumsum(bsz, out=offsets[1:])
    return offsets, bsz


def whole_loop(b: int, k: int, n: int) -> bool:
    return 2.0 * b * k * n <= WHOLE_LOOP_MAX_FLOPS


def npy(t: Tensor) -> np.ndarray:
    """A numpy view sharing ``t``'s memory (t must be contiguous, on the CPU)."""
    return t.detach().numpy() if t.requires_grad else t.numpy()


def dummy(like: Tensor) -> Tensor:
    """A (1, 1) stand-in for an array a kernel takes but does not touch in this configuration
    (never written: kernels write such arrays only when the configuration uses them); one per dtype,
    since allocating it per call showed in the per-call cost at small sizes."""
    d = _DUMMIES.get(like.dtype)
    if d is None:
        d = _DUMMIES[like.dtype] = torch.zeros(1, 1, dtype=like.dtype)
    return d


_DUMMIES: dict = {}


@helper
def prev_row(out, h0, offsets, bsz, tp, r):
    """Row r of the state a step read, its previous step being tp (t - 1 forward, t + 1 in
    reverse): that step's output row if sequence r ran then, else the initial state's row."""
    if 0 <= tp < bsz.shape[0] and r < bsz[tp]:
        return out[offsets[tp] + r]
    return h0[r]


@njit
def gather_prev(out, h0, offsets, bsz, reverse, res, ta, tb):
    """res[row of step t - offsets[ta]] = the state step t read (the previous step's output, or h0),
    for the steps ta..tb-1."""
    P = out.shape[1]
    base = offsets[ta]
    for t in range(ta, tb):
        tp = t + 1 if reverse else t - 1
        o0 = offsets[t] - base
        for r in range(bsz[t]):
            src = prev_row(out, h0, offsets, bsz, tp, r)
            for p in range(P):
                res[o0 + r, p] = src[p]


def prev_states(out: Tensor, h0: Tensor, offsets, bsz, reverse: bool, ta: int = 0, tb: int | None = None) -> Tensor:
    """(rows of steps ta..tb-1, P): the state each of those rows read."""
    tb = len(bsz) if tb is None else tb
    res = out.new_empty(int(offsets[tb] - offsets[ta]), out.shape[1])
    gather_prev(npy(out), npy(h0), offsets, bsz, reverse, npy(res), ta, tb)
    return res


def recurrent_weight_grad(dA: Tensor, out: Tensor, h0: Tensor, offsets, bsz, reverse: bool,
                          ta: int = 0, tb: int | None = None, into: Tensor | None = None) -> Tensor:
    """dA.T @ H_prev (added to ``into`` when given), dA holding the rows of steps ta..tb-1 and
    H_prev the state each of them read (the previous step's output or h0).

    With one batch size throughout (padded input) H_prev is the output shifted by one step,
    so products on views do it without materialising H_prev; packed input gathers it.
    """
    T = len(bsz)
    tb = T if tb is None else tb
    B = int(bsz[0])
    if int(bsz[-1]) != B:
        return add_mm(into, dA, prev_states(out, h0, offsets, bsz, reverse, ta, tb))
    lo, hi = ta * B, tb * B
    if reverse:  # step t read step t+1's output; the last step read h0
        if tb == T:
            into = add_mm(into, dA[hi - lo - B:], h0)
            dA, hi = dA[:hi - lo - B], hi - B
        return add_mm(into, dA, out[lo + B:hi + B]) if hi > lo else into
    if ta == 0:  # the first step read h0
        into = add_mm(into, dA[:B], h0)
        dA, lo = dA[B:], B
    return add_mm(into, dA, out[lo - B:hi - B]) if hi > lo else into


def add_mm(acc, a: Tensor, b: Tensor) -> Tensor:
    """acc + a^T b, in place (a^T b when acc is None): a gradient summed over blocks of rows."""
    return torch.mm(a.t(), b) if acc is None else acc.addmm_(a.t(), b)


def add_sum(acc, a: Tensor) -> Tensor:
    """acc + a.sum(0), in place (a.sum(0) when acc is None): a bias gradient summed over blocks."""
    return a.sum(0) if acc is None else acc.add_(a.sum(0))


def linear(x: Tensor, w: Tensor, b=None, b2=None) -> Tensor:
    """x @ w.T (+ b (+ b2)): the input projection of all steps, or dx = dG @ W (with w = W.T)."""
    if b is None:
        return torch.mm(x, w.t())
    return torch.addmm(b if b2 is None else b + b2, x, w.t())


def contiguous(t):
    return None if t is None else t.detach().contiguous()
