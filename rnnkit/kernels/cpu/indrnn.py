"""The fused IndRNN (relu or tanh): jitted time loops, autograd Function.

Forward: ``G = x W_ih^T + b_ih`` for all steps; per step ``h = act(G_t + u * h)``: an
elementwise recurrence, so the whole loop always runs in one jitted call (no product
inside).  Backward: per step ``dA = dh' act'(h')``, ``du += dA h`` and ``dh = u dA``;
dx and dW_ih after the loop as products over all steps.
"""
from __future__ import annotations

import torch

from ...cells import INDRNN_RELU
from ..differentiable import differentiable_backward, layer_reference, save, saved
from ._jit import njit, tanh
from .common import input_grads, linear, npy, prev_row


@njit
def indrnn_forward_loop(G, u, h, out, offsets, bsz, reverse, relu):
    T = bsz.shape[0]
    H = h.shape[1]
    for s in range(T):
        t = T - 1 - s if reverse else s
        o0 = offsets[t]
        for r in range(bsz[t]):
            g = G[o0 + r]
            hr = h[r]
            orow = out[o0 + r]
            if relu:
                for j in range(H):
                    a = g[j] + u[j] * hr[j]
                    v = max(a, a * 0)
                    hr[j] = v
                    orow[j] = v
            else:
                for j in range(H):
                    v = tanh(g[j] + u[j] * hr[j])
                    hr[j] = v
                    orow[j] = v


@njit
def indrnn_backward_loop(out, h0, u, dout, dh, dA, du, offsets, bsz, reverse, relu):
    """dA (the gradient of the pre-activation, all steps), du (summed) and dh (to h0)."""
    T = bsz.shape[0]
    H = dh.shape[1]
    for s in range(T):
        t = s if reverse else T - 1 - s
        tp = t + 1 if reverse else t - 1
        o0 = offsets[t]
        for r in range(bsz[t]):
            hp = prev_row(out, h0, offsets, bsz, tp, r)
            y = out[o0 + r]
            dy = dout[o0 + r]
            dhr = dh[r]
            da = dA[o0 + r]
            for j in range(H):
                d = dhr[j] + dy[j]
                if relu:
                    a = d if y[j] > 0 else d * 0
                else:
                    a = d - d * y[j] * y[j]
                da[j] = a
                du[j] += a * hp[j]
                dhr[j] = a * u[j]


class IndRNNFunction(torch.autograd.Function):
    """One IndRNN layer-direction over packed input; see the module docstring."""

    @staticmethod
    def forward(ctx, plan, x, h0, w_ih, u, b_ih):
        G = linear(x, w_ih, b_ih)
        h = h0.clone()
        out = x.new_empty(x.shape[0], h0.shape[1])
        indrnn_forward_loop(npy(G), npy(u), npy(h), npy(out), plan.offsets, plan.bsz, plan.reverse, plan.relu)
        if plan.save:
            save(ctx, plan, (x, h0, w_ih, u, b_ih), (out,))
        return out, h

    @staticmethod
    @differentiable_backward(layer_reference)
    def backward(ctx, dout, dhN):
        plan = ctx.plan
        (x, h0, w_ih, u, _), (out,) = saved(ctx)
        dout = dout.contiguous()
        dh = dhN.contiguous().clone()
        dA = torch.empty_like(out)
        du = torch.zeros_like(u)
        indrnn_backward_loop(npy(out), npy(h0), npy(u), npy(dout), npy(dh), npy(dA), npy(du),
                             plan.offsets, plan.bsz, plan.reverse, plan.relu)
        need = ctx.needs_input_grad
        dx, dw_ih = input_grads(dA, x, w_ih, need[1], need[3])
        db = dA.sum(0) if need[5] else None
        return None, dx, dh if need[2] else None, dw_ih, du if need[4] else None, db


def layer(eq, x, offsets, bsz, state0, w, reverse, save):
    from . import Plan, _call
    plan = Plan(offsets, bsz, reverse, save, True, relu=eq is INDRNN_RELU, eq=eq, weights_type=type(w))
    out, h = _call(IndRNNFunction, plan, x, state0[0], w.w_ih, w.w_hh, w.b_ih)
    return out, (h,)
