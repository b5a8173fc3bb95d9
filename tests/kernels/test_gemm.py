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


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("b,k,n", [(1, 3, 5), (4, 8, 2), (7, 33, 9), (9, 4096, 19)])  # the last spans tiles
def test_product_adds_rows_times_transposed_weight(dtype, tol, b, k, n):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((b + 3, k)).astype(dtype)
    w = rng.standard_normal((n + 2, k)).astype(dtype)
    out = rng.standard_normal((b + 5, n + 1)).astype(dtype)
    want = out.copy()
    want[2:2 + b, :n] += a[1:1 + b] @ w[:n].T
    _product(a, np.int32(1), w, out, 2, b, k, n)  # any integer type for the offsets
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol * k)


def test_product_rejects_arrays_it_was_not_compiled_for():
    a = np.ones((4, 8), dtype=np.float32)
    out = np.zeros((4, 4), dtype=np.float32)
    with pytest.raises(TypingError, match="gemm_nt takes writable C-contiguous 2-D"):
        _product(a, 0, np.ones((4, 16), dtype=np.float32)[:, ::2], out, 0, 4, 8, 4)
    with pytest.raises(TypingError, match="gemm_nt takes"):
        _product(a.astype(np.float64), 0, a, out, 0, 4, 8, 4)
