"""The backward time loop in blocks of steps, so that gate gradients never exist for all steps at once.

A fused backward computes per step the gate gradients dG (the step's rows, G wide); the
weight and input gradients are products over all steps: dx = dG W_ih, dW_ih = dG^T x,
db = sum dG, dW_hh = dA^T H_prev (dA: dG's recurrent side).  Holding dG for all N rows costs
N x G numbers, for a GRU more than all that torch.nn keeps for its backward.  ``Blocks``
cuts the backward's steps into a few blocks of contiguous packed rows; the kernels run one
block at a time into a block-sized dG (rows indexed from the block's first row) and
``GradSums`` takes the products per block and sums them: still a few large products, and dG of
one block only.  The output gradient is read one block at a time as well; one broadcast along
the rows (the gradient of ``out.sum()``) is read from its one row, never made whole.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from .common import add_mm, add_sum, npy, recurrent_weight_grad

MAX_BLOCKS = 8
MIN_BLOCK_BYTES = 1 << 18  # below this a block's products lose more to per-call cost than dG's memory is worth


class Blocks:
    """Backward step ranges: ``ranges`` holds (s0, s1, ta, tb, lo, hi) per block, in backward order.

    Backward step s runs time step t = T-1-s (t = s for the reverse direction); the block's
    time steps are ta..tb-1 and its packed rows lo..hi-1.

    ``min_blocks``: a block also closes once it holds ceil(N / min_blocks) rows (so no block holds
    more than that plus one step's rows), even where fewer blocks would be cheaper.  For a
    recurrence whose dG is large beside what torch.nn keeps for its backward (torch.nn's GRU and
    Elman loops keep little): at small sizes one block would hold every step's dG, and the peak
    would pass torch.nn's.
    """

    __slots__ = ("ranges", "rows", "_dout")

    def __init__(self, plan, width: int, itemsize: int, min_blocks: int = 1):
        # Cached per layout, where the key is small: at small sizes working the ranges out cost more
        # than a block's products (~25 us); for long sequences it is nothing beside the backward.
        args = (plan.reverse, width * itemsize, min_blocks, MIN_BLOCK_BYTES, MAX_BLOCKS)
        if plan.steps <= CACHED_MAX_STEPS:
            self.ranges, self.rows = _cached_ranges(plan.offsets.tobytes(), *args)
        else:
            self.ranges, self.rows = _ranges(plan.offsets, *args)
        self._dout = None

    def dout(self, dout: Tensor, lo: int, hi: int) -> tuple:
        """The output gradient's rows lo..hi-1 for a kernel, as (array, step): the kernel reads row i
        at ``array[i * step]``.  A gradient broadcast along the rows (``out.sum()``'s) is its one row
        with step 0, not made whole; a contiguous one is a view; any other is copied into one
        block-sized buffer that every block reuses."""
        if dout.stride(0) == 0:
            if self._dout is None:
                self._dout = npy(dout[:1].contiguous())  # (1, P)
            return self._dout, 0
        rows = dout[lo:hi]
        if rows.is_contiguous():
            return npy(rows), 1
        if self._dout is None:
            self._dout = dout.new_empty(self.rows, dout.shape[1])  # (rows of a block, P)
        return npy(self._dout[:hi - lo].copy_(rows)), 1


def _ranges(offsets: np.ndarray, reverse: bool, row_bytes: int, min_blocks: int, min_block_bytes: int,
            max_blocks: int) -> tuple:
    """(ranges, most rows in a block) for Blocks."""
    T = len(offsets) - 1
    N = int(offsets[-1])
    least = max(math.ceil(N / max_blocks), math.ceil(min_block_bytes / row_bytes))
    # at least one row, so that every block advances (with no rows at all, a batch of 0, one block
    # takes every step)
    least = max(1, min(least, math.ceil(N / min_blocks)))
    # done[s]: rows of backward steps 0..s-1 (backward runs t = T-1 .. 0, or 0 .. T-1 in reverse);
    # each block takes steps until it holds at least `least` rows.
    done = offsets if reverse else N - offsets[::-1]
    ranges = []
    s0 = 0
    while s0 < T:
        s1 = min(int(np.searchsorted(done, done[s0] + least)), T)
        ta, tb = (s0, s1) if reverse else (T - s1, T - s0)
        ranges.append((s0, s1, ta, tb, int(offsets[ta]), int(offsets[tb])))
        s0 = s1
    return tuple(ranges), max(hi - lo for *_, lo, hi in ranges)


CACHED_MAX_STEPS = 4096  # keys of at most 32 KiB, 64 of them


@lru_cache(maxsize=64)
def _cached_ranges(offsets_bytes: bytes, *args) -> tuple:
    return _ranges(np.frombuffer(offsets_bytes, dtype=np.int64), *args)


class GradSums:
    """dx, dW_ih and db (input side), dW_hh and db_hh (recurrent side) summed over the blocks.

    ``need`` = (dx, dW_ih, db, dW_hh[, db_hh]) wanted; the sums not wanted stay None.  db_hh is
    for a recurrence whose recurrent-side gradient differs from the input side's (the GRU's).
    """

    def __init__(self, x: Tensor, w_ih: Tensor, out: Tensor, h0: Tensor, plan, need):
        self.x, self.w_ih, self.out, self.h0, self.plan = x, w_ih, out, h0, plan
        need_x, self.need_w_ih, self.need_b, self.need_w_hh, *rest = need
        self.need_b_hh = bool(rest and rest[0])
        self.dx = x.new_empty(x.shape) if need_x else None
        self.dw_ih = self.db = self.dw_hh = self.db_hh = None

    def input_side(self, dG: Tensor, lo: int, hi: int) -> None:
        if self.dx is not None:
            torch.mm(dG, self.w_ih, out=self.dx[lo:hi])  # (rows, I)
        if self.need_w_ih:
            self.dw_ih = add_mm(self.dw_ih, dG, self.x[lo:hi])
        if self.need_b:
            self.db = add_sum(self.db, dG)

    def recurrent_side(self, dA: Tensor, ta: int, tb: int) -> None:
        if self.need_w_hh:
            p = self.plan
            self.dw_hh = recurrent_weight_grad(dA, self.out, self.h0, p.offsets, p.bsz, p.reverse, ta, tb,
                                               into=self.dw_hh)
        if self.need_b_hh:
            self.db_hh = add_sum(self.db_hh, dA)
