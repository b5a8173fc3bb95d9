"""The fused LSTM (with and without projection): jitted step math, time loops, autograd Function.

Forward: one product ``G = x W_ih^T + (b_ih + b_hh)`` for all steps; per step
``G_t += h W_hh^T`` then one pass computing the gates in place (G keeps the
activations i, f, g, o for backward), c, and h (``h = (o tanh c) W_hr^T`` with a
projection).  Backward: per step the gate gradients dG_t and ``dh = dG_t W_hh``;
the weight gradients and dx are products over many steps (dW_ih = dG^T x,
dW_hh = dG^T H_prev, dW_hr = dH^T M, dx = dG W_ih), taken per block of steps (blocks.py)
so that dG exists for one block at a time.
"""
from __future__ import annotations

import torch

from ..differentiable import differentiable_backward, layer_reference, save, saved
from ._jit import helper, njit, sigmoid, tanh
from .blocks import Blocks, GradSums
from .common import add_mm, dummy, linear, npy, prev_row
from .gemm import gemm_nt, zero_rows
from .split import run_rows


@helper
def lstm_pointwise(G, o0, b, H, c, cs, m, save):
    """Rows o0..o0+b of G: pre-activations -> activations; c (state) and m = o tanh(c) updated.

    One loop over the hidden units through row views: LLVM vectorises it (the activations
    are branch-free arithmetic), where separate loops over 2-D indices stayed scalar.
    """
    for r in range(b):
        g = G[o0 + r]
        gi = g[:H]
        gf = g[H:2 * H]
        gg = g[2 * H:3 * H]
        go = g[3 * H:]
        cr = c[r]
        mr = m[r]
        for j in range(H):
            i = sigmoid(gi[j])
            f = sigmoid(gf[j])
            gv = tanh(gg[j])
            o = sigmoid(go[j])
            gi[j] = i
            gf[j] = f
            gg[j] = gv
            go[j] = o
            cn = f * cr[j] + i * gv
            cr[j] = cn
            mr[j] = o * tanh(cn)
        if save:
            csr = cs[o0 + r]
            for j in range(H):
                csr[j] = cr[j]


@njit
def lstm_forward_steps(offsets, bsz, lo, hi, G, w_hh, w_hr, h, c, m, out, cs, reverse, save, proj,
                       s_begin, s_end, gemm):
    """Steps s_begin..s_end of the forward loop over the batch rows lo..hi (laid out by offsets, bsz;
    see split.py); with gemm=False the caller does the products."""
    T = bsz.shape[0]
    h = h[lo:hi]
    c = c[lo:hi]
    m = m[lo:hi]
    H = c.shape[1]
    P = h.shape[1]
    for s in range(s_begin, s_end):
        t = T - 1 - s if reverse else s
        b = bsz[t]
        o0 = offsets[t]
        if gemm:
            gemm_nt(h, 0, w_hh, G, o0, b, P, 4 * H)
        lstm_pointwise(G, o0, b, H, c, cs, m, save)
        if proj:
            if not gemm:
                continue
            zero_rows(h, b)
            gemm_nt(m, 0, w_hr, h, 0, b, H, P)
        for r in range(b):
            for p in range(P):
                out[o0 + r, p] = h[r, p]


@njit
def lstm_pointwise_bwd(G, cs, c0, offsets, bsz, t, tp, H, dm, dc, dG, base):
    """Gate gradients of step t (rows of the step) from dm = d(o tanh c) and the carried dc;
    dG holds the rows from ``base`` on (one block, see blocks.py)."""
    o0 = offsets[t]
    for r in range(bsz[t]):
        row = o0 + r
        cp = prev_row(cs, c0, offsets, bsz, tp, r)
        g = G[row]
        d = dG[row - base]
        cr = cs[row]
        dmr = dm[r]
        dcr = dc[r]
        for j in range(H):
            i = g[j]
            f = g[H + j]
            gv = g[2 * H + j]
            o = g[3 * H + j]
            tc = tanh(cr[j])
            dmv = dmr[j]
            dmo = dmv * o
            dcv = dcr[j] + (dmo - dmo * tc * tc)
            dci = dcv * i
            d[j] = dcv * gv * (i - i * i)
            d[H + j] = dcv * cp[j] * (f - f * f)
            d[2 * H + j] = dci - dci * gv * gv
            d[3 * H + j] = dmv * tc * (o - o * o)
            dcr[j] = dcv * f


@njit
def add_rows(dh, dout, dstep, o0, b, dHs, keep):
    """dh[:b] += dout[o0:o0+b]; with keep, also dHs[o0:o0+b] = dh[:b] (o0 counts from the block's first row;
    dout's row i at ``dout[i * dstep]``, see Blocks.dout)."""
    P = dh.shape[1]
    for r in range(b):
        d = dout[(o0 + r) * dstep]
        for p in range(P):
            v = dh[r, p] + d[p]
            dh[r, p] = v
            if keep:
                dHs[o0 + r, p] = v


@njit
def lstm_backward_loop(offsets, bsz, lo, hi, G, cs, c0, w_hh_t, w_hr_t, dout, dstep, dh, dc, dm, dG, dHs, reverse, proj,
                       s0, s1, base):
    """Backward steps s0..s1-1 over the batch rows lo..hi; dout, dG and dHs hold the rows from
    ``base`` on (one block, see blocks.py)."""
    T = bsz.shape[0]
    c0 = c0[lo:hi]
    dh = dh[lo:hi]
    dc = dc[lo:hi]
    dm = dm[lo:hi]
    H = c0.shape[1]
    P = dh.shape[1]
    for s in range(s0, s1):
        t = s if reverse else T - 1 - s
        tp = t + 1 if reverse else t - 1
        b = bsz[t]
        o0 = offsets[t]
        add_rows(dh, dout, dstep, o0 - base, b, dHs, proj)
        if proj:
            zero_rows(dm, b)
            gemm_nt(dh, 0, w_hr_t, dm, 0, b, P, H)
        lstm_pointwise_bwd(G, cs, c0, offsets, bsz, t, tp, H, dm, dc, dG, base)
        zero_rows(dh, b)
        gemm_nt(dG, o0 - base, w_hh_t, dh, 0, b, 4 * H, P)


class LSTMFunction(torch.autograd.Function):
    """One LSTM layer-direction over packed input; see the module docstring."""

    @staticmethod
    def forward(ctx, plan, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
        offsets, bsz, T = plan.offsets, plan.bsz, plan.steps
        H, P = c0.shape[1], h0.shape[1]
        proj = w_hr is not None
        G = linear(x, w_ih, b_ih, b_hh)  # (N, 4H): pre-activations, then activations
        h = h0.clone()
        c = c0.clone()
        out = x.new_empty(x.shape[0], P)
        cs = x.new_empty(x.shape[0], H) if plan.save else dummy(x)
        m = x.new_empty(h.shape[0], H) if proj else h
        whr = w_hr if proj else dummy(x)
        args = (npy(G), npy(w_hh), npy(whr), npy(h), npy(c), npy(m), npy(out), npy(cs), plan.reverse, plan.save, proj)
        if plan.whole:
            run_rows(lstm_forward_steps, plan, *args, 0, T, True)
        else:
            whh_t = w_hh.t()
            whr_t = whr.t()
            for s in range(T):
                t = T - 1 - s if plan.reverse else s
                b, o0 = int(bsz[t]), int(offsets[t])
                G[o0:o0 + b].addmm_(h[:b], whh_t)
                lstm_forward_steps(offsets, bsz, 0, h.shape[0], *args, s, s + 1, False)
                if proj:
                    torch.mm(m[:b], whr_t, out=h[:b])
                    out[o0:o0 + b].copy_(h[:b])
        if plan.save:
            save(ctx, plan, (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr), (out, G, cs))
        return out, h, c

    @staticmethod
    @differentiable_backward(layer_reference)
    def backward(ctx, dout, dhN, dcN):
        plan = ctx.plan
        (x, h0, c0, w_ih, w_hh, _, _, w_hr), (out, G, cs) = saved(ctx)
        offsets, bsz, T = plan.offsets, plan.bsz, plan.steps
        H, P = c0.shape[1], h0.shape[1]
        proj = w_hr is not None
        dh = dhN.contiguous().clone()
        dc = dcN.contiguous().clone()
        need = ctx.needs_input_grad
        sums = GradSums(x, w_ih, out, h0, plan, (need[1], need[4], need[6] or need[7], need[5]))
        blocks = Blocks(plan, G.shape[1], G.element_size())
        dG_all = G.new_empty(blocks.rows, 4 * H)  # (rows of a block, 4H)
        dm = x.new_empty(dh.shape[0], H) if proj else dh
        dHs_all = x.new_empty(blocks.rows, P) if proj else dummy(x)  # (rows of a block, P): dh, for dW_hr
        whr_t = npy(w_hr.t().contiguous() if proj else dummy(x))
        whh_t = npy(w_hh.t().contiguous())
        nG, ncs, nc0, ndh, ndc, ndm = npy(G), npy(cs), npy(c0), npy(dh), npy(dc), npy(dm)
        dw_hr = None
        last = len(blocks.ranges) - 1
        for k, (s0, s1, ta, tb, lo, hi) in enumerate(blocks.ranges):
            dG = dG_all[:hi - lo]
            dHs = dHs_all[:hi - lo] if proj else dHs_all
            (ndout, dstep), ndG, ndHs = blocks.dout(dout, lo, hi), npy(dG), npy(dHs)
            if plan.whole:
                run_rows(lstm_backward_loop, plan, nG, ncs, nc0, whh_t, whr_t, ndout, dstep, ndh, ndc, ndm, ndG, ndHs,
                         plan.reverse, proj, s0, s1, lo)
            else:
                for s in range(s0, s1):
                    t = s if plan.reverse else T - 1 - s
                    tp = t + 1 if plan.reverse else t - 1
                    b, o0 = int(bsz[t]), int(offsets[t])
                    add_rows(ndh, ndout, dstep, o0 - lo, b, ndHs, proj)
                    if proj:
                        torch.mm(dh[:b], w_hr, out=dm[:b])
                    lstm_pointwise_bwd(nG, ncs, nc0, offsets, bsz, t, tp, H, ndm, ndc, ndG, lo)
                    torch.mm(dG[o0 - lo:o0 - lo + b], w_hh, out=dh[:b])
            if k == last:  # the loop's own buffers go before the products below allocate the gradients
                del whh_t, whr_t, dm, ndm, ndout, blocks
            sums.input_side(dG, lo, hi)
            sums.recurrent_side(dG, ta, tb)
            if proj and need[8]:
                M = G[lo:hi, 3 * H:] * torch.tanh(cs[lo:hi])  # (rows, H): o tanh(c), what W_hr multiplied
                dw_hr = add_mm(dw_hr, dHs, M)
        return (None, sums.dx, dh if need[2] else None, dc if need[3] else None, sums.dw_ih, sums.dw_hh,
                sums.db if need[6] else None, sums.db if need[7] else None, dw_hr)
