"""Peak memory of one forward+backward, measured in a fresh process per implementation.

The process's peak resident set (VmHWM) is reset after warm-up (/proc/self/clear_refs)
and read after one forward+backward; the figure is the growth over the resident set
before the pass.  glibc is told to serve every block over 4 KiB by mmap
(MALLOC_MMAP_THRESHOLD_), so freed buffers leave the resident set at once (no reuse of
memory kept from the warm-up) and both implementations are measured the same way, small
per-step tensors included.  Page-granular; Linux only.

Run as ``python -m rnnkit.bench.memory IMPL MODE T B I H`` (IMPL: rnnkit or torch); prints bytes.
"""
from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1)) * 1024


def measure_here(impl: str, mode: str, shape: tuple) -> int:
    from .cases import Case, make_runners

    rk, tw = make_runners(Case(mode, shape, "fwd+bwd"))
    run = rk if impl == "rnnkit" else tw
    run()
    run()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status("VmRSS")
    run()
    return _status("VmHWM") - base


def measure(impl: str, mode: str, shape: tuple, threads: int) -> int | None:
    """Peak bytes of one forward+backward of ``impl`` in a subprocess; None where unsupported."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="4096", MALLOC_TRIM_THRESHOLD_="0",
               OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "rnnkit.bench.memory", impl, mode, *map(str, shape), str(threads)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    import torch

    impl, mode = sys.argv[1], sys.argv[2]
    shape = tuple(int(v) for v in sys.argv[3:7])
    torch.set_num_threads(int(sys.argv[7]))
    print(json.dumps(measure_here(impl, mode, shape)))
