"""torch.nn.TransformerEncoderLayer vs rnnkit.TransformerEncoderLayer: forward + backward on the CPU.

Both layers are built from one seed (identical parameters) and run on the same input in
training mode, interleaved (torch, rnnkit, torch, rnnkit, ...) so that a slow moment of a
shared machine hits both; each time is the median over ``repeats``.  Run as a script::

    python benchmarks/bench_transformer.py [--repeats 20] [--threads N]

``measure()`` returns a dict (name, torch_ms, rnnkit_ms, ratio) for ``rnnkit bench``;
ratio = torch_ms / rnnkit_ms, so above 1 means rnnkit is faster.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import rnnkit.attention as rka

D_MODEL, NHEAD, BATCH, SEQ = 256, 8, 32, 128


def _step(layer: nn.Module, x: torch.Tensor) -> float:
    """One forward + backward; returns milliseconds."""
    start = time.perf_counter()
    layer(x).sum().backward()
    elapsed = time.perf_counter() - start
    layer.zero_grad(set_to_none=True)
    x.grad = None
    return elapsed * 1e3


def measure(repeats: int = 20, *, d_model: int = D_MODEL, nhead: int = NHEAD, batch: int = BATCH,
            seq: int = SEQ, batch_first: bool = True, warmup: int = 3, seed: int = 0) -> dict:
    """Median forward+backward time of each layer (ms) and the ratio torch/rnnkit."""
    if repeats < 1:
        raise ValueError(f"repeats should be at least 1, got {repeats}")
    torch.manual_seed(seed)
    ref = nn.TransformerEncoderLayer(d_model, nhead, batch_first=batch_first)
    torch.manual_seed(seed)
    ours = rka.TransformerEncoderLayer(d_model, nhead, batch_first=batch_first)
    ref.train()
    ours.train()
    shape = (batch, seq, d_model) if batch_first else (seq, batch, d_model)
    x = torch.randn(shape, requires_grad=True)
    for _ in range(warmup):
        _step(ref, x)
        _step(ours, x)
    torch_ms, rnnkit_ms = [], []
    for i in range(repeats):
        # Alternate which goes first, so neither always runs on a warmer cache.
        if i % 2 == 0:
            torch_ms.append(_step(ref, x))
            rnnkit_ms.append(_step(ours, x))
        else:
            rnnkit_ms.append(_step(ours, x))
            torch_ms.append(_step(ref, x))
    t, r = statistics.median(torch_ms), statistics.median(rnnkit_ms)
    return {
        "name": f"TransformerEncoderLayer fwd+bwd d_model={d_model} nhead={nhead} (B, S)=({batch}, {seq})",
        "torch_ms": t,
        "rnnkit_ms": r,
        "ratio": t / r,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for both layers (default: torch's own choice)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = measure(args.repeats)
    print(result["name"])
    print(f"threads      {torch.get_num_threads()}")
    print(f"torch.nn     {result['torch_ms']:8.2f} ms")
    print(f"rnnkit       {result['rnnkit_ms']:8.2f} ms")
    print(f"torch/rnnkit {result['ratio']:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
