"""rnnkit's C++ operators (backend="ops") against its numba kernels (backend="numba") and torch.nn,
side by side in one process.

Each case builds the three layers with identical parameters and times them interleaved (the order
rotates every repeat, so drifts of a noisy machine hit all three), median of the repeats after a warm-up
(which also compiles the numba kernels, or loads them from numba's cache).  "fwd" runs under no_grad;
"fwd+bwd" is a forward with the input requiring grad and ``out.sum().backward()``, as ``rnnkit bench``.

    python benchmarks/ops_vs_numba.py [--repeats 15] [--threads 2] [--modes lstm gru] [--json FILE]

Ratios: "ops/numba" and "ops/torch" are time ratios, below 1 means backend="ops" is faster.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import rnnkit
from rnnkit.bench.machine import cpu_name

SHAPES = [(1, 1, 256, 256), (1, 32, 256, 256), (100, 1, 32, 32), (200, 16, 64, 64), (100, 32, 256, 256)]
IMPLEMENTATIONS = ("torch.nn", "numba", "ops")


def build(mode: str, input_size: int, hidden_size: int) -> dict:
    """The three layers of one case, sharing torch.nn's parameters."""
    torch_cls, ours_cls = {"lstm": (torch.nn.LSTM, rnnkit.LSTM), "gru": (torch.nn.GRU, rnnkit.GRU)}[mode]
    torch.manual_seed(0)
    reference = torch_cls(input_size, hidden_size)
    layers = {"torch.nn": reference}
    for backend in ("numba", "ops"):
        layer = ours_cls(input_size, hidden_size, backend=backend)
        layer.load_state_dict(reference.state_dict())
        layers[backend] = layer
    return layers


def runner(layer, x: torch.Tensor, backward: bool):
    def run():
        if backward:
            xx = x.detach().requires_grad_(True)
            out, _ = layer(xx)
            out.sum().backward()
            layer.zero_grad(set_to_none=False)
        else:
            with torch.no_grad():
                layer(x)
    return run


def time_interleaved(runs: dict, repeats: int, warmup: int, sample_seconds: float = 0.02) -> dict:
    """Median seconds per call of each implementation, run in a rotating order.  A sample is one call,
    or as many as last about ``sample_seconds`` where a call is shorter (a one-step call takes well
    under a millisecond, where one call's time is mostly the noise of the machine)."""
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    calls = {}
    for name in names:
        t0 = time.perf_counter()
        runs[name]()
        calls[name] = max(1, int(sample_seconds / max(time.perf_counter() - t0, 1e-7)))
    times = {name: [] for name in names}
    for i in range(repeats):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                runs[name]()
            times[name].append((time.perf_counter() - t0) / calls[name])
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["lstm", "gru"])
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU: {cpu_name()}, "
          f"median of {args.repeats}; ratios < 1: ops faster")
    header = (f"{'mode':5} | {'T,B,I,H':15} | {'pass':7} | {'torch.nn ms':>11} | {'numba ms':>9} | {'ops ms':>9} | "
              f"{'ops/numba':>9} | {'ops/torch':>9}")
    print(header)
    print("-" * len(header))
    rows = []
    for mode in args.modes:
        for shape in SHAPES:
            T, B, I, H = shape
            layers = build(mode, I, H)
            x = torch.randn(T, B, I, generator=torch.Generator().manual_seed(1))
            for backward in (False, True):
                runs = {name: runner(layers[name], x, backward) for name in IMPLEMENTATIONS}
                ms = {k: 1e3 * v for k, v in time_interleaved(runs, args.repeats, args.warmup).items()}
                row = {"mode": mode, "shape": shape, "pass": "fwd+bwd" if backward else "fwd", **ms,
                       "ops/numba": ms["ops"] / ms["numba"], "ops/torch": ms["ops"] / ms["torch.nn"]}
                rows.append(row)
                print(f"{mode:5} | {','.join(map(str, shape)):15} | {row['pass']:7} | {ms['torch.nn']:11.3f} | "
                      f"{ms['numba']:9.3f} | {ms['ops']:9.3f} | {row['ops/numba']:9.2f} | {row['ops/torch']:9.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_name(), "torch": torch.__version__, "threads": args.threads, "rows": rows}, f,
                      indent=1)
    return rows


if __name__ == "__main__":
    main()
