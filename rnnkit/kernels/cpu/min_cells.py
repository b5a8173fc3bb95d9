"""The fused minGRU and minLSTM (Feng et al. 2024): one product, then an elementwise time loop.

Their gates read x_t alone, so the step is the linear recurrence ``h_t = a_t h_{t-1} + b_t``
with a_t, b_t functions of the step's input projection only.  Forward: ``G = x W_ih^T + b_ih``
for all steps, then one jitted loop computing a_t, b_t and h_t in a single pass (no product
inside the loop, unlike the GRU).  Backward: one reverse loop recomputing a_t, b_t from G,
giving dG_t (the gradient of the pre-activations) and the carried dh; then dx, dW_ih and
db as products and sums over all steps.

This is the sequential form of the scan in rnnkit/kernels/parallel_scan.py: on the CPU it does
O(T B H) simple arithmetic where the scan needs a logarithm, an exponential and a cumulative
log-sum-exp per element, so it is the faster one there.  The gates follow the cells' own
(streaming) step, rnnkit/cells/min_gru.py and min_lstm.py:

    minGRU:  a = 1 - z = sigmoid(-k_z),  b = z g(k_h),                       gates (z, h~)
    minLSTM: d = logsigmoid(k_i) - logsigmoid(k_f),  a = f' = sigmoid(-d),
             b = i' g(k_h) with i' = sigmoid(d),                              gates (f, i, h~)

with g(v) = v + 0.5 for v >= 0, sigmoid(v) otherwise.
"""
from __future__ import annotations

import numpy as np
import torch

from ...cells import MIN_LSTM
from ..differentiable import differentiable_backward, layer_reference, save, saved
from ._jit import const_of, njit, sigmoid
from .common import input_grads, linear, npy, prev_row


@njit
def log_sigmoid(v):
    """log sigmoid(v) = min(v, 0) - log(1 + exp(-|v|)), without overflow either way."""
    return min(v, const_of(v, 0)) - np.log1p(np.exp(-abs(v)))


@njit
def g_of(v, s):
    """g(v) = v + 0.5 for v >= 0, sigmoid(v) (= s, computed by the caller) below; a select, no branch."""
    return v + const_of(v, 0.5) if v >= 0 else s


@njit
def min_gru_row(g, hr, orow, H):
    for j in range(H):
        kz = g[j]
        kh = g[H + j]
        a = sigmoid(-kz)  # 1 - z, without the cancellation of 1 - sigmoid(k_z)
        b = sigmoid(kz) * g_of(kh, sigmoid(kh))  # z h~
        v = a * hr[j] + b
        hr[j] = v
        orow[j] = v


@njit
def min_lstm_row(g, hr, orow, H):
    for j in range(H):
        kh = g[2 * H + j]
        d = log_sigmoid(g[H + j]) - log_sigmoid(g[j])  # log i - log f
        a = sigmoid(-d)  # f'
        b = sigmoid(d) * g_of(kh, sigmoid(kh))  # i' h~
        v = a * hr[j] + b
        hr[j] = v
        orow[j] = v


@njit
def min_gru_row_bwd(g, hp, dy, dhr, dg, H):
    for j in range(H):
        kz = g[j]
        kh = g[H + j]
        dv = dhr[j] + dy[j]  # dL/dh_t
        z = sigmoid(kz)
        omz = sigmoid(-kz)
        s = sigmoid(kh)
        gt = g_of(kh, s)
        slope = const_of(s, 1) if kh >= 0 else s - s * s  # g'(k_h)
        dg[j] = z * omz * dv * (gt - hp[j])
        dg[H + j] = dv * z * slope
        dhr[j] = dv * omz


@njit
def min_lstm_row_bwd(g, hp, dy, dhr, dg, H):
    for j in range(H):
        kf = g[j]
        ki = g[H + j]
        kh = g[2 * H + j]
        dv = dhr[j] + dy[j]  # dL/dh_t
        d = log_sigmoid(ki) - log_sigmoid(kf)
        fp = sigmoid(-d)
        ip = sigmoid(d)
        s = sigmoid(kh)
        gt = g_of(kh, s)
        slope = const_of(s, 1) if kh >= 0 else s - s * s
        dd = fp * ip * dv * (gt - hp[j])  # through f' = sigmoid(-d) and i' = sigmoid(d)
        dg[j] = -dd * sigmoid(-kf)  # d logsigmoid(k) / dk = sigmoid(-k)
        dg[H + j] = dd * sigmoid(-ki)
        dg[2 * H + j] = dv * ip * slope
        dhr[j] = dv * fp


@njit
def min_forward_loop(G, h, out, offsets, bsz, reverse, lstm):
    T = bsz.shape[0]
    H = h.shape[1]
    for s in range(T):
        t = T - 1 - s if reverse else s
        o0 = offsets[t]
        for r in range(bsz[t]):
            if lstm:
                min_lstm_row(G[o0 + r], h[r], out[o0 + r], H)
            else:
                min_gru_row(G[o0 + r], h[r], out[o0 + r], H)


@njit
def min_backward_loop(G, out, h0, dout, dh, dG, offsets, bsz, reverse, lstm):
    """dG (the pre-activations' gradient, all steps) and dh (carried back to h0)."""
    T = bsz.shape[0]
    H = dh.shape[1]
    for s in range(T):
        t = s if reverse else T - 1 - s
        tp = t + 1 if reverse else t - 1
        o0 = offsets[t]
        for r in range(bsz[t]):
            hp = prev_row(out, h0, offsets, bsz, tp, r)
            if lstm:
                min_lstm_row_bwd(G[o0 + r], hp, dout[o0 + r], dh[r], dG[o0 + r], H)
            else:
                min_gru_row_bwd(G[o0 + r], hp, dout[o0 + r], dh[r], dG[o0 + r], H)


class MinCellFunction(torch.autograd.Function):
    """One minGRU / minLSTM layer-direction over packed input; see the module docstring."""

    @staticmethod
    def forward(ctx, plan, x, h0, w_ih, b_ih):
        lstm = plan.eq is MIN_LSTM
        G = linear(x, w_ih, b_ih)  # (N, 2H) minGRU, (N, 3H) minLSTM: pre-activations, kept as they are
        h = h0.clone()
        out = x.new_empty(x.shape[0], h0.shape[1])  # (N, H)
        min_forward_loop(npy(G), npy(h), npy(out), plan.offsets, plan.bsz, plan.reverse, lstm)
        if plan.save:
            save(ctx, plan, (x, h0, w_ih, b_ih), (G, out))
        return out, h

    @staticmethod
    @differentiable_backward(layer_reference)
    def backward(ctx, dout, dhN):
        plan = ctx.plan
        (x, h0, w_ih, b_ih), (G, out) = saved(ctx)
        dout = dout.contiguous()
        dh = dhN.contiguous().clone()
        dG = torch.empty_like(G)
        min_backward_loop(npy(G), npy(out), npy(h0), npy(dout), npy(dh), npy(dG),
                          plan.offsets, plan.bsz, plan.reverse, plan.eq is MIN_LSTM)
        need = ctx.needs_input_grad
        dx, dw_ih = input_grads(dG, x, w_ih, need[1], need[3])
        db = dG.sum(0) if b_ih is not None and need[4] else None
        return None, dx, dh if need[2] else None, dw_ih, db


def layer(eq, x, offsets, bsz, state0, w, reverse, save):
    from . import Plan, _call
    plan = Plan(offsets, bsz, reverse, save, True, eq=eq, weights_type=type(w))
    out, h = _call(MinCellFunction, plan, x, state0[0], w.w_ih, w.b_ih)
    return out, (h,)
