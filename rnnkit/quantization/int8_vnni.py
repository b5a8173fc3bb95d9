"""The recurrent product in int8 x int8 on AVX-512 VNNI (``vpdpbusd``), inside the jitted loops.

``vnni_product(x, xq, sx, w, w_scale, w_zero, acc, out, o0, b, k)`` adds one step's recurrent
side to ``out`` rows o0..o0+b.  For each row r of ``x`` (h_{t-1}, float32, k features):

    sx_r = max_q |x_rq| / 127                     per row, symmetric (dynamic: every step)
    xq_rq = round(x_rq / sx_r) + 128              uint8 (vpdpbusd multiplies uint8 by int8)
    acc_rj = sum_q xq_rq w_jq                     int32, 64 products per instruction
    out[o0 + r, j] += sx_r s_j (acc_rj - 128 sum_q w_jq)       (w_zero_j = 128 sum_q w_jq)

so that out gains s_j sx_r sum_q round(x_rq / sx_r) w_jq, the product of the two int8 matrices.

    ==============  ==============  ==========================================
    x               (B, k)          float32 rows (only the step's first b read)
    xq, sx          (B, kp), (B,)   scratch: the quantized rows and their scales
    w               (n4, kp)        int8, rows padded with zeros to a multiple of 4,
                                    columns to kp, a multiple of 64 (one zmm)
    w_scale, w_zero (n,)            float32 per-row scale; int32 128 times the row sum
    acc             (B, n4)         int32 scratch
    out             (N, >= n)       float32, e.g. the step's pre-activations G_t
    ==============  ==============  ==========================================

Why this and not the float x int8 product (int8_gemm.py, the fallback where the CPU has no VNNI):
measured on the project's AVX-512 EPYC (Zen 4), one thread, (B, 256) @ (256, 1024)^T, median
microseconds per call from Python (the call's own cost included):

    =============================================  =====  =====  =====  =====
    B                                                  1      4     20     32
    vpdpbusd, blocks of 4 rows x 4 columns          2.86   8.04  38.16  60.59
    float x int8 (int8_gemm.py)                     10.1   24.8  122.0  204.6
    torch.ops.quantized.linear_dynamic (fbgemm)     16.9   19.9   45.0   82.6
    =============================================  =====  =====  =====  =====

LLVM does not emit vpdpbusd from a plain int8 loop (it gives vpmaddwd, no faster than the float
product here), so the instruction is called by name (``llvm.x86.avx512.vpdpbusd.512``) from a
numba intrinsic.  It exists only on CPUs with avx512_vnni: ``HAS_VNNI`` says whether this one
has it, and nothing calls (and so compiles) this module's code where it does not.

Error: h is rounded to 255 levels of its own row's range (torch's dynamic LSTM: 128 levels of the
whole batch's range, its reduce_range), the weights to 255 levels of their own row's range
(torch: of the whole matrix): each rounding here is at most that of torch's.
"""
from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..kernels.cpu._jit import helper
from .cpu_features import has_vnni
from .int8_weight import K_ALIGN, N_ALIGN

HAS_VNNI = has_vnni()

_I64 = ir.IntType(64)
_V16 = ir.VectorType(ir.IntType(32), 16)  # one zmm: 64 bytes, 16 int32 sums


def _dot_block(rows: int, cols: int = N_ALIGN):
    """An intrinsic ``dot(a, a0, a_stride, w, w0, w_stride, chunks, out, o0, o_stride)``: for r < rows,
    c < cols, ``out[o0 + r*o_stride + c] = sum over chunks*64 bytes of a[a0 + r*a_stride + i] (uint8)
    * w[w0 + c*w_stride + i] (int8)``, offsets in elements of flat C-contiguous arrays.  The rows x cols
    sums live in zmm registers for the whole reduction; each 64-byte chunk of a row of ``a`` and of
    ``w`` is loaded once per block."""

    @intrinsic
    def dot(typingctx, a, a0, a_stride, w, w0, w_stride, chunks, out, o0, o_stride):
        def codegen(context, builder, signature, args):
            a_v, a_o, a_s, w_v, w_o, w_s, n_chunks, o_v, o_o, o_s = args
            i8p = ir.IntType(8).as_pointer()
            a_base = builder.gep(builder.bitcast(context.make_array(signature.args[0])(context, builder, a_v).data,
                                                 i8p), [a_o])
            w_base = builder.gep(builder.bitcast(context.make_array(signature.args[3])(context, builder, w_v).data,
                                                 i8p), [w_o])
            o_base = builder.gep(context.make_array(signature.args[7])(context, builder, o_v).data, [o_o])
            a_rows = [builder.gep(a_base, [builder.mul(a_s, ir.Constant(_I64, r))]) for r in range(rows)]
            w_rows = [builder.gep(w_base, [builder.mul(w_s, ir.Constant(_I64, c))]) for c in range(cols)]
            vnni = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V16, [_V16] * 3),
                                                  "llvm.x86.avx512.vpdpbusd.512")
            sums = [[cgutils.alloca_once_value(builder, ir.Constant(_V16, None)) for _ in range(cols)]
                    for _ in range(rows)]
            with cgutils.for_range(builder, n_chunks) as loop:
                at = builder.mul(loop.index, ir.Constant(_I64, K_ALIGN))
                a_vecs = [builder.load(builder.bitcast(builder.gep(p, [at]), _V16.as_pointer()), align=1)
                          for p in a_rows]
                w_vecs = [builder.load(builder.bitcast(builder.gep(p, [at]), _V16.as_pointer()), align=1)
                          for p in w_rows]
                for r in range(rows):
                    for c in range(cols):
                        slot = sums[r][c]
                        builder.store(builder.call(vnni, [builder.load(slot), a_vecs[r], w_vecs[c]]), slot)
            reduce_add = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.IntType(32), [_V16]), "llvm.vector.reduce.add.v16i32")
            for r in range(rows):
                o_row = builder.gep(o_base, [builder.mul(o_s, ir.Constant(_I64, r))])
                for c in range(cols):
                    builder.store(builder.call(reduce_add, [builder.load(sums[r][c])]),
                                  builder.gep(o_row, [ir.Constant(_I64, c)]))
            return context.get_dummy_value()

        if not HAS_VNNI:
            raise numba.core.errors.TypingError("the int8 VNNI product needs a CPU with avx512_vnni")
        return types.void(a, types.int64, types.int64, w, types.int64, types.int64, types.int64, out,
                          types.int64, types.int64), codegen

    return dot


_dot_4x4 = _dot_block(4)
_dot_1x4 = _dot_block(1)


@helper
def quantize_rows(x, b, k, xq, sx):
    """Rows 0..b of x (float32, k features) -> xq (uint8, zero point 128) and their scales sx."""
    for r in range(b):
        xr = x[r]
        top = numba.float32(0)
        for q in range(k):
            top = max(top, abs(xr[q]))
        scale = top / numba.float32(127) if top > 0 else numba.float32(1)
        sx[r] = scale
        inv = numba.float32(1) / scale
        qr = xq[r]
        for q in range(k):  # x / scale lies in [-127, 127]: + 128.5 then truncation rounds to [1, 255]
            qr[q] = numba.uint8(numba.int32(xr[q] * inv + numba.float32(128.5)))


@helper
def vnni_product(x, xq, sx, w, w_scale, w_zero, acc, out, o0, b, k):
    """out[o0 + r, :n] += the product of row r of x with w^T, for r < b (see the module docstring)."""
    n = w_scale.shape[0]
    n4, kp = w.shape
    chunks = kp // K_ALIGN
    quantize_rows(x, b, k, xq, sx)
    r = 0
    while r + 4 <= b:
        for j in range(0, n4, N_ALIGN):
            _dot_4x4(xq, r * kp, kp, w, j * kp, kp, chunks, acc, r * n4 + j, n4)
        r += 4
    while r < b:
        for j in range(0, n4, N_ALIGN):
            _dot_1x4(xq, r * kp, kp, w, j * kp, kp, chunks, acc, r * n4 + j, n4)
        r += 1
    for r in range(b):
        s = sx[r]
        a = acc[r]
        o = out[o0 + r]
        for j in range(n):
            o[j] += s * w_scale[j] * numba.float32(a[j] - w_zero[j])  # exact in int32


__all__ = ["HAS_VNNI", "vnni_product", "quantize_rows"]
