"""Helpers shared by the fused CPU recurrences: step layout, views, matrix-product providers."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._jit import njit

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
    return t.detach().numpy()


def dummy(like: Tensor) -> Tensor:
    return like.new_zeros(1, 1)


@njit
def prev_row(out, h0, offsets, bsz, tp, r):
    """Row r of the state a step read, its previous step being tp (t - 1 forward, t + 1 in
    reverse): that step's output row if sequence r ran then, else the initial state's row."""
    if 0 <= tp < bsz.shape[0] and r < bsz[tp]:
        return out[offsets[tp] + r]
    return h0[r]


@njit
def gather_prev(out, h0, offsets, bsz, reverse, res):
    """res[row of step t] = the state that step t read: the previous step's output, or h0."""
    T = bsz.shape[0]
    P = out.shape[1]
    for t in range(T):
        tp = t + 1 if reverse else t - 1
        o0 = offsets[t]
        for r in range(bsz[t]):
            src = prev_row(out, h0, offsets, bsz, tp, r)
            for p in range(P):
                res[o0 + r, p] = src[p]


def prev_states(out: Tensor, h0: Tensor, offsets, bsz, reverse: bool) -> Tensor:
    res = torch.empty_like(out)
    gather_prev(npy(out), npy(h0), offsets, bsz, reverse, npy(res))
    return res


def recurrent_weight_grad(dA: Tensor, out: Tensor, h0: Tensor, offsets, bsz, reverse: bool) -> Tensor:
    """dA.T @ H_prev, H_prev holding the state each step read (the previous step's output or h0).

    With one batch size throughout (padded input) H_prev is the output shifted by one step,
    so two products on views do it without materialising H_prev; packed input gathers it.
    """
    B, N = int(bsz[0]), out.shape[0]
    if int(bsz[-1]) != B:
        return weight_grad(dA, prev_states(out, h0, offsets, bsz, reverse))
    if reverse:
        first, rest, prev = dA[N - B:], dA[:N - B], out[B:]
    else:
        first, rest, prev = dA[:B], dA[B:], out[:N - B]
    res = weight_grad(first, h0)
    if N > B:
        res += weight_grad(rest, prev)
    return res


def linear(x: Tensor, w: Tensor, b=None, b2=None) -> Tensor:
    """x @ w.T (+ b (+ b2)): the input projection of all steps, or dx = dG @ W (with w = W.T)."""
    if b is None:
        return torch.mm(x, w.t())
    return torch.addmm(b if b2 is None else b + b2, x, w.t())


def weight_grad(dg: Tensor, inp: Tensor) -> Tensor:
    """dg.T @ inp: a weight's gradient summed over all steps in one product."""
    return torch.mm(dg.t(), inp)


def input_grads(dG: Tensor, x: Tensor, w_ih: Tensor, need_x: bool, need_w: bool) -> tuple:
    """(dx, dW_ih) of the input projection ``G = x W_ih^T (+ b)`` from its gradient dG (N, G):
    one product over all steps each, None where not needed."""
    return (linear(dG, w_ih.t()) if need_x else None, weight_grad(dG, x) if need_w else None)


def contiguous(t):
    return None if t is None else t.detach().contiguous()
