"""The fused layer-normalised LSTM: jitted step math, time loops, autograd Function.

The input side ``gx = LN(x W_ih^T; gamma_ih, b_ih)`` is the equations' ``project``, done by
torch for all steps before the loop (its backward is torch's too).  Per step:
``WH = h W_hh^T``, then one pass per row normalising WH (XH keeps the normalised rows, RS
the inverse deviations), the gates (G keeps them), c, the layer norm of c (CH, RC) and
h = o tanh(LN(c)).  Backward: per step the gate gradients dG_t (= d gx), the gradient
through both layer norms (DWH: of W_hh h) and ``dh = DWH_t W_hh``; after the loop the
parameter gradients as products and column sums over all steps.
"""
from __future__ import annotations

import numpy as np
import torch

from ...cells.layernorm_lstm import LN_EPS, LayerNormLSTMWeights
from .. import differentiable as diff
from ._jit import njit, sigmoid, tanh
from .common import dummy, npy, prev_row, recurrent_weight_grad
from .gemm import gemm_nt, zero_rows
from .layer_norm import norm_row, norm_row_bwd
from .split import row_slots, run_rows

# Compiled in each process, not cached on disk: for these kernels numba's cached code computes
# different last bits than a fresh compile (fresh compiles agree with each other), which would
# break bitwise determinism between a process that compiled them and one that loaded them.
# The torch.nn families' kernels do not show this and stay cached.


@njit(cache=False)
def lnlstm_pointwise(G, WH, o0, b, c, h, out, XH, RS, cs, CH, RC, gamma_hh, b_hh, gamma_c, beta_c,
                     eps, save):
    """Rows o0..o0+b: G (gx) -> gate activations, with WH = W_hh h of the step (rows 0..b).

    eps: layer norm's epsilon (float64, as the layer norms compute: see layer_norm.py)."""
    H = c.shape[1]
    G4 = 4 * H
    for r in range(b):
        row = o0 + r
        wh = WH[r]
        g = G[row]
        xh = XH[row] if save else XH[0]
        rs = norm_row(wh, xh, G4, eps)
        for j in range(G4):
            g[j] += gamma_hh[j] * xh[j] + b_hh[j]
        cr = c[r]
        for j in range(H):
            i = sigmoid(g[j])
            f = sigmoid(g[H + j])
            gv = tanh(g[2 * H + j])
            g[j] = i
            g[H + j] = f
            g[2 * H + j] = gv
            g[3 * H + j] = sigmoid(g[3 * H + j])
            cr[j] = f * cr[j] + i * gv
        ch = CH[row] if save else CH[0]
        rc = norm_row(cr, ch, H, eps)
        hr = h[r]
        orow = out[row]
        for j in range(H):
            hv = g[3 * H + j] * tanh(gamma_c[j] * ch[j] + beta_c[j])
            hr[j] = hv
            orow[j] = hv
        if save:
            RS[row] = rs
            RC[row] = rc
            csr = cs[row]
            for j in range(H):
                csr[j] = cr[j]


@njit(cache=False)
def lnlstm_forward_loop(offsets, bsz, lo, hi, G, w_hh, WH, c, h, out, XH, RS, cs, CH, RC, gamma_hh, b_hh,
                        gamma_c, beta_c, eps, reverse, save):
    """The forward time loop over the batch rows lo..hi (laid out by offsets, bsz; see split.py)."""
    T = bsz.shape[0]
    WH = WH[lo:hi]
    c = c[lo:hi]
    h = h[lo:hi]
    H = c.shape[1]
    for s in range(T):
        t = T - 1 - s if reverse else s
        b = bsz[t]
        zero_rows(WH, b)
        gemm_nt(h, 0, w_hh, WH, 0, b, H, 4 * H)
        lnlstm_pointwise(G, WH, offsets[t], b, c, h, out, XH, RS, cs, CH, RC, gamma_hh, b_hh, gamma_c, beta_c,
                         eps, save)


@njit(cache=False)
def lnlstm_pointwise_bwd(G, XH, RS, cs, c0, CH, RC, gamma_hh, gamma_c, beta_c, offsets, bsz, t, tp,
                         dout, dh, dc, dG, dcn, DWH, sums):
    """Step t: dG (gates' pre-activations, = d gx), DWH (d W_hh h); dc -> dc of c_{t-1}.

    dcn: one row of scratch (d LN(c)).  sums (float64, 4 rows of 4H): the column sums over all
    steps of dG * XH (d gamma_hh), dG (d b_hh), dcn * LN(c) (d gamma_c) and dcn (d beta_c),
    accumulated here, where the rows are at hand, instead of as products after the loop.  In
    float64, as the layer norms (layer_norm.py): a product of two float32 values is exact there,
    so these gradients are rounded once, when the Function hands them back, and do not depend on
    the order the vector lanes add them in."""
    H = dc.shape[1]
    G4 = 4 * H
    o0 = offsets[t]
    s_gxh, s_g, s_cc, s_c = sums[0], sums[1], sums[2], sums[3]
    for r in range(bsz[t]):
        row = o0 + r
        cp = prev_row(cs, c0, offsets, bsz, tp, r)
        g = G[row]
        d = dG[row]
        ch = CH[row]
        dhr = dh[r]
        dor = dout[row]
        for j in range(H):
            o = g[3 * H + j]
            tcn = tanh(gamma_c[j] * ch[j] + beta_c[j])
            dy = dhr[j] + dor[j]
            d[3 * H + j] = dy * tcn * (o - o * o)
            dyo = dy * o
            dn = dyo - dyo * tcn * tcn
            dcn[j] = dn
            s_cc[j] += np.float64(dn) * np.float64(ch[j])
            s_c[j] += np.float64(dn)
        norm_row_bwd(dcn, gamma_c, ch, RC[row], dcn, H)  # dcn: d LN(c) -> d c, in place
        dcr = dc[r]
        for j in range(H):
            i = g[j]
            f = g[H + j]
            gv = g[2 * H + j]
            dcv = dcr[j] + dcn[j]
            dci = dcv * i
            d[j] = dcv * gv * (i - i * i)
            d[H + j] = dcv * cp[j] * (f - f * f)
            d[2 * H + j] = dci - dci * gv * gv
            dcr[j] = dcv * f
        xh = XH[row]
        norm_row_bwd(d, gamma_hh, xh, RS[row], DWH[row], G4)
        for j in range(G4):
            s_gxh[j] += np.float64(d[j]) * np.float64(xh[j])
            s_g[j] += np.float64(d[j])


@njit(cache=False)
def lnlstm_backward_loop(offsets, bsz, lo, hi, G, XH, RS, cs, c0, CH, RC, gamma_hh, gamma_c, beta_c, w_hh_t,
                         dout, dh, dc, dG, dcn, DWH, sums, slot, reverse):
    """The backward time loop over the batch rows lo..hi.  dcn (B, H): row lo is this range's
    scratch; sums: slot[lo] picks this range's own (no two threads add into one)."""
    T = bsz.shape[0]
    c0 = c0[lo:hi]
    dh = dh[lo:hi]
    dc = dc[lo:hi]
    dcn = dcn[lo]
    sums = sums[slot[lo]]
    H = dc.shape[1]
    for s in range(T):
        t = s if reverse else T - 1 - s
        tp = t + 1 if reverse else t - 1
        b = bsz[t]
        lnlstm_pointwise_bwd(G, XH, RS, cs, c0, CH, RC, gamma_hh, gamma_c, beta_c, offsets, bsz, t, tp,
                             dout, dh, dc, dG, dcn, DWH, sums)
        zero_rows(dh, b)
        gemm_nt(DWH, offsets[t], w_hh_t, dh, 0, b, 4 * H, H)


def _reference(plan, gx, h0, c0, w_hh, b_hh, gamma_hh, gamma_c, beta_c, x, w_ih, b_ih, gamma_ih):
    """LayerNormLSTMFunction's outputs recomputed from x (the Function writes over gx), for a backward
    that must be differentiable: gradients for gx, the states and the recurrent weights; none for x
    and the projection's weights, whose gradients flow through gx's own graph."""
    weights = LayerNormLSTMWeights(w_ih, w_hh, b_ih, b_hh, gamma_ih, gamma_hh, gamma_c, beta_c)
    result = diff.projected_reference(plan, gx, (h0, c0), x, weights)
    return diff.Recomputed(result.outputs, result.wrt + [w_hh, b_hh, gamma_hh, gamma_c, beta_c, None, None, None, None])


class LayerNormLSTMFunction(torch.autograd.Function):
    """The recurrence of one layer-normalised LSTM layer-direction, from gx; see the module docstring."""

    @staticmethod
    def forward(ctx, plan, gx, h0, c0, w_hh, b_hh, gamma_hh, gamma_c, beta_c, x, w_ih, b_ih, gamma_ih):
        # x and the projection's weights: read only by the backward that recomputes (see _reference)
        offsets, bsz, T = plan.offsets, plan.bsz, plan.steps
        N, H = gx.shape[0], c0.shape[1]
        save = plan.save
        # gx is layer()'s own intermediate, read by nothing else (layer norm's backward keeps its input,
        # not its output), so the activations are written over it: no copy of (N, 4H).
        G = gx.detach()  # (N, 4H): gx, then the gate activations
        h = h0.clone()
        c = c0.clone()
        out = gx.new_empty(N, H)
        WH = gx.new_empty(h.shape[0], 4 * H)
        XH = gx.new_empty(N, 4 * H) if save else gx.new_empty(1, 4 * H)
        CH = gx.new_empty(N, H) if save else gx.new_empty(1, H)
        # the inverse deviations in float64, as the layer norms compute them (layer_norm.py)
        RS = gx.new_empty(N if save else 1, dtype=torch.float64)
        RC = gx.new_empty(N if save else 1, dtype=torch.float64)
        cs = gx.new_empty(N, H) if save else dummy(gx)
        bh = b_hh if b_hh is not None else gx.new_zeros(4 * H)
        bc = beta_c if beta_c is not None else gx.new_zeros(H)
        nG, nWH = npy(G), npy(WH)
        state = (npy(c), npy(h), npy(out), npy(XH), npy(RS), npy(cs), npy(CH), npy(RC),
                 npy(gamma_hh), npy(bh), npy(gamma_c), npy(bc), LN_EPS)
        if plan.whole:
            run_rows(lnlstm_forward_loop, plan, nG, npy(w_hh), nWH, *state, plan.reverse, save)
        else:
            whh_t = w_hh.t()
            for s in range(T):
                t = T - 1 - s if plan.reverse else s
                b, o0 = int(bsz[t]), int(offsets[t])
                torch.mm(h[:b], whh_t, out=WH[:b])
                lnlstm_pointwise(nG, nWH, o0, b, *state, save)
        if save:
            diff.save(ctx, plan, (gx, h0, c0, w_hh, b_hh, gamma_hh, gamma_c, beta_c, x, w_ih, b_ih, gamma_ih),
                      (bc, out, G, XH, RS, cs, CH, RC))
        return out, h, c

    @staticmethod
    @diff.differentiable_backward(_reference)
    def backward(ctx, dout, dhN, dcN):
        plan = ctx.plan
        (_, h0, c0, w_hh, _, gamma_hh, gamma_c, *_), (bc, out, G, XH, RS, cs, CH, RC) = diff.saved(ctx)
        offsets, bsz, T = plan.offsets, plan.bsz, plan.steps
        dout = dout.contiguous()
        dh = dhN.contiguous().clone()
        dc = dcN.contiguous().clone()
        dG = torch.empty_like(G)
        dcn = c0.new_empty(c0.shape)  # (B, H): scratch, one row per range of rows
        DWH = torch.empty_like(G)
        # column sums (see lnlstm_pointwise_bwd), one set per range of rows run by its own thread
        slot, ranges = row_slots(plan, c0.shape[0])
        sums = np.zeros((ranges, 4, G.shape[1]), dtype=np.float64)
        args = (npy(G), npy(XH), npy(RS), npy(cs), npy(c0), npy(CH), npy(RC), npy(gamma_hh), npy(gamma_c),
                npy(bc))
        if plan.whole:
            run_rows(lnlstm_backward_loop, plan, *args, npy(w_hh.t().contiguous()), npy(dout), npy(dh), npy(dc),
                     npy(dG), npy(dcn), npy(DWH), sums, slot, plan.reverse)
        else:
            ndout, ndh, ndc, ndG, ndcn, nDWH = npy(dout), npy(dh), npy(dc), npy(dG), npy(dcn), npy(DWH)
            for s in range(T):
                t = s if plan.reverse else T - 1 - s
                tp = t + 1 if plan.reverse else t - 1
                b, o0 = int(bsz[t]), int(offsets[t])
                lnlstm_pointwise_bwd(*args, offsets, bsz, t, tp, ndout, ndh, ndc, ndG, ndcn[0], nDWH, sums[0])
                torch.mm(DWH[o0:o0 + b], w_hh, out=dh[:b])
        need = ctx.needs_input_grad
        dw_hh = recurrent_weight_grad(DWH, out, h0, offsets, bsz, plan.reverse) if need[4] else None
        H = c0.shape[1]
        sums = torch.from_numpy(sums.sum(0)).to(G.dtype)  # over the ranges, in a fixed order
        db_hh = sums[1] if need[5] else None
        dgamma_hh = sums[0] if need[6] else None
        dgamma_c = sums[2, :H] if need[7] else None
        dbeta_c = sums[3, :H] if need[8] else None
        return (None, dG if need[1] else None, dh if need[2] else None, dc if need[3] else None,
                dw_hh, db_hh, dgamma_hh, dgamma_c, dbeta_c, None, None, None, None)


def layer(eq, x, offsets, bsz, state0, w, reverse, save):
    from . import Plan, _call, common, row_split
    h0, c0 = state0
    gx = eq.project(x, w).contiguous()  # (N, 4H): LN(x W_ih^T; gamma_ih, b_ih); the Function writes over it
    plan = Plan(offsets, bsz, reverse, save, common.whole_loop(h0.shape[0], h0.shape[1], w.w_hh.shape[0]),
                chunks=row_split(bsz, h0.shape[0], x.dtype), eq=eq)
    out, h, c = _call(LayerNormLSTMFunction, plan, gx, h0, c0, w.w_hh, w.b_hh, w.gamma_hh, w.gamma_c, w.beta_c,
                      x, w.w_ih, w.b_ih, w.gamma_ih)
    return out, (h, c)
