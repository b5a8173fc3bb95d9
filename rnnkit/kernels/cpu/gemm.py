"""Small matrix products inside the jitted time loops (numba, one thread).

``gemm_nt(a, a0, w, out, o0, b, k, n)`` computes, for r < b,
``out[o0 + r, :n] += a[a0 + r, :k] @ w[:n, :k].T``: the layout of torch.nn's weight
matrices (rows = outputs), so no transposed copy is needed for the forward product.
Blocked 4 rows x 2 columns with the reduction over k innermost: LLVM vectorises
the k loop with eight accumulators in registers (~50 GFLOP/s on one core here,
against ~20 for the plain outer-product loop, which is load/store bound).
The sums start from a zero of the arrays' dtype, so one source serves float32 and float64.

The product is compiled once per dtype (both when this module is imported), as a function of its
own exported as a symbol, and the time loops call that one copy: ``gemm_nt`` below is an
intrinsic emitting the call.  Called as a jitted function, its code would be linked into every
time loop and optimised and compiled to machine code again there, one copy per loop (measured:
about 3.5 s of the first compilation of the Elman, LSTM and GRU kernels in both dtypes).  LLVM
did not inline it either way, so the loops run the same code as before.
"""
from __future__ import annotations

from numba import types
from numba.core.errors import TypingError
from numba.extending import intrinsic

from ._jit import call_symbol, export, helper, njit, zero_of


# Elements of w per tile of columns of ``out`` (rows of w): 128 KiB in float32, so that the tile
# stays in the core's L2 cache while every block of 4 rows passes over it, and w is read from
# memory once per product, not once per block of rows (measured at H = 512 on two threads:
# forward 224 ms against 276 untiled).
TILE_ELEMENTS = 32768


@njit
def _gemm_nt(a, a0, w, out, o0, b, k, n):
    zero = zero_of(out)
    tile = max(8, TILE_ELEMENTS // max(k, 1))
    for j0 in range(0, n, tile):
        _gemm_nt_tile(a, a0, w, out, o0, b, k, j0, min(j0 + tile, n), zero)


@helper
def _gemm_nt_tile(a, a0, w, out, o0, b, k, j_begin, n, zero):
    r = 0
    while r + 4 <= b:
        ra, ro = a0 + r, o0 + r
        j = j_begin
        while j + 2 <= n:
            s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = zero
            for q in range(k):
                w0 = w[j, q]
                w1 = w[j + 1, q]
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
            out[ro, j] += s0
            out[ro + 1, j] += s1
            out[ro + 2, j] += s2
            out[ro + 3, j] += s3
            out[ro, j + 1] += t0
            out[ro + 1, j + 1] += t1
            out[ro + 2, j + 1] += t2
            out[ro + 3, j + 1] += t3
            j += 2
        while j < n:
            for i in range(4):
                s = zero
                for q in range(k):
                    s += a[ra + i, q] * w[j, q]
                out[ro + i, j] += s
            j += 1
        r += 4
    while r < b:
        ra, ro = a0 + r, o0 + r
        j = j_begin
        while j + 4 <= n:
            s0 = s1 = s2 = s3 = zero
            for q in range(k):
                x = a[ra, q]
                s0 += x * w[j, q]
                s1 += x * w[j + 1, q]
                s2 += x * w[j + 2, q]
                s3 += x * w[j + 3, q]
            out[ro, j] += s0
            out[ro, j + 1] += s1
            out[ro, j + 2] += s2
            out[ro, j + 3] += s3
            j += 4
        while j < n:
            s = zero
            for q in range(k):
                s += a[ra, q] * w[j, q]
            out[ro, j] += s
            j += 1
        r += 1


def _export() -> dict:
    """dtype -> (symbol, argument types) of the exported product, one per dtype the kernels run."""
    exported = {}
    for dtype in (types.float32, types.float64):
        matrix = types.Array(dtype, 2, "C")
        argtypes = (matrix, types.int64, matrix, matrix, types.int64, types.int64, types.int64, types.int64)
        symbol = f"rnnkit.gemm_nt.{dtype}"
        export(symbol, _gemm_nt, argtypes)
        exported[dtype] = (symbol, argtypes)
    return exported


_EXPORTED = _export()


@intrinsic
def gemm_nt(typingctx, a, a0, w, out, o0, b, k, n):
    """In jitted code: ``_gemm_nt(a, a0, w, out, o0, b, k, n)`` through its exported symbol."""
    given = (a, a0, w, out, o0, b, k, n)
    symbol, want = _EXPORTED.get(getattr(out, "dtype", None), (None, None))
    if want is None or any(g != t if isinstance(t, types.Array) else not isinstance(g, types.Integer)
                           for g, t in zip(given, want)):
        raise TypingError(f"gemm_nt takes writable C-contiguous 2-D float32 or float64 arrays of one "
                          f"dtype (a, w, out) and integers; got {given}")

    def codegen(context, builder, signature, llargs):
        values = [context.cast(builder, v, g, t) for v, g, t in zip(llargs, given, want)]
        call_symbol(context, builder, symbol, want, values)
        return context.get_dummy_value()
    return types.void(*given), codegen


@helper
def zero_rows(out, b):
    n = out.shape[1]
    for r in range(b):
        for j in range(n):
            out[r, j] = 0
