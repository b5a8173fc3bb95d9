"""The int8 GRU time loop, whole in one jitted call.

Per step t (rows of the step: b = batch_sizes[t], from packed row o0), with G the hoisted input
projection ``G = x W_ih^T + b_ih + (b_hr, b_hz, 0)`` (N, 3H), computed before the loop:

    A = h_{t-1} W_hh^T + (0, 0, b_hn)     int8 x int8 on VNNI (int8_vnni.py: h quantized per row
                                           at every step), else int8 weights x float h (int8_gemm.py)
    r = sigma(G_r + A_r),  z = sigma(G_z + A_z),  n = tanh(G_n + r A_n)
    h_t = (1 - z) n + z h_{t-1}

b_hn stays on the recurrent side because the reset gate multiplies it.  The gate math is the
float kernel's own step (kernels/cpu/gru.py: ``gru_pointwise``).

    ===========  =============  ==========================================
    G            (N, 3H)        float32, pre-activations in (overwritten)
    w_hh, s_hh   (3H, H), (3H,)  int8 values, float32 per-row scales
    b_hn         (H,)           the n block of b_hh (unused without bias)
    A            (B, 3H)        scratch: one step's recurrent side
    h            (B, H)         the state: h_0 in, h_n out
    out          (N, H)         every step's h, in packed row order
    ===========  =============  ==========================================
"""
from __future__ import annotations

from ..kernels.cpu._jit import njit
from ..kernels.cpu.gemm import zero_rows
from ..kernels.cpu.gru import gru_pointwise
from .int8_gemm import int8_gemm_nt
from .int8_vnni import vnni_product


@njit
def gru_int8_forward(offsets, bsz, lo, hi, G, w_hh, s_hh, b_hn, A, unused, h, out, reverse, has_bias):
    """The loop over the batch rows lo..hi (laid out by offsets, bsz: kernels/cpu/split.py), so that
    threads can each run it on their own rows (split.run_rows)."""
    h, A = h[lo:hi], A[lo:hi]  # (views: the chunk's rows of the state and the scratch)
    T = bsz.shape[0]
    H = h.shape[1]
    for s in range(T):
        t = T - 1 - s if reverse else s
        b = bsz[t]
        o0 = offsets[t]
        zero_rows(A, b)
        int8_gemm_nt(h, 0, w_hh, s_hh, A, 0, b, H, 3 * H)
        if has_bias:
            for r in range(b):
                for j in range(H):
                    A[r, 2 * H + j] += b_hn[j]
        gru_pointwise(G, A, unused, o0, b, H, h, out, False)


@njit
def gru_vnni_forward(offsets, bsz, G, w_hh, s_hh, z_hh, b_hn, A, unused, h, out, hq, sx, acc, reverse, has_bias):
    """As gru_int8_forward with the VNNI product: w_hh in VNNI layout, z_hh its zero-point sums (see
    int8_vnni.py); hq (B, kp of H), sx (B,), acc (B, 3H rounded up to 4): scratch."""
    T = bsz.shape[0]
    H = h.shape[1]
    for s in range(T):
        t = T - 1 - s if reverse else s
        b = bsz[t]
        o0 = offsets[t]
        zero_rows(A, b)
        vnni_product(h, hq, sx, w_hh, s_hh, z_hh, acc, A, 0, b, H)
        if has_bias:
            for r in range(b):
                for j in range(H):
                    A[r, 2 * H + j] += b_hn[j]
        gru_pointwise(G, A, unused, o0, b, H, h, out, False)


__all__ = ["gru_int8_forward", "gru_vnni_forward"]
