"""bfloat16 LSTM and GRU, rnnkit's against torch.nn's own bfloat16 layers, side by side in one process
(issue 17's target: forward+backward at least as fast as torch.nn's bfloat16 on the CPU).

Both layers hold the same parameters in bfloat16 and take the same bfloat16 input; the two run
interleaved (the order rotating every repeat), median of the repeats after a warm-up.  "fwd" runs
under no_grad; "fwd+bwd" is a forward with the input requiring grad and ``out.float().sum().backward()``.

    python benchmarks/half_precision.py [--repeats 9] [--threads 2] [--dtype bfloat16] [--json FILE]

Ratio: rnnkit's time / torch.nn's, below 1 means rnnkit is faster.
"""
from __future__ import annotations

import argparse
import json

import torch

import rnnkit
from ops_vs_numba import time_interleaved  # this folder's scripts
from rnnkit.bench.machine import cpu_name

SHAPES = [(100, 1, 32, 32), (200, 16, 64, 64), (100, 32, 256, 256), (50, 64, 512, 512)]
MODES = {"lstm": (rnnkit.LSTM, torch.nn.LSTM), "gru": (rnnkit.GRU, torch.nn.GRU)}


def runner(layer, x, backward: bool):
    def run():
        if backward:
            xx = x.detach().requires_grad_()
            out, _ = layer(xx)
            out.float().sum().backward()
            layer.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                layer(x)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    parser.add_argument("--json", help="write the rows here as well")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    rows = []
    print(f"torch {torch.__version__}, {args.threads} threads, CPU: {cpu_name()}, {args.dtype}, median of "
          f"{args.repeats}; ratio = rnnkit time / torch.nn time")
    print(f"{'mode':5} | {'T,B,I,H':15} | {'pass':7} | {'torch.nn ms':>11} | {'rnnkit ms':>9} | {'ratio':>5}")
    for mode, (ours_cls, theirs_cls) in MODES.items():
        for T, B, I, H in SHAPES:
            torch.manual_seed(0)
            theirs = theirs_cls(I, H).to(dtype)
            ours = ours_cls(I, H).to(dtype)
            ours.load_state_dict(theirs.state_dict())
            x = torch.randn(T, B, I).to(dtype)
            for backward in (False, True):
                got = time_interleaved({"torch.nn": runner(theirs, x, backward), "rnnkit": runner(ours, x, backward)},
                                       args.repeats, warmup=2)
                row = {"mode": mode, "shape": [T, B, I, H], "pass": "fwd+bwd" if backward else "fwd",
                       "torch_ms": got["torch.nn"] * 1e3, "rnnkit_ms": got["rnnkit"] * 1e3,
                       "ratio": got["rnnkit"] / got["torch.nn"]}
                rows.append(row)
                print(f"{mode:5} | {','.join(map(str, row['shape'])):15} | {row['pass']:7} | {row['torch_ms']:11.3f} | "
                      f"{row['rnnkit_ms']:9.3f} | {row['ratio']:5.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"processor": cpu_name(), "threads": args.threads, "dtype": args.dtype, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
