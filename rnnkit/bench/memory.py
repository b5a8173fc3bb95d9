"""Peak memory of one forward+backward: the most bytes of tensor memory alive at once.

Every allocation and free of torch's CPU allocator during one forward+backward (after two
warm-up passes) is recorded by torch's profiler (``profile_memory=True``), in time order;
the figure is the highest running total.  rnnkit's kernels allocate all their buffers as
torch tensors, so both implementations are counted by the same rule, byte-exact.  Memory
that does not come from torch's allocator is not counted: scratch that oneDNN or MKL keep
inside torch.nn's kernels (rnnkit's numba kernels allocate none), so torch.nn's figure is,
if anything, too low.

Why not the resident set: its growth over a pass (VmHWM) misses memory the heap freed during
warm-up and hands out again, so per-step tensors of a few KiB go uncounted, at random: torch.nn's
GRU at (200, 16, 64, 64) read 3.4, 3.4 and 6.0 MB in three runs, where its tensors peak at 8.6 MB.

Run as ``python -m rnnkit.bench.memory IMPL MODE T B I H THREADS`` (IMPL: rnnkit or torch); prints bytes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys


def peak_tensor_bytes(run) -> int:
    """The most bytes of CPU tensor memory alive at once during ``run()``, counted from the start."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    # The raw events keep every allocation (nbytes > 0) and free (< 0) with its time; the
    # aggregated FunctionEvents merge them per operator.
    changes = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type().name == "CPU")
    live = peak = 0
    for _, nbytes in changes:
        live += nbytes
        peak = max(peak, live)
    return peak


def measure_here(impl: str, mode: str, shape: tuple) -> int:
    from .cases import Case, make_runners

    rk, tw = make_runners(Case(mode, shape, "fwd+bwd"))
    run = rk if impl == "rnnkit" else tw
    run()
    run()
    return peak_tensor_bytes(run)


def measure(impl: str, mode: str, shape: tuple, threads: int) -> int | None:
    """Peak tensor bytes of one forward+backward of ``impl``, in a fresh process; None where it fails."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "rnnkit.bench.memory", impl, mode, *map(str, shape), str(threads)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    impl, mode = sys.argv[1], sys.argv[2]
    shape = tuple(int(v) for v in sys.argv[3:7])
    torch.set_num_threads(int(sys.argv[7]))
    print(json.dumps(measure_here(impl, mode, shape)))
