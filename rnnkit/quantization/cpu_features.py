"""What the CPU offers the int8 products, read once from LLVM's view of the host (llvmlite, without
importing numba)."""
from __future__ import annotations

import os
from functools import lru_cache


@lru_cache(maxsize=1)
def has_vnni() -> bool:
    """Whether the CPU has AVX-512 VNNI (``vpdpbusd``: uint8 x int8 pairs summed straight into int32)."""
    from llvmlite import binding as llvm

    # numba compiles for NUMBA_CPU_NAME / NUMBA_CPU_FEATURES where they are set (e.g. haswell, for AVX2
    # code on any machine): VNNI only when that target has it, else its instruction cannot be emitted
    target, features = os.environ.get("NUMBA_CPU_NAME", "host"), os.environ.get("NUMBA_CPU_FEATURES", "")
    if target != "host" or features:
        return "+avx512vnni" in features.split(",")
    return bool(llvm.get_host_cpu_features().get("avx512vnni", False))


def fbgemm_reduce_range() -> bool:
    """Whether fbgemm's dynamic int8 product must quantize its input to 7 bits: on CPUs without VNNI its
    kernels sum pairs of uint8 x int8 products in int16 (vpmaddubsw), which full 8-bit inputs can
    saturate; with VNNI the pairs go straight into int32, and 8 bits halve the rounding step."""
    return not has_vnni()


__all__ = ["has_vnni", "fbgemm_reduce_range"]
