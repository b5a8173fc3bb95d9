"""The int8 LSTM time loop (with and without projection), whole in one jitted call.

Per step t (rows of the step: b = batch_sizes[t], from packed row o0), with G the hoisted input
projection ``G = x W_ih^T + b_ih + b_hh`` (N, 4H), computed before the loop in one product:

    G_t += h_{t-1} W_hh^T            int8 x int8 on VNNI (int8_vnni.py: h quantized per row at
                                       every step), else int8 weights x float h (int8_gemm.py)
    i, f, g, o = sigma, sigma, tanh, sigma of G_t's four blocks
    c_t = f c_{t-1} + i g
    h_t = o tanh(c_t)                  or, with proj_size P > 0, h_t = (o tanh(c_t)) W_hr^T (int8)

The gate math is the float kernel's own step (kernels/cpu/lstm.py: ``lstm_pointwise``), so the
LSTM's equations stay written once for the CPU.

    ===========  ===========  ==========================================
    G            (N, 4H)      float32, pre-activations in, activations out
    w_hh, s_hh   (4H, P), (4H,)  int8 values, float32 per-row scales
    w_hr, s_hr   (P, H), (P,)    the projection (a (1, 1) stand-in without)
    h, c         (B, P), (B, H)  the state: h_0, c_0 in, h_n, c_n out
    m            (B, H)       o tanh(c) before the projection (h itself without)
    out          (N, P)       every step's h, in packed row order
    ===========  ===========  ==========================================
"""
from __future__ import annotations

from ..kernels.cpu._jit import njit
from ..kernels.cpu.gemm import zero_rows
from ..kernels.cpu.lstm import lstm_pointwise
from .int8_gemm import int8_gemm_nt
from .int8_vnni import vnni_product


@njit
def lstm_int8_forward(offsets, bsz, lo, hi, G, w_hh, s_hh, w_hr, s_hr, h, c, m, unused, out, reverse, proj):
    """The loop over the batch rows lo..hi (laid out by offsets, bsz: kernels/cpu/split.py), so that
    threads can each run it on their own rows (split.run_rows)."""
    h, c, m = h[lo:hi], c[lo:hi], m[lo:hi]  # (views: the chunk's rows of the states and the scratch)
    T = bsz.shape[0]
    H = c.shape[1]
    P = h.shape[1]
    for s in range(T):
        t = T - 1 - s if reverse else s
        b = bsz[t]
        o0 = offsets[t]
        int8_gemm_nt(h, 0, w_hh, s_hh, G, o0, b, P, 4 * H)
        lstm_pointwise(G, o0, b, H, c, unused, m, False)  # m = o tanh(c); m is h without projection
        if proj:
            zero_rows(h, b)
            int8_gemm_nt(m, 0, w_hr, s_hr, h, 0, b, H, P)
        for r in range(b):
            for p in range(P):
                out[o0 + r, p] = h[r, p]


@njit
def lstm_vnni_forward(offsets, bsz, G, w_hh, s_hh, z_hh, w_hr, s_hr, z_hr, h, c, m, unused, out, hq, mq, sx, acc,
                      acc_r, reverse, proj):
    """As lstm_int8_forward with the VNNI product: w_* in VNNI layout, z_* their zero-point sums (see
    int8_vnni.py); hq (B, kp of P), mq (B, kp of H), sx (B,), acc (B, 4H), acc_r (B, P rounded up to 4):
    scratch."""
    T = bsz.shape[0]
    H = c.shape[1]
    P = h.shape[1]
    for s in range(T):
        t = T - 1 - s if reverse else s
        b = bsz[t]
        o0 = offsets[t]
        vnni_product(h, hq, sx, w_hh, s_hh, z_hh, acc, G, o0, b, P)
        lstm_pointwise(G, o0, b, H, c, unused, m, False)
        if proj:
            zero_rows(h, b)
            vnni_product(m, mq, sx, w_hr, s_hr, z_hr, acc_r, h, 0, b, H)
        for r in range(b):
            for p in range(P):
                out[o0 + r, p] = h[r, p]


__all__ = ["lstm_int8_forward", "lstm_vnni_forward"]
