"""The fused layer-normalised GRU: jitted step math, time loops, autograd Function.

The input side ``gx = LN(x W_ih^T; gamma_ih, b_ih)`` is the equations' ``project``, done by
torch for all steps before the loop (its backward is torch's too).  Per step:
``WH = h W_hh^T``, then one pass per row normalising WH (XH keeps the normalised rows, RS
the inverse deviations) into u = gamma_hh XH + b_hh, and r, z, n and h as torch.nn's GRU
with u for the recurrent side (G keeps r, z, n).  Backward: per step the gate gradients
(dG = d gx; du = d u, one row at a time), the column sums of du and du XH (d b_hh, d gamma_hh),
the layer norm's backward (DWH = d W_hh h) and ``dh = z dh' + DWH_t W_hh``; after the loop
W_hh's gradient as one product over all steps.
"""
from __future__ import annotations

import numpy as np
import torch

from ...cells.layernorm_gru import LayerNormGRUWeights
from ...cells.layernorm_lstm import LN_EPS
from .. import differentiable as diff
from ._jit import njit, sigmoid, tanh
from .common import npy, prev_row, recurrent_weight_grad
from .gemm import gemm_nt, zero_rows
from .layer_norm import norm_row, norm_row_bwd

# Compiled in each process, not cached on disk: for these kernels numba's cached code computes
# different last bits than a fresh compile (fresh compiles agree with each other), which would
# break bitwise determinism between a process that compiled them and one that loaded them.
# The torch.nn families' kernels do not show this and stay cached.


@njit(cache=False)
def lngru_pointwise(G, WH, o0, b, h, out, XH, RS, gamma_hh, b_hh, eps, save):
    """Rows o0..o0+b: G (gx) -> r, z, n; h updated; WH (rows 0..b) = W_hh h of the step.
    eps: layer norm's epsilon (float64, as the layer norm computes: see layer_norm.py)."""
    H = h.shape[1]
    G3 = 3 * H
    for r in range(b):
        row = o0 + r
        wh = WH[r]
        g = G[row]
        xh = XH[row] if save else XH[0]
        rs = norm_row(wh, xh, G3, eps)
        hr = h[r]
        orow = out[row]
        for j in range(H):
            rg = sigmoid(g[j] + gamma_hh[j] * xh[j] + b_hh[j])
            z = sigmoid(g[H + j] + gamma_hh[H + j] * xh[H + j] + b_hh[H + j])
            un = gamma_hh[2 * H + j] * xh[2 * H + j] + b_hh[2 * H + j]
            n = tanh(g[2 * H + j] + rg * un)
            g[j] = rg
            g[H + j] = z
            g[2 * H + j] = n
            hv = (hr[j] - n) * z + n
            hr[j] = hv
            orow[j] = hv
        if save:
            RS[row] = rs


@njit(cache=False)
def lngru_forward_loop(G, w_hh, WH, h, out, XH, RS, gamma_hh, b_hh, eps, offsets, bsz, reverse, save):
    T = bsz.shape[0]
    H = h.shape[1]
    for s in range(T):
        t = T - 1 - s if reverse else s
        b = bsz[t]
        zero_rows(WH, b)
        gemm_nt(h, 0, w_hh, WH, 0, b, H, 3 * H)
        lngru_pointwise(G, WH, offsets[t], b, h, out, XH, RS, gamma_hh, b_hh, eps, save)


@njit(cache=False)
def lngru_pointwise_bwd(G, XH, RS, out, h0, gamma_hh, b_hh, offsets, bsz, t, tp, dout, dh, dG, du, DWH, sums):
    """Step t: dG (= d gx), DWH (= d W_hh h); dh becomes z dh' (DWH W_hh is added after).

    du: one row of scratch (d u).  sums (float64, 2 rows of 3H): the column sums over all steps of
    du * XH (d gamma_hh) and du (d b_hh), accumulated here, where the rows are at hand.  In float64,
    as the layer norm (layer_norm.py): a product of two float32 values is exact there, so these
    gradients are rounded once, when the Function hands them back, and do not depend on the order
    the vector lanes add them in."""
    H = dh.shape[1]
    G3 = 3 * H
    s_uxh, s_u = sums[0], sums[1]
    o0 = offsets[t]
    for r in range(bsz[t]):
        row = o0 + r
        hp = prev_row(out, h0, offsets, bsz, tp, r)
        g = G[row]
        xh = XH[row]
        d = dG[row]
        dhr = dh[r]
        dor = dout[row]
        for j in range(H):
            rg = g[j]
            z = g[H + j]
            n = g[2 * H + j]
            dy = dhr[j] + dor[j]
            dn = dy - dy * z
            dan = dn - dn * n * n
            un = gamma_hh[2 * H + j] * xh[2 * H + j] + b_hh[2 * H + j]
            dar = dan * un * (rg - rg * rg)
            daz = dy * (hp[j] - n) * (z - z * z)
            d[j] = dar
            d[H + j] = daz
            d[2 * H + j] = dan
            du[j] = dar
            du[H + j] = daz
            du[2 * H + j] = dan * rg
            dhr[j] = dy * z
        for j in range(G3):
            s_uxh[j] += np.float64(du[j]) * np.float64(xh[j])
            s_u[j] += np.float64(du[j])
        norm_row_bwd(du, gamma_hh, xh, RS[row], DWH[row], G3)


@njit(cache=False)
def lngru_backward_loop(G, XH, RS, out, h0, gamma_hh, b_hh, w_hh_t, dout, dh, dG, du, DWH, sums, offsets, bsz,
                        reverse):
    T = bsz.shape[0]
    H = dh.shape[1]
    for s in range(T):
        t = s if reverse else T - 1 - s
        tp = t + 1 if reverse else t - 1
        lngru_pointwise_bwd(G, XH, RS, out, h0, gamma_hh, b_hh, offsets, bsz, t, tp, dout, dh, dG, du, DWH, sums)
        gemm_nt(DWH, offsets[t], w_hh_t, dh, 0, bsz[t], 3 * H, H)


def _reference(plan, gx, h0, w_hh, b_hh, gamma_hh, x, w_ih, b_ih, gamma_ih):
    """LayerNormGRUFunction's outputs recomputed from x (the Function writes over gx), for a backward
    that must be differentiable: gradients for gx, h0 and the recurrent weights; none for x and the
    projection's weights, whose gradients flow through gx's own graph."""
    weights = LayerNormGRUWeights(w_ih, w_hh, b_ih, b_hh, gamma_ih, gamma_hh)
    result = diff.projected_reference(plan, gx, (h0,), x, weights)
    return diff.Recomputed(result.outputs, result.wrt + [w_hh, b_hh, gamma_hh, None, None, None, None])


class LayerNormGRUFunction(torch.autograd.Function):
    """The recurrence of one layer-normalised GRU layer-direction, from gx; see the module docstring."""

    @staticmethod
    def forward(ctx, plan, gx, h0, w_hh, b_hh, gamma_hh, x, w_ih, b_ih, gamma_ih):
        # x and the projection's weights: read only by the backward that recomputes (see _reference)
        offsets, bsz, T = plan.offsets, plan.bsz, plan.steps
        N, H = gx.shape[0], h0.shape[1]
        save = plan.save
        # gx is layer()'s own intermediate, read by nothing else (layer norm's backward keeps its input,
        # not its output), so the activations are written over it: no copy of (N, 3H).
        G = gx.detach()  # (N, 3H): gx, then the gate activations
        h = h0.clone()
        out = gx.new_empty(N, H)
        WH = gx.new_empty(h.shape[0], 3 * H)
        XH = gx.new_empty(N, 3 * H) if save else gx.new_empty(1, 3 * H)
        # the inverse deviations in float64, as the layer norm computes them (layer_norm.py)
        RS = gx.new_empty(N if save else 1, dtype=torch.float64)
        bh = b_hh if b_hh is not None else gx.new_zeros(3 * H)
        nG, nWH = npy(G), npy(WH)
        rest = (npy(h), npy(out), npy(XH), npy(RS), npy(gamma_hh), npy(bh), LN_EPS)
        if plan.whole:
            lngru_forward_loop(nG, npy(w_hh), nWH, *rest, offsets, bsz, plan.reverse, save)
        else:
            whh_t = w_hh.t()
            for s in range(T):
                t = T - 1 - s if plan.reverse else s
                b, o0 = int(bsz[t]), int(offsets[t])
                torch.mm(h[:b], whh_t, out=WH[:b])
                lngru_pointwise(nG, nWH, o0, b, *rest, save)
        if save:
            diff.save(ctx, plan, (gx, h0, w_hh, b_hh, gamma_hh, x, w_ih, b_ih, gamma_ih), (bh, out, G, XH, RS))
        return out, h

    @staticmethod
    @diff.differentiable_backward(_reference)
    def backward(ctx, dout, dhN):
        plan = ctx.plan
        (_, h0, w_hh, _, gamma_hh, *_), (bh, out, G, XH, RS) = diff.saved(ctx)
        offsets, bsz, T = plan.offsets, plan.bsz, plan.steps
        dout = dout.contiguous()
        dh = dhN.contiguous().clone()
        dG = torch.empty_like(G)
        du = np.empty(G.shape[1], dtype=npy(G).dtype)  # scratch: d u of one row
        DWH = torch.empty_like(G)
        sums = np.zeros((2, G.shape[1]), dtype=np.float64)  # see lngru_pointwise_bwd
        args = (npy(G), npy(XH), npy(RS), npy(out), npy(h0), npy(gamma_hh), npy(bh))
        if plan.whole:
            lngru_backward_loop(*args, npy(w_hh.t().contiguous()), npy(dout), npy(dh), npy(dG), du,
                                npy(DWH), sums, offsets, bsz, plan.reverse)
        else:
            ndout, ndh, ndG, nDWH = npy(dout), npy(dh), npy(dG), npy(DWH)
            for s in range(T):
                t = s if plan.reverse else T - 1 - s
                tp = t + 1 if plan.reverse else t - 1
                b, o0 = int(bsz[t]), int(offsets[t])
                lngru_pointwise_bwd(*args, offsets, bsz, t, tp, ndout, ndh, ndG, du, nDWH, sums)
                dh[:b].addmm_(DWH[o0:o0 + b], w_hh)
        need = ctx.needs_input_grad
        dw_hh = recurrent_weight_grad(DWH, out, h0, offsets, bsz, plan.reverse) if need[3] else None
        sums = torch.from_numpy(sums).to(G.dtype)
        db_hh = sums[1] if need[4] else None
        dgamma_hh = sums[0] if need[5] else None
        return None, dG if need[1] else None, dh if need[2] else None, dw_hh, db_hh, dgamma_hh, None, None, None, None


def layer(eq, x, offsets, bsz, state0, w, reverse, save):
    from . import Plan, _call, common
    h0 = state0[0]
    gx = eq.project(x, w).contiguous()  # (N, 3H): LN(x W_ih^T; gamma_ih, b_ih); the Function writes over it
    plan = Plan(offsets, bsz, reverse, save, common.whole_loop(h0.shape[0], h0.shape[1], w.w_hh.shape[0]), eq=eq)
    out, h = _call(LayerNormGRUFunction, plan, gx, h0, w.w_hh, w.b_hh, w.gamma_hh, x, w.w_ih, w.b_ih, w.gamma_ih)
    return out, (h,)
