"""The fused Elman RNN (tanh or relu): jitted step math, time loops, autograd Function.

Forward: ``G = x W_ih^T + (b_ih + b_hh)`` for all steps; per step ``G_t += h W_hh^T``
and ``h = act(G_t)`` (written to the output, which is all backward needs).
Backward: per step ``dA = dh' act'(h')`` and ``dh = dA W_hh``; the weight gradients
and dx as products over each block of steps (blocks.py).
"""
from __future__ import annotations

import torch

from ..differentiable import differentiable_backward, layer_reference, save, saved
from ._jit import njit, tanh
from .blocks import Blocks, GradSums
from .common import linear, npy
from .gemm import gemm_nt, zero_rows
from .split import run_rows


# At (T, B, I, H) = (100, 1, 32, 32), measured in tensor bytes: torch.nn.RNN peaks at 42,760; rnnkit at
# 47,240 with one block, 45,064 with two (W_hh^T, H x H, is alive beside the first blocks' gradient
# sums), 41,992 with four (at ~20% more time there).
MIN_BLOCKS = 4


@njit
def elman_pointwise(G, o0, b, h, out, relu):
    H = h.shape[1]
    for r in range(b):
        g = G[o0 + r]
        hr = h[r]
        orow = out[o0 + r]
        if relu:
            for j in range(H):
                v = max(g[j], g[j] * 0)
                hr[j] = v
                orow[j] = v
        else:
            for j in range(H):
                v = tanh(g[j])
                hr[j] = v
                orow[j] = v


@njit
def elman_forward_loop(offsets, bsz, lo, hi, G, w_hh, h, out, reverse, relu):
    """The forward time loop over the batch rows lo..hi (laid out by offsets, bsz; see split.py)."""
    T = bsz.shape[0]
    h = h[lo:hi]
    H = h.shape[1]
    for s in range(T):
        t = T - 1 - s if reverse else s
        b = bsz[t]
        o0 = offsets[t]
        gemm_nt(h, 0, w_hh, G, o0, b, H, H)
        elman_pointwise(G, o0, b, h, out, relu)


@njit
def elman_pointwise_bwd(out, dout, dstep, dh, dA, o0, b, relu, base):
    """dA = (dh + dout) act'(h) for the rows o0..o0+b; dout and dA hold the rows from ``base`` on
    (dout's row i at ``dout[i * dstep]``, see Blocks.dout)."""
    H = dh.shape[1]
    for r in range(b):
        y = out[o0 + r]
        dy = dout[(o0 - base + r) * dstep]
        dhr = dh[r]
        da = dA[o0 - base + r]
        if relu:
            for j in range(H):
                d = dhr[j] + dy[j]
                da[j] = d if y[j] > 0 else d * 0
        else:
            for j in range(H):
                d = dhr[j] + dy[j]
                da[j] = d - d * y[j] * y[j]


@njit
def elman_backward_loop(offsets, bsz, lo, hi, out, w_hh_t, dout, dstep, dh, dA, reverse, relu, s0, s1, base):
    """Backward steps s0..s1-1 (one block, see blocks.py) over the batch rows lo..hi."""
    T = bsz.shape[0]
    dh = dh[lo:hi]
    H = dh.shape[1]
    for s in range(s0, s1):
        t = s if reverse else T - 1 - s
        b = bsz[t]
        o0 = offsets[t]
        elman_pointwise_bwd(out, dout, dstep, dh, dA, o0, b, relu, base)
        zero_rows(dh, b)
        gemm_nt(dA, o0 - base, w_hh_t, dh, 0, b, H, H)


class ElmanFunction(torch.autograd.Function):
    """One Elman layer-direction over packed input; see the module docstring."""

    @staticmethod
    def forward(ctx, plan, x, h0, w_ih, w_hh, b_ih, b_hh):
        offsets, bsz, T = plan.offsets, plan.bsz, plan.steps
        relu = plan.relu
        G = linear(x, w_ih, b_ih, b_hh)
        h = h0.clone()
        out = x.new_empty(x.shape[0], h0.shape[1])
        nG, nh, nout = npy(G), npy(h), npy(out)
        if plan.whole:
            run_rows(elman_forward_loop, plan, nG, npy(w_hh), nh, nout, plan.reverse, relu)
        else:
            whh_t = w_hh.t()
            for s in range(T):
                t = T - 1 - s if plan.reverse else s
                b, o0 = int(bsz[t]), int(offsets[t])
                G[o0:o0 + b].addmm_(h[:b], whh_t)
                elman_pointwise(nG, o0, b, nh, nout, relu)
        if plan.save:
            save(ctx, plan, (x, h0, w_ih, w_hh, b_ih, b_hh), (out,))
        return out, h

    @staticmethod
    @differentiable_backward(layer_reference)
    def backward(ctx, dout, dhN):
        plan = ctx.plan
        (x, h0, w_ih, w_hh, _, _), (out,) = saved(ctx)
        offsets, bsz, T = plan.offsets, plan.bsz, plan.steps
        dh = dhN.contiguous().clone()
        need = ctx.needs_input_grad
        sums = GradSums(x, w_ih, out, h0, plan, (need[1], need[3], need[5] or need[6], need[4]))
        blocks = Blocks(plan, out.shape[1], out.element_size(), min_blocks=MIN_BLOCKS)
        dA_all = out.new_empty(blocks.rows, out.shape[1])  # (rows of a block, H)
        w_hh_t = npy(w_hh.t().contiguous())
        nout, ndh = npy(out), npy(dh)
        last = len(blocks.ranges) - 1
        for k, (s0, s1, ta, tb, lo, hi) in enumerate(blocks.ranges):
            dA = dA_all[:hi - lo]
            (ndout, dstep), ndA = blocks.dout(dout, lo, hi), npy(dA)
            if plan.whole:
                run_rows(elman_backward_loop, plan, nout, w_hh_t, ndout, dstep, ndh, ndA, plan.reverse, plan.relu,
                         s0, s1, lo)
            else:
                for s in range(s0, s1):
                    t = s if plan.reverse else T - 1 - s
                    b, o0 = int(bsz[t]), int(offsets[t])
                    elman_pointwise_bwd(nout, ndout, dstep, ndh, ndA, o0, b, plan.relu, lo)
                    torch.mm(dA[o0 - lo:o0 - lo + b], w_hh, out=dh[:b])
            if k == last:  # the loop's own buffers go before the products below allocate the gradients
                del w_hh_t, ndout, blocks
            sums.input_side(dA, lo, hi)
            sums.recurrent_side(dA, ta, tb)
        return (None, sums.dx, dh if need[2] else None, sums.dw_ih, sums.dw_hh,
                sums.db if need[5] else None, sums.db if need[6] else None)
