"""The float32 transcendental functions of generated kernels (rnnkit/kernels/generator/emit_cpp.py's
preamble: branch-free, so that g++ vectorizes the loops calling them) against torch's, over the float
range and at its special values (0, negatives, subnormals, inf, NaN); and the order of a row's sum."""
import ctypes
import shutil

import numpy as np
import pytest
import torch

from rnnkit.kernels.generator.build import load
from rnnkit.kernels.generator.emit_cpp import LANES, PREAMBLE, Ref, _Function

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


def _eight_lane_sum(row: np.ndarray) -> np.float32:
    """The generated kernels' order of a row's sum (emit_cpp.py, ``_lane_sum``): element j into lane
    j mod 8, the tail's elements into lanes 0.., the lanes then summed pairwise, in float32."""
    lanes = [np.float32(0)] * LANES
    whole = len(row) - len(row) % LANES
    for j in range(len(row)):
        lane = j % LANES if j < whole else j - whole
        lanes[lane] = np.float32(lanes[lane] + row[j])
    while len(lanes) > 1:
        lanes = [np.float32(a + b) for a, b in zip(lanes[::2], lanes[1::2])]
    return lanes[0]


@pytest.mark.parametrize("width", [8, 37, 256])
def test_a_row_sum_adds_in_one_order_at_every_alignment(width):
    """A generated row sum (a layer norm's mean, its gradients' sums) gives the documented order's
    float32 number, bit for bit, for rows starting at every offset of a cache line: the same results
    whatever the data's alignment and the machine's vector width."""
    body = _Function(_empty_graph(), [], {})
    body._lane_sum("total", Ref("x", 0, width), width)
    source = PREAMBLE.replace("SCALAR", "float") + "}  // namespace\n" + (
        'extern "C" void row_sum(const float* x, float* result) {\n  ' + "\n  ".join(body.lines)
        + "\n  *result = total;\n}\n")
    row_sum = load(source).row_sum
    rng = np.random.default_rng(width)
    data = (rng.standard_normal(width + 16) * 10.0 ** rng.integers(-3, 4, width + 16)).astype(np.float32)
    for offset in range(16):  # 16 floats: every 4-byte alignment within 64 bytes
        row = data[offset:offset + width]
        result = np.zeros(1, np.float32)
        row_sum(row.ctypes.data_as(ctypes.c_void_p), result.ctypes.data_as(ctypes.c_void_p))
        assert result[0] == _eight_lane_sum(row), offset


def _empty_graph():
    graph = torch.fx.Graph()
    graph.output(None)
    return graph
