"""The first forward+backward of each layer kind in a fresh process, rnnkit's against torch.nn's
(issue 17's target: at most 1 s beyond torch.nn's), and what ``import rnnkit`` adds to ``import torch``
(target: at most 0.3 s).

Each measurement runs in its own fresh Python process (nothing imported, nothing compiled or cached in
memory), interleaved rnnkit / torch.nn, median of the repeats:

    python benchmarks/first_call.py [--repeats 5] [--json FILE]

A "first call" is: build the layer (float32, T=50, B=8, I=H=64, two layers), run forward and backward
once, timed from after the imports.  The import time is ``import torch`` alone against
``import torch, rnnkit``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from rnnkit.bench.machine import cpu_name  # the processor as lscpu names it

CHILD = r"""
import sys, time
t0 = time.perf_counter()
import torch
t_torch = time.perf_counter()
impl, kind = sys.argv[1], sys.argv[2]
if impl == "import":
    if kind == "rnnkit":
        import rnnkit  # noqa: F401
    print(time.perf_counter() - t0)
    raise SystemExit
module = __import__("rnnkit") if impl == "rnnkit" else torch.nn
t1 = time.perf_counter()
cls = {"lstm": module.LSTM, "gru": module.GRU, "rnn": module.RNN}[kind]
layer = cls(64, 64, num_layers=2)
x = torch.randn(50, 8, 64, requires_grad=True)
out, _ = layer(x)
out.sum().backward()
print(time.perf_counter() - t1)
"""

KINDS = ("lstm", "gru", "rnn")


def fresh(impl: str, kind: str) -> float:
    result = subprocess.run([sys.executable, "-c", CHILD, impl, kind], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the figures here as well")
    args = parser.parse_args()
    rows = {}
    for kind in KINDS:
        times = {"rnnkit": [], "torch.nn": []}
        for _ in range(args.repeats):
            times["rnnkit"].append(fresh("rnnkit", kind))
            times["torch.nn"].append(fresh("torch", kind))
        rows[kind] = {impl: statistics.median(t) for impl, t in times.items()}
    imports = {"torch": [], "torch+rnnkit": []}
    for _ in range(args.repeats):
        imports["torch"].append(fresh("import", "torch"))
        imports["torch+rnnkit"].append(fresh("import", "rnnkit"))
    import_times = {k: statistics.median(v) for k, v in imports.items()}
    print(f"{cpu_name()}, median of {args.repeats} fresh processes each")
    print(f"{'layer':6} | {'torch.nn s':>10} | {'rnnkit s':>9} | {'rnnkit - torch.nn':>17}")
    for kind, row in rows.items():
        print(f"{kind:6} | {row['torch.nn']:10.3f} | {row['rnnkit']:9.3f} | {row['rnnkit'] - row['torch.nn']:17.3f}")
    added = import_times["torch+rnnkit"] - import_times["torch"]
    print(f"import torch {import_times['torch']:.2f} s, import torch, rnnkit {import_times['torch+rnnkit']:.2f} s: "
          f"rnnkit adds {added:.2f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"processor": cpu_name(), "first_call_s": rows, "import_s": import_times,
                       "repeats": args.repeats}, f, indent=1)


if __name__ == "__main__":
    main()
