"""numba plumbing shared by the fused CPU kernels: the jit decorator and the activations.

Imported only when a fused kernel first runs (numba's import and the compilation are
paid then, not at ``import rnnkit``).  Every kernel is compiled with ``cache=True``:
later processes load the machine code from numba's on-disk cache.

The activations are written so that LLVM vectorises the loops around them:
float32 uses a rational approximation of tanh (Eigen's, accurate to a few ulp,
only arithmetic, min/max and one division) and, for the sigmoid, a polynomial exp
(Cephes', relative error ~2 ulp, the power of two built from its bits), since
numba's own exp and tanh call the scalar libm; float64 goes through exp (libm, exact to ~1 ulp) so that
float64 results agree with torch's to ~1e-15.
"""
from __future__ import annotations

import os
import tempfile

import numba
from llvmlite import binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload, register_jitable

from ..._folders import writable

# The row split's parallel loop (``split._parallel_rows``, ``parallel=True``) runs on OpenMP: once
# torch is imported, numba's omp layer binds to the libgomp torch already loaded, so both share one
# thread pool.  Another pool (tbb, workqueue, or Python threads) would fight torch's OpenMP workers,
# which spin for milliseconds after each of torch's parallel ops: measured, a 2-thread kernel then
# ran slower than on one thread (on Python threads, the split LSTM 25-40% slower than on this pool).
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

# No nnan/ninf: inf arithmetic stays IEEE; the rest lets loops vectorise (reductions too).
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def _cache_available() -> bool:
    """Whether numba can cache the kernels, choosing where when its own places fail.

    numba caches beside the source (``__pycache__``) or in the user's cache folder, and raises
    ("cannot cache function ...: no locator available") at the first kernel when it can write to
    neither: an install in a read-only folder run by a user without a writable home.  Then the cache
    goes to a folder of this user's in the temporary directory; where even that fails, kernels are
    compiled in every process, uncached.  A NUMBA_CACHE_DIR the user set is numba's to use.
    """
    if os.environ.get("NUMBA_CACHE_DIR") or writable(os.path.join(os.path.dirname(__file__), "__pycache__")):
        return True
    home_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if writable(os.path.join(home_cache, "numba")):
        return True
    fallback = os.path.join(tempfile.gettempdir(), f"rnnkit-numba-cache-{os.getuid()}")
    if writable(fallback):
        numba.config.CACHE_DIR = fallback  # read by numba when each kernel is decorated, below
        return True
    return False


CACHE = _cache_available()


def njit(fn=None, **kw):
    # no_cfunc_wrapper: the C-callable wrapper serves only first-class function values, unused here.
    opts = dict(cache=CACHE, fastmath=FASTMATH, nogil=True, error_model="numpy", boundscheck=False,
                no_cfunc_wrapper=True)
    opts.update(kw)
    opts["cache"] = opts["cache"] and CACHE
    if fn is None:
        return lambda f: numba.njit(**opts)(f)
    return numba.njit(**opts)(fn)


def helper(fn):
    """A function called only from jitted code: compiled into its callers for the argument types
    they pass, with literal constants (a ``0`` row offset, a ``True`` flag) typed as plain ints and
    bools, so that one compilation serves every call site.  (A jitted dispatcher called from jitted
    code compiles a specialisation of its own for each literal argument: measured, three copies of
    the in-loop product per dtype in the LSTM alone.)"""
    return register_jitable(fastmath=FASTMATH, error_model="numpy", boundscheck=False)(fn)


def native_address(fn, argtypes) -> int:
    """The address of jitted ``fn``'s machine code for the numba types ``argtypes`` (compiled, or
    loaded from numba's cache, on first use)."""
    fn.compile(argtypes)
    compiled = fn.overloads[argtypes]
    address = compiled.library.get_pointer_to_function(compiled.fndesc.llvm_func_name)
    if not address:
        raise RuntimeError(f"numba gave no address for {fn.py_func.__name__}{argtypes}")
    return address


def export(symbol: str, fn, argtypes) -> None:
    """Make jitted ``fn``'s machine code for ``argtypes`` the process-wide symbol ``symbol``, which
    ``call_symbol`` calls.  Must run before any code calling it is compiled or loaded from the cache
    (the loader resolves the symbol then)."""
    llvm.add_symbol(symbol, native_address(fn, argtypes))


def call_symbol(context, builder, symbol: str, argtypes, values) -> None:
    """In an intrinsic's codegen: call the function ``export`` registered as ``symbol``, in numba's
    calling convention, with ``values`` of ``argtypes`` (exactly the types it was exported for).
    Unlike a call to a jitted function, this does not link a copy of its code into the caller."""
    fnty = context.call_conv.get_function_type(types.void, argtypes)
    fn = cgutils.get_or_insert_function(builder.module, fnty, symbol)
    context.call_conv.call_function(builder, fn, types.void, argtypes, values)


def call_address(context, builder, address, argtypes, values) -> None:
    """As ``call_symbol``, for the function at ``address`` (an int64 value, from ``native_address``)."""
    fnty = context.call_conv.get_function_type(types.void, argtypes)
    fn = builder.inttoptr(address, fnty.as_pointer())
    context.call_conv.call_function(builder, fn, types.void, argtypes, values)


def tanh(x):  # pragma: no cover - replaced by the overload inside jitted code
    raise NotImplementedError


def sigmoid(x):  # pragma: no cover
    raise NotImplementedError


# Eigen's float tanh: p(x)/q(x) on [-7.9, 7.9], exact to a few ulp in float32.
_A1, _A3, _A5, _A7 = 4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08
_A9, _A11, _A13 = -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16
_B0, _B2, _B4, _B6 = 4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06
_CLAMP = 7.90531110763549805
_SATURATE = 9.0109  # tanh(x) rounds to 1.0 in float32 from here: 2 exp(-2x) < 2^-25


@overload(tanh, jit_options={"fastmath": FASTMATH})
def _tanh_ov(x):
    if x == types.float32:
        a1, a3, a5, a7 = (numba.float32(v) for v in (_A1, _A3, _A5, _A7))
        a9, a11, a13 = (numba.float32(v) for v in (_A9, _A11, _A13))
        b0, b2, b4, b6 = (numba.float32(v) for v in (_B0, _B2, _B4, _B6))
        hi = numba.float32(_CLAMP)
        lo = numba.float32(-_CLAMP)
        sat = numba.float32(_SATURATE)
        one = numba.float32(1.0)

        def impl(x):
            v = x
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
            y = p / q  # at the clamp 1 - 2.4e-7, where float32's tanh reaches 1 only from |x| = 9.011
            y = one if v >= sat else y
            return -one if v <= -sat else y  # exactly +-1 where torch's is, so 1 - y^2 is exactly 0 there
        return impl
    if x == types.float64:
        def impl(x):
            x = min(max(x, -30.0), 30.0)
            return 1.0 - 2.0 / (1.0 + np.exp(2.0 * x))
        return impl


@intrinsic
def _bits_to_float32(typingctx, bits):
    """The float32 whose bit pattern is the int32 ``bits`` (a bitcast: vectorises, unlike ldexp)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


# Cephes' expf: exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln(2)/2, exp(r) by a degree-7
# polynomial; 2^n is built from its exponent bits.  Relative error ~2 ulp over the whole range.
_LOG2E, _LN2_HI, _LN2_LO = 1.44269504088896341, 0.693359375, -2.12194440e-4
_E0, _E1, _E2, _E3, _E4, _E5 = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                1.6666665459e-1, 5.0000001201e-1)
_EXP_HI, _EXP_LO = 88.3762626647949, -87.3365478515625  # exp stays a normal float32 in between


def exp32(x):  # pragma: no cover - replaced by the overload inside jitted code
    raise NotImplementedError


@overload(exp32, jit_options={"fastmath": FASTMATH})
def _exp32_ov(x):
    if x == types.float32:
        f = numba.float32
        log2e, ln2_hi, ln2_lo = f(_LOG2E), f(_LN2_HI), f(_LN2_LO)
        e0, e1, e2, e3, e4, e5 = (f(v) for v in (_E0, _E1, _E2, _E3, _E4, _E5))
        hi, lo, half, one = f(_EXP_HI), f(_EXP_LO), f(0.5), f(1.0)
        bias, shift = numba.int32(127), numba.int32(23)

        def impl(x):
            x = min(max(x, lo), hi)
            n = np.floor(x * log2e + half)
            r = x - n * ln2_hi - n * ln2_lo
            p = e0 * r + e1
            p = p * r + e2
            p = p * r + e3
            p = p * r + e4
            p = p * r + e5
            p = p * r * r + r + one
            return p * _bits_to_float32((numba.int32(n) + bias) << shift)
        return impl


@overload(sigmoid, jit_options={"fastmath": FASTMATH})
def _sigmoid_ov(x):
    if x == types.float32:
        one = numba.float32(1.0)

        # 1 / (1 + exp(-x)) is accurate in relative terms on both sides (sigmoid(-80) ~ 1.8e-35 to a
        # few ulp), which 0.5 + 0.5 tanh(x / 2) is not for x << 0; about 10% slower on its own.
        def impl(x):
            return one / (one + exp32(-x))
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


import numpy as np  # noqa: E402  (used inside the jitted implementations above)
