"""The recurrent product inside the jitted time loops: float activations times int8 weights.

``int8_gemm_nt(a, a0, w, scale, out, o0, b, k, n)`` computes, for r < b and j < n,

    out[o0 + r, j] += scale[j] * sum_q a[a0 + r, q] * w[j, q]

with ``a`` float32 (rows of h_{t-1}), ``w`` int8 (n, k) in torch.nn's layout (rows = outputs)
and ``scale`` its per-row scale (see int8_weight.py): the weights are int8 in memory and widened
to float32 in registers, the activations stay float32 (weight-only quantization).  Blocked as
the float product (kernels/cpu/gemm.py): 4 rows x 2 columns, else 1 row x 4 columns, with the
reduction over k innermost, which LLVM vectorises (int8 loads, sign extension, conversion,
fused multiply-add).

Why float activations and not int8 x int8, measured on the project's AVX-512 EPYC, one thread,
(B, 256) @ (256, 1024)^T, the recurrent product of the tutorial's LSTM (median microseconds):

    ==========================================  =====  =====  =====  =====
    B                                               1      4     20     32
    this product (float x int8, numba)           10.1   24.8  122.0  204.6
    int8 x int8 -> int32 in numba (vpmaddwd)      9.1   35.0  173.3  277.7
    torch.ops.quantized.linear_dynamic (fbgemm)  16.9   19.9   45.0   82.6
    torch._weight_int8pack_mm                   205.3  886.5   8426  11184
    float32 torch.mm (MKL)                       27.1   55.8  161.4  197.1
    ==========================================  =====  =====  =====  =====

At the tutorial's batch of 1 this product is the fastest (and reads 4x fewer weight bytes than
float32), LLVM emits no VNNI for an int8 x int8 loop (only vpmaddwd, no faster here, and it
would add a per-step quantization of h and its error), and fbgemm, faster from B = 4 up, costs
a call from Python at every step plus the activation's quantization error.  This product
now serves CPUs without avx512_vnni (int8_vnni.py is faster where it runs), for the recurrent
product and the input projection both (see layer_base.PRODUCTS).  Accuracy: only the weights are rounded here, so the error per
product is at most sum_q |a_q| s_j / 2, against that plus the activation's rounding for fbgemm.
"""
from __future__ import annotations

import numba

from ..kernels.cpu._jit import helper, njit

# Columns of ``out`` per tile: 128 KiB of int8 weights, which stay in the core's L2 cache while
# every block of rows passes over them (as kernels/cpu/gemm.py tiles its float weights).
TILE_BYTES = 131072


@helper
def int8_gemm_nt(a, a0, w, scale, out, o0, b, k, n):
    tile = max(8, TILE_BYTES // max(k, 1))
    for j0 in range(0, n, tile):
        _int8_gemm_tile(a, a0, w, scale, out, o0, b, k, j0, min(j0 + tile, n))


@helper
def _int8_gemm_tile(a, a0, w, scale, out, o0, b, k, j_begin, n):
    zero = numba.float32(0)
    r = 0
    while r + 4 <= b:
        ra, ro = a0 + r, o0 + r
        j = j_begin
        while j + 2 <= n:
            s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = zero
            for q in range(k):
                w0 = numba.float32(w[j, q])
                w1 = numba.float32(w[j + 1, q])
                x0 = a[ra, q]
                x1 = a[ra + 1, q]
                x2 = a[ra + 2, q]
                x3 = a[ra + 3, q]
                s0 += x0 * w0
                s1 += x1 * w0
                s2 += x2 * w0
                s3 += x3 * w0
                t0 += x0 * w1
                t1 += x1 * w1
                t2 += x2 * w1
                t3 += x3 * w1
            c0 = scale[j]
            c1 = scale[j + 1]
            out[ro, j] += s0 * c0
            out[ro + 1, j] += s1 * c0
            out[ro + 2, j] += s2 * c0
            out[ro + 3, j] += s3 * c0
            out[ro, j + 1] += t0 * c1
            out[ro + 1, j + 1] += t1 * c1
            out[ro + 2, j + 1] += t2 * c1
            out[ro + 3, j + 1] += t3 * c1
            j += 2
        while j < n:
            for i in range(4):
                s = zero
                for q in range(k):
                    s += a[ra + i, q] * numba.float32(w[j, q])
                out[ro + i, j] += s * scale[j]
            j += 1
        r += 4
    while r < b:
        ra, ro = a0 + r, o0 + r
        j = j_begin
        while j + 4 <= n:
            s0 = s1 = s2 = s3 = zero
            for q in range(k):
                x = a[ra, q]
                s0 += x * numba.float32(w[j, q])
                s1 += x * numba.float32(w[j + 1, q])
                s2 += x * numba.float32(w[j + 2, q])
                s3 += x * numba.float32(w[j + 3, q])
            out[ro, j] += s0 * scale[j]
            out[ro, j + 1] += s1 * scale[j + 1]
            out[ro, j + 2] += s2 * scale[j + 2]
            out[ro, j + 3] += s3 * scale[j + 3]
            j += 4
        while j < n:
            s = zero
            for q in range(k):
                s += a[ra, q] * numba.float32(w[j, q])
            out[ro, j] += s * scale[j]
            j += 1
        r += 1


@njit
def int8_matmul_rows(offsets, bsz, lo, hi, a, w, scale, out):
    """out += a @ (scale * w)^T for the rows of a (N, k) that the one-step layout (offsets, bsz) holds:
    the hoisted input projection where fbgemm is not used (see layer_base.PRODUCTS), its rows split
    across threads by kernels/cpu/split.run_rows (every row is a product of its own)."""
    int8_gemm_nt(a, offsets[0], w, scale, out, offsets[0], bsz[0], a.shape[1], w.shape[0])


__all__ = ["int8_gemm_nt", "int8_matmul_rows"]
