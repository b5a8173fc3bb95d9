"""numba plumbing shared by the fused CPU kernels: the jit decorator and the activations.

Imported only when a fused kernel first runs (numba's import and the compilation are
paid then, not at ``import rnnkit``).  Every kernel is compiled with ``cache=True``:
later processes load the machine code from numba's on-disk cache.

The activations are written so that LLVM vectorises the loops around them:
float32 uses a rational approximation of tanh (Eigen's, accurate to a few ulp,
only arithmetic, min/max and one division), since numba's own exp and tanh call
the scalar libm; float64 goes through exp (libm, exact to ~1 ulp) so that
float64 results agree with torch's to ~1e-15.
"""
from __future__ import annotations

import numba
from numba import types
from numba.extending import overload

# No nnan/ninf: inf arithmetic stays IEEE; the rest lets loops vectorise (reductions too).
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def njit(fn=None, **kw):
    opts = dict(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy", boundscheck=False)
    opts.update(kw)
    if fn is None:
        return lambda f: numba.njit(**opts)(f)
    return numba.njit(**opts)(fn)


def tanh(x):  # pragma: no cover - replaced by the overload inside jitted code
    raise NotImplementedError


def sigmoid(x):  # pragma: no cover
    raise NotImplementedError


# Eigen's float tanh: p(x)/q(x) on [-7.9, 7.9], exact to a few ulp in float32.
_A1, _A3, _A5, _A7 = 4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08
_A9, _A11, _A13 = -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16
_B0, _B2, _B4, _B6 = 4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06
_CLAMP = 7.90531110763549805


@overload(tanh, jit_options={"fastmath": FASTMATH})
def _tanh_ov(x):
    if x == types.float32:
        a1, a3, a5, a7 = (numba.float32(v) for v in (_A1, _A3, _A5, _A7))
        a9, a11, a13 = (numba.float32(v) for v in (_A9, _A11, _A13))
        b0, b2, b4, b6 = (numba.float32(v) for v in (_B0, _B2, _B4, _B6))
        hi = numba.float32(_CLAMP)
        lo = numba.float32(-_CLAMP)

        def impl(x):
            x = min(max(x, lo), hi)
            x2 = x * x
            p = x2 * a13 + a11
            p = p * x2 + a9
            p = p * x2 + a7
            p = p * x2 + a5
            p = p * x2 + a3
            p = p * x2 + a1
            p = p * x
            q = x2 * b6 + b4
            q = q * x2 + b2
            q = q * x2 + b0
            return p / q
        return impl
    if x == types.float64:
        def impl(x):
            x = min(max(x, -30.0), 30.0)
            return 1.0 - 2.0 / (1.0 + np.exp(2.0 * x))
        return impl


@overload(sigmoid, jit_options={"fastmath": FASTMATH})
def _sigmoid_ov(x):
    if x == types.float32:
        half = numba.float32(0.5)

        def impl(x):
            return half + half * tanh(half * x)
        return impl
    if x == types.float64:
        def impl(x):
            x = max(x, -700.0)
            return 1.0 / (1.0 + np.exp(-x))
        return impl


def zero_of(arr):  # pragma: no cover
    raise NotImplementedError


@overload(zero_of)
def _zero_of_ov(arr):
    dt = arr.dtype

    def impl(arr):
        return dt(0)
    return impl


def const_of(ref, value):  # pragma: no cover
    raise NotImplementedError


@overload(const_of)
def _const_of_ov(ref, value):
    """``value`` in the dtype of ``ref`` (an array or a scalar). numba types a Python literal as
    float64 or int64, and float32 arithmetic with one is promoted to float64: in float32
    kernels that doubles the work and stops vectorisation."""
    dt = ref.dtype if isinstance(ref, types.Array) else ref

    def impl(ref, value):
        return dt(value)
    return impl


import numpy as np  # noqa: E402  (used inside the jitted implementations above)
