"""The float32 transcendental functions of generated kernels (rnnkit/kernels/generator/emit_cpp.py's
preamble: branch-free, so that g++ vectorizes the loops calling them) against torch's, over the float
range and at its special values (0, negatives, subnormals, inf, NaN)."""
import ctypes
import shutil

import numpy as np
import pytest
import torch

from rnnkit.kernels.generator.build import load
from rnnkit.kernels.generator.emit_cpp import PREAMBLE

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="generated kernels need g++")

FUNCTIONS = {"rk_exp": torch.exp, "rk_log": torch.log, "rk_log1p": torch.log1p, "rk_tanh": torch.tanh,
             "rk_sigmoid": torch.sigmoid}
SPECIALS = [0.0, -0.0, 1.0, -1.0, -2.0, 1e-45, 1e-40, 1.1754942e-38, 1e-30, -1e-30, 3e38, -3e38, 88.7, -104.0,
            float("inf"), float("-inf"), float("nan")]


@pytest.fixture(scope="module")
def library():
    source = PREAMBLE.replace("SCALAR", "float") + "}  // namespace\n" + "".join(
        f'extern "C" void apply_{name}(const float* x, float* y, long n) {{ for (long i = 0; i < n; ++i) '
        f"y[i] = {name}(x[i]); }}\n" for name in FUNCTIONS)
    return load(source)


def _apply(library, name, x):
    y = np.empty_like(x)
    getattr(library, f"apply_{name}")(x.ctypes.data_as(ctypes.c_void_p), y.ctypes.data_as(ctypes.c_void_p),
                                      ctypes.c_long(x.size))
    return y


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_a_generated_float_function_agrees_with_torch(library, name):
    rng = np.random.default_rng(0)
    magnitudes = np.exp(rng.uniform(-100, 88, 200_000))
    x = np.concatenate([magnitudes, -magnitudes, rng.uniform(-4, 4, 200_000), SPECIALS]).astype(np.float32)
    got = torch.from_numpy(_apply(library, name, x))
    want = FUNCTIONS[name](torch.from_numpy(x).double()).float()
    # within 4 float32 ulps (absolute below the smallest normal), the same infinities and NaNs
    torch.testing.assert_close(got, want, rtol=4 * 2 ** -23, atol=1.2e-38, equal_nan=True)
