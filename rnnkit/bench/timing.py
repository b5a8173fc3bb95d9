"""Side-by-side timing: torch.nn and rnnkit interleaved in one process, median of repeats."""
from __future__ import annotations

import statistics
import time


def time_pair(fn_a, fn_b, repeats: int = 15, warmup: int = 2, min_time: float = 0.0) -> tuple:
    """Median seconds of fn_a and fn_b, run alternately (a b, b a, ...) so drifts hit both."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta, tb = [], []
    for i in range(repeats):
        order = ((fn_a, ta), (fn_b, tb)) if i % 2 == 0 else ((fn_b, tb), (fn_a, ta))
        for fn, acc in order:
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)
