"""Side-by-side timing: torch.nn and rnnkit interleaved in one process, median of repeats."""
from __future__ import annotations

import math
import statistics
import time


def time_pair(fn_a, fn_b, repeats: int = 15, warmup: int = 2, min_time: float = 0.0) -> tuple:
    """Median seconds per call of fn_a and fn_b, run alternately (a b, b a, ...) so drifts hit both.

    With ``min_time``, each sample runs its function as many times as it takes to last about that
    long (counted from the warm-up), and reports the time per call: a call much shorter than the other
    function's otherwise runs cold after it (measured: a 0.6 ms forward+backward took 1.3-1.5 ms when
    each sample ran it once between 12 ms calls of another function, or of time.sleep)."""
    counts = {fn_a: 1, fn_b: 1}
    for _ in range(warmup):
        for fn in (fn_a, fn_b):
            t0 = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - t0
            if min_time > 0:
                counts[fn] = max(1, math.ceil(min_time / max(elapsed, 1e-9)))
    ta, tb = [], []
    for i in range(repeats):
        order = ((fn_a, ta), (fn_b, tb)) if i % 2 == 0 else ((fn_b, tb), (fn_a, ta))
        for fn, acc in order:
            t0 = time.perf_counter()
            for _ in range(counts[fn]):
                fn()
            acc.append((time.perf_counter() - t0) / counts[fn])
    return statistics.median(ta), statistics.median(tb)
