"""The fused peephole LSTM: jitted step math, time loops, autograd Function.

Forward: ``G = x W_ih^T + (b_ih + b_hh)`` for all steps; per step ``G_t += h W_hh^T`` then
one pass computing i, f (peeping at c_{t-1}), g, c_t, o (peeping at c_t) and h in place
(G keeps the activations; cs keeps every c_t).  Backward: per step the gate gradients
dG_t (the carried dc gets the peephole paths too) and ``dh = dG_t W_hh``; after the loop
the weight gradients are products (or sums) over all steps.
"""
from __future__ import annotations

import torch

from ..differentiable import differentiable_backward, layer_reference, save, saved
from ._jit import njit, sigmoid, tanh
from .common import dummy, input_grads, linear, npy, prev_row, prev_states, recurrent_weight_grad
from .gemm import gemm_nt, zero_rows

# Compiled in each process, not cached on disk: for these kernels numba's cached code computes
# different last bits than a fresh compile (fresh compiles agree with each other), which would
# break bitwise determinism between a process that compiled them and one that loaded them.
# The torch.nn families' kernels do not show this and stay cached.


@njit(cache=False)
def peephole_pointwise(G, o0, b, c, h, out, cs, wci, wcf, wco, save):
    H = c.shape[1]
    for r in range(b):
        g = G[o0 + r]
        cr = c[r]
        hr = h[r]
        orow = out[o0 + r]
        for j in range(H):
            cp = cr[j]
            i = sigmoid(g[j] + wci[j] * cp)
            f = sigmoid(g[H + j] + wcf[j] * cp)
            gv = tanh(g[2 * H + j])
            cn = f * cp + i * gv
            o = sigmoid(g[3 * H + j] + wco[j] * cn)
            g[j] = i
            g[H + j] = f
            g[2 * H + j] = gv
            g[3 * H + j] = o
            cr[j] = cn
            hv = o * tanh(cn)
            hr[j] = hv
            orow[j] = hv
        if save:
            csr = cs[o0 + r]
            for j in range(H):
                csr[j] = cr[j]


@njit(cache=False)
def peephole_forward_loop(G, w_hh, c, h, out, cs, wci, wcf, wco, offsets, bsz, reverse, save):
    T = bsz.shape[0]
    H = c.shape[1]
    for s in range(T):
        t = T - 1 - s if reverse else s
        b = bsz[t]
        o0 = offsets[t]
        gemm_nt(h, 0, w_hh, G, o0, b, H, 4 * H)
        peephole_pointwise(G, o0, b, c, h, out, cs, wci, wcf, wco, save)


@njit(cache=False)
def peephole_pointwise_bwd(G, cs, c0, wci, wcf, wco, offsets, bsz, t, tp, dout, dh, dc, dG):
    """Gate gradients of step t from dh (carried) + dout and the carried dc (-> dc of c_{t-1})."""
    H = dc.shape[1]
    o0 = offsets[t]
    for r in range(bsz[t]):
        row = o0 + r
        cp = prev_row(cs, c0, offsets, bsz, tp, r)
        g = G[row]
        d = dG[row]
        cr = cs[row]
        dhr = dh[r]
        dor = dout[row]
        dcr = dc[r]
        for j in range(H):
            i = g[j]
            f = g[H + j]
            gv = g[2 * H + j]
            o = g[3 * H + j]
            tc = tanh(cr[j])
            dy = dhr[j] + dor[j]
            dao = dy * tc * (o - o * o)
            dyo = dy * o
            dcv = dcr[j] + (dyo - dyo * tc * tc) + dao * wco[j]
            dai = dcv * gv * (i - i * i)
            daf = dcv * cp[j] * (f - f * f)
            dci = dcv * i
            d[j] = dai
            d[H + j] = daf
            d[2 * H + j] = dci - dci * gv * gv
            d[3 * H + j] = dao
            dcr[j] = dcv * f + dai * wci[j] + daf * wcf[j]


@njit(cache=False)
def peephole_backward_loop(G, cs, c0, wci, wcf, wco, w_hh_t, dout, dh, dc, dG, offsets, bsz, reverse):
    T = bsz.shape[0]
    H = dc.shape[1]
    for s in range(T):
        t = s if reverse else T - 1 - s
        tp = t + 1 if reverse else t - 1
        b = bsz[t]
        peephole_pointwise_bwd(G, cs, c0, wci, wcf, wco, offsets, bsz, t, tp, dout, dh, dc, dG)
        zero_rows(dh, b)
        gemm_nt(dG, offsets[t], w_hh_t, dh, 0, b, 4 * H, H)


class PeepholeLSTMFunction(torch.autograd.Function):
    """One peephole-LSTM layer-direction over packed input; see the module docstring."""

    @staticmethod
    def forward(ctx, plan, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_ci, w_cf, w_co):
        offsets, bsz, T = plan.offsets, plan.bsz, plan.steps
        H = c0.shape[1]
        G = linear(x, w_ih, b_ih, b_hh)  # (N, 4H): pre-activations, then activations
        h = h0.clone()
        c = c0.clone()
        out = x.new_empty(x.shape[0], H)
        cs = x.new_empty(x.shape[0], H) if plan.save else dummy(x)
        nG, nc, nh, nout, ncs = npy(G), npy(c), npy(h), npy(out), npy(cs)
        peep = (npy(w_ci), npy(w_cf), npy(w_co))
        if plan.whole:
            peephole_forward_loop(nG, npy(w_hh), nc, nh, nout, ncs, *peep, offsets, bsz, plan.reverse, plan.save)
        else:
            whh_t = w_hh.t()
            for s in range(T):
                t = T - 1 - s if plan.reverse else s
                b, o0 = int(bsz[t]), int(offsets[t])
                G[o0:o0 + b].addmm_(h[:b], whh_t)
                peephole_pointwise(nG, o0, b, nc, nh, nout, ncs, *peep, plan.save)
        if plan.save:
            save(ctx, plan, (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_ci, w_cf, w_co), (out, G, cs))
        return out, h, c

    @staticmethod
    @differentiable_backward(layer_reference)
    def backward(ctx, dout, dhN, dcN):
        plan = ctx.plan
        (x, h0, c0, w_ih, w_hh, _, _, w_ci, w_cf, w_co), (out, G, cs) = saved(ctx)
        offsets, bsz, T = plan.offsets, plan.bsz, plan.steps
        H = c0.shape[1]
        dout = dout.contiguous()
        dh = dhN.contiguous().clone()
        dc = dcN.contiguous().clone()
        dG = torch.empty_like(G)
        args = (npy(G), npy(cs), npy(c0), npy(w_ci), npy(w_cf), npy(w_co))
        if plan.whole:
            peephole_backward_loop(*args, npy(w_hh.t().contiguous()), npy(dout), npy(dh), npy(dc), npy(dG),
                                   offsets, bsz, plan.reverse)
        else:
            ndout, ndh, ndc, ndG = npy(dout), npy(dh), npy(dc), npy(dG)
            for s in range(T):
                t = s if plan.reverse else T - 1 - s
                tp = t + 1 if plan.reverse else t - 1
                b, o0 = int(bsz[t]), int(offsets[t])
                peephole_pointwise_bwd(*args, offsets, bsz, t, tp, ndout, ndh, ndc, ndG)
                torch.mm(dG[o0:o0 + b], w_hh, out=dh[:b])
        need = ctx.needs_input_grad
        dx, dw_ih = input_grads(dG, x, w_ih, need[1], need[4])
        dw_hh = recurrent_weight_grad(dG, out, h0, offsets, bsz, plan.reverse) if need[5] else None
        db = dG.sum(0) if (need[6] or need[7]) else None
        dw_ci = dw_cf = dw_co = None
        if need[8] or need[9]:
            c_prev = prev_states(cs, c0, offsets, bsz, plan.reverse)  # the c_{t-1} each step read
            dw_ci = (dG[:, :H] * c_prev).sum(0)
            dw_cf = (dG[:, H:2 * H] * c_prev).sum(0)
        if need[10]:
            dw_co = (dG[:, 3 * H:] * cs).sum(0)
        return (None, dx, dh if need[2] else None, dc if need[3] else None, dw_ih, dw_hh,
                db if need[6] else None, db if need[7] else None, dw_ci, dw_cf, dw_co)


def layer(eq, x, offsets, bsz, state0, w, reverse, save):
    from . import Plan, _call, common
    h0, c0 = state0
    plan = Plan(offsets, bsz, reverse, save, common.whole_loop(h0.shape[0], h0.shape[1], w.w_hh.shape[0]),
                eq=eq, weights_type=type(w))
    out, h, c = _call(PeepholeLSTMFunction, plan, x, h0, c0, w.w_ih, w.w_hh, w.b_ih, w.b_hh,
                      w.w_ci, w.w_cf, w.w_co)
    return out, (h, c)
