"""The fused GRU with the reset gate before the product (``GRUCell(reset_after=False)``):
jitted step math, time loops, autograd Function.

Forward: ``G = x W_ih^T + b_ih + b_hh`` for all steps (b_hn is additive here too); per
step two products with pointwise math between: ``G_rz += h W_hrz^T``, r and z, ``rh = r h``,
``A_n = rh W_hn^T``, n and h (G keeps r, z, n; RH keeps every rh, the input of W_hn).
Backward: per step ``d(rh) = dA_n W_hn`` between two pointwise passes, then
``dh = z dh' + r d(rh) + dA_rz W_hrz``; the weight gradients after the loop.
"""
from __future__ import annotations

import torch

from ..differentiable import differentiable_backward, layer_reference, save, saved
from ._jit import njit, sigmoid, tanh
from .common import input_grads, linear, npy, prev_row, recurrent_weight_grad, weight_grad
from .gemm import gemm_nt, zero_rows


@njit
def grb_pointwise_rz(G, o0, b, h, RH):
    """r, z of rows o0..o0+b (G's r and z blocks already hold the recurrent product); rh = r h."""
    H = h.shape[1]
    for r in range(b):
        g = G[o0 + r]
        hr = h[r]
        rh = RH[o0 + r]
        for j in range(H):
            rg = sigmoid(g[j])
            g[j] = rg
            g[H + j] = sigmoid(g[H + j])
            rh[j] = rg * hr[j]


@njit
def grb_pointwise_n(G, AN, o0, b, h, out):
    """n from G's n block + A_n, and the new h."""
    H = h.shape[1]
    for r in range(b):
        g = G[o0 + r]
        an = AN[r]
        hr = h[r]
        orow = out[o0 + r]
        for j in range(H):
            n = tanh(g[2 * H + j] + an[j])
            g[2 * H + j] = n
            hv = (hr[j] - n) * g[H + j] + n
            hr[j] = hv
            orow[j] = hv


@njit
def grb_forward_loop(G, w_hrz, w_hn, AN, RH, h, out, offsets, bsz, reverse):
    T = bsz.shape[0]
    H = h.shape[1]
    for s in range(T):
        t = T - 1 - s if reverse else s
        b = bsz[t]
        o0 = offsets[t]
        gemm_nt(h, 0, w_hrz, G, o0, b, H, 2 * H)
        grb_pointwise_rz(G, o0, b, h, RH)
        zero_rows(AN, b)
        gemm_nt(RH, o0, w_hn, AN, 0, b, H, H)
        grb_pointwise_n(G, AN, o0, b, h, out)


@njit
def grb_bwd_zn(G, out, h0, offsets, bsz, t, tp, dout, dh, dG, DAN):
    """dA_z, dA_n of step t (DAN gets dA_n too); dh becomes z dh' (the direct path)."""
    H = dh.shape[1]
    o0 = offsets[t]
    for r in range(bsz[t]):
        row = o0 + r
        hp = prev_row(out, h0, offsets, bsz, tp, r)
        g = G[row]
        d = dG[row]
        dhr = dh[r]
        dor = dout[row]
        dan_r = DAN[r]
        for j in range(H):
            z = g[H + j]
            n = g[2 * H + j]
            dy = dhr[j] + dor[j]
            dn = dy - dy * z
            dan = dn - dn * n * n
            d[H + j] = dy * (hp[j] - n) * (z - z * z)
            d[2 * H + j] = dan
            dan_r[j] = dan
            dhr[j] = dy * z


@njit
def grb_bwd_r(G, out, h0, offsets, bsz, t, tp, DRH, dh, dG):
    """dA_r of step t from d(rh); dh += r d(rh)."""
    H = dh.shape[1]
    o0 = offsets[t]
    for r in range(bsz[t]):
        row = o0 + r
        hp = prev_row(out, h0, offsets, bsz, tp, r)
        g = G[row]
        d = dG[row]
        drh = DRH[r]
        dhr = dh[r]
        for j in range(H):
            rg = g[j]
            d[j] = drh[j] * hp[j] * (rg - rg * rg)
            dhr[j] += drh[j] * rg


@njit
def grb_backward_loop(G, out, h0, w_hn_t, w_hrz_t, dout, dh, dG, DAN, DRH, offsets, bsz, reverse):
    T = bsz.shape[0]
    H = dh.shape[1]
    for s in range(T):
        t = s if reverse else T - 1 - s
        tp = t + 1 if reverse else t - 1
        b = bsz[t]
        grb_bwd_zn(G, out, h0, offsets, bsz, t, tp, dout, dh, dG, DAN)
        zero_rows(DRH, b)
        gemm_nt(DAN, 0, w_hn_t, DRH, 0, b, H, H)
        grb_bwd_r(G, out, h0, offsets, bsz, t, tp, DRH, dh, dG)
        gemm_nt(dG, offsets[t], w_hrz_t, dh, 0, b, 2 * H, H)


class GRUResetBeforeFunction(torch.autograd.Function):
    """One reset-before GRU layer-direction over packed input; see the module docstring."""

    @staticmethod
    def forward(ctx, plan, x, h0, w_ih, w_hh, b_ih, b_hh):
        offsets, bsz, T = plan.offsets, plan.bsz, plan.steps
        H = h0.shape[1]
        G = linear(x, w_ih, b_ih, b_hh)  # (N, 3H)
        h = h0.clone()
        out = x.new_empty(x.shape[0], H)
        RH = x.new_empty(x.shape[0], H)
        AN = x.new_empty(h.shape[0], H)
        w_hrz, w_hn = w_hh[:2 * H], w_hh[2 * H:]
        nG, nRH, nAN, nh, nout = npy(G), npy(RH), npy(AN), npy(h), npy(out)
        if plan.whole:
            grb_forward_loop(nG, npy(w_hrz), npy(w_hn), nAN, nRH, nh, nout, offsets, bsz, plan.reverse)
        else:
            w_hrz_t, w_hn_t = w_hrz.t(), w_hn.t()
            for s in range(T):
                t = T - 1 - s if plan.reverse else s
                b, o0 = int(bsz[t]), int(offsets[t])
                G[o0:o0 + b, :2 * H].addmm_(h[:b], w_hrz_t)
                grb_pointwise_rz(nG, o0, b, nh, nRH)
                torch.mm(RH[o0:o0 + b], w_hn_t, out=AN[:b])
                grb_pointwise_n(nG, nAN, o0, b, nh, nout)
        if plan.save:
            save(ctx, plan, (x, h0, w_ih, w_hh, b_ih, b_hh), (out, G, RH))
        return out, h

    @staticmethod
    @differentiable_backward(layer_reference)
    def backward(ctx, dout, dhN):
        plan = ctx.plan
        (x, h0, w_ih, w_hh, _, _), (out, G, RH) = saved(ctx)
        offsets, bsz, T = plan.offsets, plan.bsz, plan.steps
        H = h0.shape[1]
        dout = dout.contiguous()
        dh = dhN.contiguous().clone()
        dG = torch.empty_like(G)
        DAN = x.new_empty(dh.shape[0], H)
        DRH = x.new_empty(dh.shape[0], H)
        w_hrz, w_hn = w_hh[:2 * H], w_hh[2 * H:]
        nG, nout, nh0 = npy(G), npy(out), npy(h0)
        ndout, ndh, ndG, nDAN, nDRH = npy(dout), npy(dh), npy(dG), npy(DAN), npy(DRH)
        if plan.whole:
            grb_backward_loop(nG, nout, nh0, npy(w_hn.t().contiguous()), npy(w_hrz.t().contiguous()),
                              ndout, ndh, ndG, nDAN, nDRH, offsets, bsz, plan.reverse)
        else:
            for s in range(T):
                t = s if plan.reverse else T - 1 - s
                tp = t + 1 if plan.reverse else t - 1
                b, o0 = int(bsz[t]), int(offsets[t])
                grb_bwd_zn(nG, nout, nh0, offsets, bsz, t, tp, ndout, ndh, ndG, nDAN)
                torch.mm(DAN[:b], w_hn, out=DRH[:b])
                grb_bwd_r(nG, nout, nh0, offsets, bsz, t, tp, nDRH, ndh, ndG)
                dh[:b].addmm_(dG[o0:o0 + b, :2 * H], w_hrz)
        need = ctx.needs_input_grad
        dx, dw_ih = input_grads(dG, x, w_ih, need[1], need[3])
        dw_hh = None
        if need[4]:
            dw_hh = torch.cat([recurrent_weight_grad(dG[:, :2 * H], out, h0, offsets, bsz, plan.reverse),
                               weight_grad(dG[:, 2 * H:], RH)])
        db = dG.sum(0) if (need[5] or need[6]) else None
        return (None, dx, dh if need[2] else None, dw_ih, dw_hh,
                db if need[5] else None, db if need[6] else None)


def layer(eq, x, offsets, bsz, state0, w, reverse, save):
    from . import Plan, _call, common
    h0 = state0[0]
    plan = Plan(offsets, bsz, reverse, save, common.whole_loop(h0.shape[0], h0.shape[1], w.w_hh.shape[0]),
                eq=eq, weights_type=type(w))
    out, h = _call(GRUResetBeforeFunction, plan, x, h0, w.w_ih, w.w_hh, w.b_ih, w.b_hh)
    return out, (h,)
