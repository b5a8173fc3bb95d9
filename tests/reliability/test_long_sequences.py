"""Very long sequences (issue 7, item 2): T = 100,000 forward and backward, cost and memory linear in T."""
from __future__ import annotations

import sys
import time

import pytest
import torch

import rnnkit
from rnnkit.verify.memory import bytes_per_step, peak_rss_growth, saved_bytes

H = 64


@pytest.mark.parametrize("cls", [rnnkit.LSTM, rnnkit.GRU], ids=["lstm", "gru"])
def test_hundred_thousand_steps_forward_and_backward(cls):
    """The full size of the issue on the default backend (the fused kernels): B = 1, H = 64."""
    T = 100_000
    torch.manual_seed(0)
    layer = cls(H, H)
    x = torch.randn(T, 1, H, requires_grad=True)
    limit = sys.getrecursionlimit()
    out, state = layer(x)
    (out[-1].sum() + out[0].sum()).backward()  # the first step's gradient crosses all T steps
    assert sys.getrecursionlimit() == limit  # nothing raised it to get through
    assert out.shape == (T, 1, H)
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    assert x.grad[0].abs().sum() > 0  # the early steps do get a gradient


@pytest.mark.parametrize("cls", [rnnkit.LSTM, rnnkit.GRU], ids=["lstm", "gru"])
def test_long_sequence_on_the_reference_backend(cls):
    """The reference loop (autograd through T Python steps): 10,000 steps in CI, no recursion limit hit
    with Python's default limit of 1000 frames."""
    T = 10_000
    torch.manual_seed(0)
    layer = cls(H, H, backend="reference")
    x = torch.randn(T, 1, H, requires_grad=True)
    out, _ = layer(x)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0].abs().sum() > 0


def _best_time(layer, T, repeats=3):
    best = float("inf")
    x = torch.randn(T, 1, H, requires_grad=True)
    for _ in range(repeats):
        start = time.perf_counter()
        out, _ = layer(x)
        out.sum().backward()
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("backend,T", [("reference", 1000), ("fused", 5000)])
def test_cost_is_linear_in_the_length(backend, T):
    """Forward+backward at 4T costs about 4 times T (quadratic would be 16; the reference loop's
    backward was quadratic until scan split its input once instead of slicing it per step)."""
    torch.manual_seed(0)
    layer = rnnkit.LSTM(H, H, backend=backend)
    _best_time(layer, 64, repeats=1)  # warm-up (numba compiles on first use)
    ratio = _best_time(layer, 4 * T) / _best_time(layer, T)
    assert ratio < 8, f"4x the steps took {ratio:.1f}x the time"


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_saved_memory_is_linear_with_a_constant_cost_per_step(mode, backend):
    """Bytes saved for the backward grow by the same amount per step at any length (no O(T^2) term),
    and that amount is a few times one step's state: never a copy of the whole sequence per step."""
    small = bytes_per_step(mode, H, backend=backend, steps=(200, 400))
    large = bytes_per_step(mode, H, backend=backend, steps=(400, 1600))
    assert small == pytest.approx(large, rel=0.02)
    gates = {"lstm": 4, "gru": 3, "rnn_tanh": 1}[mode]
    assert 0 < large <= 4 * (2 * gates + 4) * H  # float32: a few vectors of gates and states per step


def test_bytes_per_step_matches_saved_bytes_and_rejects_bad_arguments():
    torch.manual_seed(0)
    layer = rnnkit.GRU(8, 8, backend="fused")
    a = saved_bytes(layer, torch.randn(100, 2, 8, requires_grad=True))
    b = saved_bytes(layer, torch.randn(300, 2, 8, requires_grad=True))
    assert (b - a) / 200 == bytes_per_step("gru", 8, batch=2, backend="fused", steps=(100, 300))
    with pytest.raises(ValueError):
        bytes_per_step("transformer")
    with pytest.raises(ValueError):
        bytes_per_step("lstm", steps=(10, 5))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_resident_memory_grows_linearly():
    """Measured the other way, in fresh processes: the peak resident-set growth of forward+backward."""
    small, large = peak_rss_growth("lstm", [10_000, 40_000])
    per_step = (large - small) / 30_000
    assert large < 4 * small * 1.5 + 16 * 2**20, (small, large)
    assert per_step < 16 * 4 * H * 4, per_step  # under 16 float32 vectors of H per step
