"""The in-loop matrix product (kernels/cpu/gemm.py), called from jitted code through its exported
symbol: out[o0 + r] += a[a0 + r] @ w.T for r < b, over row blocks, column tiles and tails."""
from __future__ import annotations

import numba
import numpy as np
import pytest
from numba.core.errors import TypingError

from rnnkit.kernels.cpu import gemm


@numba.njit
def _product(a, a0, w, out, o0, b, k, n):
    gemm.gemm_nt(a, a0, w, out, o0, b, k, n)


SHAPES = [(1, 3, 5), (4, 8, 2), (7, 33, 9), (9, 4096, 19)]  # the last spans tiles
UNIT_ROUNDOFF = {np.float32: 2.0 ** -24, np.float64: 2.0 ** -53}


def _case(dtype, b, k, n, draw):
    rng = np.random.default_rng(0)
    a = draw(rng, (b + 3, k)).astype(dtype)
    w = draw(rng, (n + 2, k)).astype(dtype)
    out = draw(rng, (b + 5, n + 1)).astype(dtype)
    before = out.copy()
    _product(a, np.int32(1), w, out, 2, b, k, n)  # any integer type for the offsets
    block = (slice(2, 2 + b), slice(0, n))
    rest = np.ones(out.shape, dtype=bool)
    rest[block] = False
    assert np.array_equal(out[rest], before[rest])  # nothing outside the block is written
    return a[1:1 + b], w[:n], before[block], out[block]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b,k,n", SHAPES)
def test_product_is_exact_where_every_sum_is(dtype, b, k, n):
    """Entries multiples of 1/8 in [-2, 2]: every product is a multiple of 1/64 of magnitude <= 4, every
    partial sum (k <= 4096 products and an entry of out) a multiple of 1/64 below 2^15, 21 significant
    bits: exact in float32 (24) and float64.  So every order of summation, any vector width, with or
    without fused multiply-adds, gives the exact result, on every machine: compared bitwise."""
    a, w, before, got = _case(dtype, b, k, n, lambda rng, shape: rng.integers(-16, 17, shape) / 8)
    want = before.astype(np.float64) + a.astype(np.float64) @ w.astype(np.float64).T  # exact as well
    assert np.array_equal(got.astype(np.float64), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b,k,n", SHAPES)
def test_product_adds_rows_times_transposed_weight(dtype, b, k, n):
    """Random data, against the product in float64, within the worst-case error of any order of
    summation (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., section 3.1): an entry
    of out plus an inner product of k terms, each rounded, errs by at most gamma_{k+1} (|out| + |a| |w|^T),
    gamma_m = m u / (1 - m u), whatever the tiling, vector width or use of fused multiply-adds; the float64
    product has its own error of that form with float64's u.  A bound by construction, for every machine."""
    a, w, before, got = _case(dtype, b, k, n, lambda rng, shape: rng.standard_normal(shape))
    want = before.astype(np.float64) + a.astype(np.float64) @ w.astype(np.float64).T
    magnitude = np.abs(before.astype(np.float64)) + np.abs(a.astype(np.float64)) @ np.abs(w.astype(np.float64)).T

    def gamma(u):
        return (k + 1) * u / (1 - (k + 1) * u)
    bound = (gamma(UNIT_ROUNDOFF[dtype]) + 2 * gamma(UNIT_ROUNDOFF[np.float64])) * magnitude
    err = np.abs(got.astype(np.float64) - want)
    assert np.all(err <= bound), f"largest error / bound {np.max(err / bound):.3g}"


def test_product_rejects_arrays_it_was_not_compiled_for():
    a = np.ones((4, 8), dtype=np.float32)
    out = np.zeros((4, 4), dtype=np.float32)
    with pytest.raises(TypingError, match="gemm_nt takes writable C-contiguous 2-D"):
        _product(a, 0, np.ones((4, 16), dtype=np.float32)[:, ::2], out, 0, 4, 8, 4)
    with pytest.raises(TypingError, match="gemm_nt takes"):
        _product(a.astype(np.float64), 0, a, out, 0, 4, 8, 4)
