"""What a recurrence keeps for its backward, per step: the memory side of long sequences.

``saved_bytes(layer, x)`` runs one forward with autograd recording and adds up the distinct
storage of every tensor autograd saves for the backward (``torch.autograd.graph.
saved_tensors_hooks``; a storage saved many times, e.g. a weight saved by every step, counts
once).  That is the memory a forward holds until its backward runs, the part that grows with
the sequence length; the rest of a step's memory is transient.

``bytes_per_step(...)`` measures it at two lengths and returns the slope, so constant costs
(weights, the initial state) cancel: the number ``rnnkit bench`` reports as bytes per step,
and the tests use to assert that memory grows linearly in T.

``peak_rss_growth(...)`` measures the other way, in a fresh process: the growth of the
resident set (VmHWM) over one forward+backward (Linux only), for a check that does not
rely on autograd's bookkeeping.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Optional

import torch

MODES = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def make_layer(mode: str, input_size: int, hidden_size: int, *, backend: str = "auto",
               dtype=torch.float32, num_layers: int = 1, bidirectional: bool = False):
    import rnnkit
    cls = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU, "rnn_tanh": rnnkit.RNN, "rnn_relu": rnnkit.RNN}[mode]
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, dtype=dtype, backend=backend)
    if mode.startswith("rnn_"):
        kwargs["nonlinearity"] = mode[4:]
    return cls(input_size, hidden_size, **kwargs)


def saved_bytes(layer, x, hx=None) -> int:
    """Bytes of distinct storage autograd saves for the backward of ``layer(x, hx)``."""
    storages: dict = {}

    def pack(t):
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            s = t.untyped_storage()
            storages[(s.data_ptr(), t.device.type)] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = layer(x, hx)
    del out
    return sum(storages.values())


def bytes_per_step(mode: str = "lstm", hidden_size: int = 64, input_size: Optional[int] = None,
                   batch: int = 1, *, backend: str = "auto", dtype=torch.float32,
                   steps: tuple = (1000, 2000), num_layers: int = 1, bidirectional: bool = False) -> float:
    """Saved-for-backward bytes per time step of a layer, the slope between two sequence lengths.

    ``mode`` is one of lstm, gru, rnn_tanh, rnn_relu; the input needs grad, as in training.
    Linear memory means this number does not depend on ``steps``.
    """
    if mode not in MODES:
        raise ValueError(f"mode should be one of {', '.join(MODES)}, got {mode!r}")
    t1, t2 = steps
    if not 0 < t1 < t2:
        raise ValueError(f"steps should be two increasing positive lengths, got {steps}")
    input_size = input_size or hidden_size
    torch.manual_seed(0)
    layer = make_layer(mode, input_size, hidden_size, backend=backend, dtype=dtype,
                       num_layers=num_layers, bidirectional=bidirectional)
    sizes = []
    for T in (t1, t2):
        x = torch.randn(T, batch, input_size, dtype=dtype, requires_grad=True)
        sizes.append(saved_bytes(layer, x))
    return (sizes[1] - sizes[0]) / (t2 - t1)


# ----- peak resident set, in a fresh process -------------------------------------------------
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1)) * 1024


def _measure_here(mode: str, steps: list, batch: int, input_size: int, hidden_size: int, backend: str) -> list:
    import gc

    torch.manual_seed(0)
    layer = make_layer(mode, input_size, hidden_size, backend=backend)

    def once(T):
        x = torch.randn(T, batch, input_size, requires_grad=True)
        out, _ = layer(x)
        out.sum().backward()

    once(8)  # warm-up: compile caches, thread pools, allocator arenas
    growth = []
    for T in steps:
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        base = _status("VmRSS")
        once(T)
        growth.append(_status("VmHWM") - base)
    return growth


def peak_rss_growth(mode: str, steps, batch: int = 1, input_size: int = 64, hidden_size: int = 64,
                    backend: str = "auto", timeout: float = 600):
    """Peak resident-set growth (bytes) of one forward+backward over ``steps`` steps, in a fresh process
    (glibc told to return freed blocks at once); a list when ``steps`` is a list of lengths, measured one
    after the other in that process.  None off Linux."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    lengths = [int(steps)] if isinstance(steps, int) else [int(t) for t in steps]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "rnnkit.verify.memory", mode, ",".join(map(str, lengths)), str(batch),
           str(input_size), str(hidden_size), backend]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"memory measurement failed: {res.stderr.strip()[-2000:]}")
    growth = json.loads(res.stdout.strip().splitlines()[-1])
    return growth[0] if isinstance(steps, int) else growth


if __name__ == "__main__":
    torch.set_num_threads(1)
    m, T, B, I, H, be = sys.argv[1:7]
    print(json.dumps(_measure_here(m, [int(t) for t in T.split(",")], int(B), int(I), int(H), be)))


__all__ = ["saved_bytes", "bytes_per_step", "peak_rss_growth", "make_layer"]
