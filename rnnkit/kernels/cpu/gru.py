"""The fused GRU: jitted step math, time loops, autograd Function.

Forward: ``G = x W_ih^T + b_ih + (b_hr, b_hz, 0)`` for all steps; per step
``A = h W_hh^T + (0, 0, b_hn)``, then r, z, n and h in one pass (G keeps r, z, n and
HN keeps A's n part, what backward needs).  Backward: per step the gate gradients
and ``dh = z dh' + dA_t W_hh``; the weight gradients and dx as products over each
block of steps (blocks.py).  dG (input side) and dA (recurrent side) differ only in the n block
(dA_n = r dG_n): dA lives one step at a time in a (B, 3H) scratch, and after each block of
steps (blocks.py), once dx, dW_ih and db_ih are taken from the block's dG, its n block is
multiplied by r in place to become dA for dW_hh and db_hh.
"""
from __future__ import annotations

import torch

from ..differentiable import differentiable_backward, layer_reference, save, saved
from ._jit import njit, sigmoid, tanh
from .blocks import Blocks, GradSums
from .common import dummy, linear, npy, prev_row
from .gemm import gemm_nt, zero_rows
from .split import run_rows


# At (T, B, I, H) = (100, 1, 32, 32), measured in tensor bytes: one block peaks at 141,064, above
# torch.nn.GRU's 140,928; two blocks at 134,664 (at ~10% more time there).
MIN_BLOCKS = 2


@njit
def gru_pointwise(G, A, HN, o0, b, H, h, out, save):
    """Rows o0..o0+b: r, z, n and the new h from G (input side) and A (recurrent side)."""
    for r in range(b):
        row = o0 + r
        g = G[row]
        a = A[r]
        hr = h[r]
        orow = out[row]
        for j in range(H):
            rg = sigmoid(g[j] + a[j])
            z = sigmoid(g[H + j] + a[H + j])
            n = tanh(g[2 * H + j] + rg * a[2 * H + j])
            g[j] = rg
            g[H + j] = z
            g[2 * H + j] = n
            hv = (hr[j] - n) * z + n
            hr[j] = hv
            orow[j] = hv
        if save:
            hn = HN[row]
            for j in range(H):
                hn[j] = a[2 * H + j]


@njit
def gru_forward_loop(offsets, bsz, lo, hi, G, w_hh, b_hn, A, HN, h, out, reverse, save, has_bias):
    """The forward time loop over the batch rows lo..hi (laid out by offsets, bsz; see split.py)."""
    T = bsz.shape[0]
    A = A[lo:hi]
    h = h[lo:hi]
    H = h.shape[1]
    for s in range(T):
        t = T - 1 - s if reverse else s
        b = bsz[t]
        o0 = offsets[t]
        zero_rows(A, b)
        gemm_nt(h, 0, w_hh, A, 0, b, H, 3 * H)
        if has_bias:
            for r in range(b):
                for j in range(H):
                    A[r, 2 * H + j] += b_hn[j]
        gru_pointwise(G, A, HN, o0, b, H, h, out, save)


@njit
def gru_pointwise_bwd(G, HN, out, h0, offsets, bsz, t, tp, dout, dstep, dh, dG, dA, base):
    """Gate gradients of step t; dh becomes z * dh' (the direct path; dA W_hh is added after).

    dG and dout hold the rows from ``base`` on (one block, see blocks.py; dout's row i at
    ``dout[i * dstep]``); dA (scratch, row r for the step's row r) receives the recurrent side's
    gradient [dG_r, dG_z, r dG_n].
    """
    H = dh.shape[1]
    o0 = offsets[t]
    for r in range(bsz[t]):
        row = o0 + r
        hp = prev_row(out, h0, offsets, bsz, tp, r)
        g = G[row]
        hn = HN[row]
        dgr = dG[row - base]
        da = dA[r]
        dhr = dh[r]
        dor = dout[(row - base) * dstep]
        for j in range(H):
            rg = g[j]
            z = g[H + j]
            n = g[2 * H + j]
            d = dhr[j] + dor[j]
            dz = d * (hp[j] - n)
            dn = d - d * z
            dan = dn - dn * n * n
            dar = dan * hn[j] * (rg - rg * rg)
            daz = dz * (z - z * z)
            dgr[j] = dar
            dgr[H + j] = daz
            dgr[2 * H + j] = dan
            da[j] = dar
            da[H + j] = daz
            da[2 * H + j] = dan * rg
            dhr[j] = d * z


@njit
def gru_backward_loop(offsets, bsz, lo, hi, G, HN, out, h0, w_hh_t, dout, dstep, dh, dG, dA, reverse, s0, s1,
                      base):
    """Backward steps s0..s1-1 (one block, see blocks.py) over the batch rows lo..hi."""
    T = bsz.shape[0]
    h0 = h0[lo:hi]
    dh = dh[lo:hi]
    dA = dA[lo:hi]
    H = dh.shape[1]
    for s in range(s0, s1):
        t = s if reverse else T - 1 - s
        tp = t + 1 if reverse else t - 1
        gru_pointwise_bwd(G, HN, out, h0, offsets, bsz, t, tp, dout, dstep, dh, dG, dA, base)
        gemm_nt(dA, 0, w_hh_t, dh, 0, bsz[t], 3 * H, H)


class GRUFunction(torch.autograd.Function):
    """One GRU layer-direction over packed input; see the module docstring."""

    @staticmethod
    def forward(ctx, plan, x, h0, w_ih, w_hh, b_ih, b_hh):
        offsets, bsz, T = plan.offsets, plan.bsz, plan.steps
        H = h0.shape[1]
        has_bias = b_ih is not None
        if has_bias:
            bias = b_ih.clone()
            bias[:2 * H] += b_hh[:2 * H]
            G = linear(x, w_ih, bias)
            b_hn = b_hh[2 * H:].contiguous()
        else:
            G = linear(x, w_ih)
            b_hn = x.new_zeros(H)
        h = h0.clone()
        out = x.new_empty(x.shape[0], H)
        A = x.new_empty(h.shape[0], 3 * H)
        HN = x.new_empty(x.shape[0], H) if plan.save else dummy(x)
        nG, nA, nHN, nh, nout = npy(G), npy(A), npy(HN), npy(h), npy(out)
        if plan.whole:
            run_rows(gru_forward_loop, plan, nG, npy(w_hh), npy(b_hn), nA, nHN, nh, nout, plan.reverse, plan.save,
                     has_bias)
        else:
            whh_t = w_hh.t()
            b_a = torch.cat([b_hn.new_zeros(2 * H), b_hn])  # b_hr, b_hz are already in G
            for s in range(T):
                t = T - 1 - s if plan.reverse else s
                b, o0 = int(bsz[t]), int(offsets[t])
                if has_bias:
                    torch.addmm(b_a, h[:b], whh_t, out=A[:b])
                else:
                    torch.mm(h[:b], whh_t, out=A[:b])
                gru_pointwise(nG, nA, nHN, o0, b, H, nh, nout, plan.save)
        if plan.save:
            save(ctx, plan, (x, h0, w_ih, w_hh, b_ih, b_hh), (out, G, HN))
        return out, h

    @staticmethod
    @differentiable_backward(layer_reference)
    def backward(ctx, dout, dhN):
        plan = ctx.plan
        (x, h0, w_ih, w_hh, _, _), (out, G, HN) = saved(ctx)
        offsets, bsz, T = plan.offsets, plan.bsz, plan.steps
        H = h0.shape[1]
        dh = dhN.contiguous().clone()
        need = ctx.needs_input_grad
        sums = GradSums(x, w_ih, out, h0, plan, (need[1], need[3], need[5], need[4], need[6]))
        blocks = Blocks(plan, G.shape[1], G.element_size(), min_blocks=MIN_BLOCKS)
        dG_all = G.new_empty(blocks.rows, 3 * H)  # (rows of a block, 3H)
        dA = G.new_empty(dh.shape[0], 3 * H)  # (B, 3H): one step's recurrent-side gradient
        args = (npy(G), npy(HN), npy(out), npy(h0))
        w_hh_t = npy(w_hh.t().contiguous())  # (H, 3H)
        ndh, ndA = npy(dh), npy(dA)
        last = len(blocks.ranges) - 1
        for k, (s0, s1, ta, tb, lo, hi) in enumerate(blocks.ranges):
            dG = dG_all[:hi - lo]
            (ndout, dstep), ndG = blocks.dout(dout, lo, hi), npy(dG)
            if plan.whole:
                run_rows(gru_backward_loop, plan, *args, w_hh_t, ndout, dstep, ndh, ndG, ndA, plan.reverse, s0, s1, lo)
            else:
                for s in range(s0, s1):
                    t = s if plan.reverse else T - 1 - s
                    tp = t + 1 if plan.reverse else t - 1
                    b = int(bsz[t])
                    gru_pointwise_bwd(*args, offsets, bsz, t, tp, ndout, dstep, ndh, ndG, ndA, lo)
                    dh[:b].addmm_(dA[:b], w_hh)
            if k == last:  # the loop's own buffers go before the products below allocate the gradients
                del w_hh_t, dA, ndA, ndout, blocks
            sums.input_side(dG, lo, hi)
            if need[4] or need[6]:
                dG[:, 2 * H:] *= G[lo:hi, :H]  # dG_n -> dA_n = r dG_n: dG is now dA
                sums.recurrent_side(dG, ta, tb)
        return None, sums.dx, dh if need[2] else None, sums.dw_ih, sums.dw_hh, sums.db, sums.db_hh
