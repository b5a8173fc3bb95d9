"""Layer norm of one row and its backward, for the fused layer-normalised cells (LSTM and GRU).

Compiled per process like the kernels that call them (``cache=False``, see layernorm_lstm.py):
a cached callee linked into a freshly compiled caller is the mix that gave other last bits.
"""
from __future__ import annotations

import numpy as np

from ._jit import njit


@njit(cache=False)
def norm_row(v, xn, n, inv_n, eps, one, zero):
    """xn[:n] = (v - mean(v)) / sqrt(var(v) + eps) over v[:n]; returns 1 / sqrt(var(v) + eps)."""
    s = zero
    for j in range(n):
        s += v[j]
    mu = s * inv_n
    var = zero
    for j in range(n):
        dv = v[j] - mu
        var += dv * dv
    rs = one / np.sqrt(var * inv_n + eps)
    for j in range(n):
        xn[j] = (v[j] - mu) * rs
    return rs


@njit(cache=False)
def norm_row_bwd(dy, gamma, xn, rs, dv, n, inv_n, zero):
    """dv[:n] = the gradient of v through gamma * LN(v), from dy (the gradient of gamma * LN(v) + beta),
    xn = LN(v) and rs = 1 / sqrt(var(v) + eps)."""
    s1 = zero
    s2 = zero
    for j in range(n):
        dx = dy[j] * gamma[j]
        s1 += dx
        s2 += dx * xn[j]
    m1 = s1 * inv_n
    m2 = s2 * inv_n
    for j in range(n):
        dv[j] = rs * (dy[j] * gamma[j] - m1 - xn[j] * m2)
