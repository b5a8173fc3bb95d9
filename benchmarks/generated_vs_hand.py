"""rnnkit's own cells on the kernels generated from their equations against their hand-written kernels
(issue 18: the hand kernels go wherever the generated one is within 10% of them).

    python benchmarks/generated_vs_hand.py [--threads 2] [--cells lstm,layernorm_lstm,...] [--json out.json]

For torch.nn's families and each size of the bench grid, ``Recurrent(cell, backend="generated")`` against
the same layer on the kernel ``backend="ops"`` names (the C++ operators, tuned by hand), forward (no grad)
and forward+backward, timed side by side in one process (rnnkit.bench.timing.time_pair: alternating,
median).  The ratio is the generated kernel's time over the hand kernel's: below 1 the generated one is
faster.  What ``backend="auto"`` runs follows from it (rnnkit/kernels/generator/layer.py,
GeneratedKernel.auto_cells).

rnnkit's other cells were measured the same way against their hand-written numba kernels until those
were removed (2026-12-07: the generated kernels were within 10% of them or faster everywhere); that run
is recorded in benchmarks/results/generated-vs-hand-avx2.json, and ``git checkout 9e76f75`` has the script
and the kernels that reproduce it.
"""
from __future__ import annotations

import argparse
import json
import sys

SHAPES = [(100, 1, 32, 32), (200, 16, 64, 64), (100, 32, 256, 256), (50, 64, 512, 512)]  # T, B, I, H
# name -> (cell class name in rnnkit.cells, its keyword arguments, the hand kernel's backend)
CELLS = {"lstm": ("LSTMCell", {}, "ops"), "gru": ("GRUCell", {}, "ops"), "rnn_tanh": ("RNNCell", {}, "ops")}


def measure(name: str, shape: tuple, repeats: int) -> list:
    import torch

    import rnnkit
    from rnnkit.bench.timing import time_pair

    cls_name, kwargs, hand_backend = CELLS[name]
    cls = getattr(rnnkit.cells, cls_name)
    T, B, I, H = shape
    torch.manual_seed(0)
    hand = rnnkit.Recurrent(cls, I, H, backend=hand_backend, **kwargs)
    generated = rnnkit.Recurrent(cls, I, H, backend="generated", **kwargs)
    generated.load_state_dict(hand.state_dict())
    x = torch.randn(T, B, I)

    def forward(layer):
        def run():
            with torch.no_grad():
                layer(x)
        return run

    def training(layer):
        def run():
            layer(x.detach().requires_grad_(True))[0].sum().backward()
            layer.zero_grad(set_to_none=False)
        return run

    rows = []
    for pass_, make in (("fwd", forward), ("fwd+bwd", training)):
        t_hand, t_generated = time_pair(make(hand), make(generated), repeats=repeats, warmup=3, min_time=0.05)
        rows.append({"cell": name, "shape": list(shape), "pass": pass_, "hand_backend": hand_backend,
                     "hand_ms": t_hand * 1e3, "generated_ms": t_generated * 1e3, "ratio": t_generated / t_hand})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch's threads (rnnkit bench uses 2)")
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated, of: " + ", ".join(CELLS))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import torch

    from rnnkit.bench.machine import cpu_name
    torch.set_num_threads(args.threads)
    rows = []
    for shape in SHAPES:
        for name in args.cells.split(","):
            for row in measure(name, shape, args.repeats):
                rows.append(row)
                print(f"{row['cell']:<18} T,B,I,H={','.join(map(str, row['shape'])):<14} {row['pass']:<8} "
                      f"{row['hand_backend']:<6} {row['hand_ms']:9.3f} ms  generated {row['generated_ms']:9.3f} ms  "
                      f"ratio {row['ratio']:5.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "torch": torch.__version__, "processor": cpu_name(), "rows": rows},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
