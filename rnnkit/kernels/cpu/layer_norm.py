"""Layer norm of one row and its backward, for the fused layer-normalised cells (LSTM and GRU).

Both compute in float64 whatever the arrays' dtype, and round each result once, when storing it.
In float32 a row's sums (mean and variance; the backward's sums of dy gamma and dy gamma xn) round
in an order set by the vector width numba compiles for (with fastmath a sum is split over the
lanes: 16 with AVX-512 on AMD, 8 on Intel, whose LLVM tuning prefers 256-bit vectors, 8 with AVX2),
and a layer norm over few features amplifies those errors, as does the backward's cancellation
``dy gamma - mean(dy gamma) - xn mean(dy gamma xn)``.  A product of two float32 values is exact in
float64 and a float64 sum of a few thousand of them is good to ~1e-13, far below a float32 ulp: xn
and dv are the exact values of their float32 inputs rounded once (bar near-ties), on every codegen.
Measured on the tests' layer-norm cells (tests/kernels/test_fused_cells.py's configurations, 60 seeds,
4 codegen and BLAS environments): the fused kernels' float32 error had been 4-15% above torch's float32
reference's (geometric mean of the ratio over 9000 results per environment), now 1% below to 8%
above.  The cost is half-width vectors in two short loops per row each way (a row of 256: 38 -> 82 ns
forward, 55 -> 122 ns backward).  Measured side by side in one process (fwd+bwd of one layer, median
of 61 runs, three rounds, at the benchmark's (T, B, I, H)): the layer-norm LSTM 1.5-3% faster at
(100, 1, 32, 32) (its parameter sums now go to float64 directly, without per-step float32 sums to
flush), 1.5-5.5% slower at (200, 16, 64, 64), -0.6% to +3.7% at (100, 32, 256, 256); the layer-norm
GRU 2-10% faster (its parameter sums no longer need the (N, 3H) product DU * XH).

Compiled per process like the kernels that call them (``cache=False``, see layernorm_lstm.py):
a cached callee linked into a freshly compiled caller is the mix that gave other last bits.
"""
from __future__ import annotations

import numpy as np

from ._jit import njit


@njit(cache=False)
def norm_row(v, xn, n, eps):
    """xn[:n] = (v - mean(v)) / sqrt(var(v) + eps) over v[:n]; returns 1 / sqrt(var(v) + eps) in float64.

    One pass over v for both moments, taken about v[0]: var = E[(v - v0)^2] - (mean - v0)^2 cancels
    by the factor 1 + (v0 - mean)^2 / var, which is at most n (no element of a row lies further than
    sqrt(n - 1) deviations from its mean), so var keeps a relative error below ~n 2^-53, far under a
    float32 rounding.  Measured: 15-45% faster than two passes (mean, then squared deviations) at
    n = 32..1024, the same bits on the rows tried."""
    v0 = np.float64(v[0])
    s = 0.0
    ss = 0.0
    for j in range(n):
        dev = np.float64(v[j]) - v0
        s += dev
        ss += dev * dev
    shift = s / n  # mean - v0
    mu = v0 + shift
    rs = 1.0 / np.sqrt(max(ss / n - shift * shift, 0.0) + eps)
    for j in range(n):
        xn[j] = (np.float64(v[j]) - mu) * rs
    return rs


@njit(cache=False)
def norm_row_bwd(dy, gamma, xn, rs, dv, n):
    """dv[:n] = the gradient of v through gamma * LN(v), from dy (the gradient of gamma * LN(v) + beta),
    xn = LN(v) and rs = 1 / sqrt(var(v) + eps).  dv may be dy itself (each dy[j] is read before
    dv[j] is written)."""
    s1 = 0.0
    s2 = 0.0
    for j in range(n):
        dx = np.float64(dy[j]) * np.float64(gamma[j])
        s1 += dx
        s2 += dx * np.float64(xn[j])
    m1 = s1 / n
    m2 = s2 / n
    for j in range(n):
        dv[j] = rs * (np.float64(dy[j]) * np.float64(gamma[j]) - m1 - np.float64(xn[j]) * m2)
