"""torch.nn (cuDNN) against rnnkit's CUDA backend ("fused_cuda"), side by side in one process.

    python benchmarks/bench_gpu.py --out results_dir [--sections grid,packed,fp16gru] [--quick]

Times one layer over T=512 steps (input size = hidden size), forward (under no_grad, the
inference path of both) and forward+backward (parameters require grad; backward from a
fixed random output gradient), with CUDA events around each call, after warm-up (which
includes rnnkit's first eager run and its CUDA-graph capture), the two implementations
alternated call by call, median of the repeats.  Float32 runs under torch's defaults:
cuDNN uses TF32 (torch.backends.cudnn.allow_tf32 is True) and so does rnnkit, which
follows that flag.  ratio = cuDNN time / rnnkit time (> 1: rnnkit faster).  Each row also
records the relative difference of the two outputs.

``run_gpu_bench(cases)`` and ``markdown(rows)`` are what ``rnnkit bench --device cuda``
can call.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
from torch.nn.utils.rnn import pack_padded_sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import rnnkit  # noqa: E402
from rnnkit import kernels  # noqa: E402
from rnnkit.kernels.gpu import CudaFusedKernel, clear_cache  # noqa: E402

T = 512
BATCHES = (1, 8, 64, 256)
HIDDEN = (128, 256, 512, 1024)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cases(sections=("grid", "packed", "fp16gru"), quick=False):
    """(cell, dtype name, B, H, packed, pass) tuples of the issue's grid."""
    batches, hidden = ((1, 64), (256, 1024)) if quick else (BATCHES, HIDDEN)
    res = []
    if "grid" in sections:
        for cell in ("lstm", "gru"):
            for dt in ("float32", "bfloat16"):
                for B in batches:
                    for H in hidden:
                        for p in ("fwd", "fwd+bwd"):
                            res.append((cell, dt, B, H, False, p))
    if "packed" in sections:
        for dt in ("float32", "bfloat16"):
            for B in batches:
                if B == 1:
                    continue
                for H in hidden:
                    for p in ("fwd", "fwd+bwd"):
                        res.append(("lstm", dt, B, H, True, p))
    if "fp16gru" in sections:
        for B in batches:
            for H in hidden:
                for p in ("fwd", "fwd+bwd"):
                    res.append(("gru", "float16", B, H, False, p))
    return res


def _ensure_registered():
    if "fused_cuda" not in kernels.BACKENDS:
        kernels.register(CudaFusedKernel(), auto=False)


def _time_pair(fa, fb, prep, warmup=3, repeats=15, budget_s=2.5):
    """Median milliseconds of fa and fb (alternated), CUDA events around each call."""
    for _ in range(warmup):
        prep()
        fa()
        prep()
        fb()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    prep()
    fa()
    prep()
    fb()
    torch.cuda.synchronize()
    one = time.perf_counter() - t0
    repeats = max(3, min(repeats, int(budget_s / max(one, 1e-6))))
    ta, tb = [], []
    for i in range(repeats):
        order = ((fa, ta), (fb, tb)) if i % 2 == 0 else ((fb, tb), (fa, ta))
        for fn, acc in order:
            prep()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            acc.append(s.elapsed_time(e))
    return statistics.median(ta), statistics.median(tb), repeats


def bench_one(cell, dtype_name, B, H, packed, pas, seed=0):
    _ensure_registered()
    dtype = DTYPES[dtype_name]
    dev = "cuda"
    torch.manual_seed(seed)
    nn_cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    rk_cls = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU}[cell]
    ref = nn_cls(H, H, device=dev, dtype=dtype)
    mine = rk_cls(H, H, device=dev, dtype=dtype, backend="fused_cuda")
    mine.load_state_dict(ref.state_dict())
    # a module built directly on the GPU has not flattened its weights yet: without this cuDNN
    # would compact them at every call (and warn), which is not how torch.nn is used
    ref.flatten_parameters()
    x = torch.randn(T, B, H, device=dev, dtype=dtype)
    if packed:  # lengths spread evenly from T down to T/4, sorted (a shrinking batch)
        lengths = torch.linspace(T, T // 4, B).round().long()
        inp = pack_padded_sequence(x, lengths)
    else:
        inp = x
    gout = torch.randn((inp.data if packed else x).shape, device=dev, dtype=dtype)
    train = pas == "fwd+bwd"
    for m in (ref, mine):
        m.requires_grad_(train)

    def call(m):
        def f():
            if train:
                out, _ = m(inp)
                (out.data if packed else out).backward(gout)
            else:
                with torch.no_grad():
                    m(inp)
        return f

    def prep():
        for m in (ref, mine):
            for p in m.parameters():
                p.grad = None

    with torch.no_grad():
        a = ref(inp)[0]
        b = mine(inp)[0]
        a, b = (a.data, b.data) if packed else (a, b)
        diff = ((a.float() - b.float()).norm() / a.float().norm()).item()
    t_ref, t_mine, reps = _time_pair(call(ref), call(mine), prep)
    # torch.nn runs cuDNN where ATen accepts the dtype for cuDNN, else its own per-step loop
    nn_path = "cudnn" if torch.ops.aten.cudnn_is_acceptable(x) else "native"
    row = dict(cell=cell, dtype=dtype_name, B=B, H=H, I=H, T=T, packed=packed, pass_=pas, nn_path=nn_path,
               cudnn_ms=t_ref, rnnkit_ms=t_mine, ratio=t_ref / t_mine, out_rel_diff=diff, repeats=reps)
    del ref, mine, x, inp, gout
    clear_cache()
    torch.cuda.empty_cache()
    return row


def run_gpu_bench(case_list, log=None, progress=print):
    rows = []
    for c in case_list:
        try:
            row = bench_one(*c)
        except Exception as e:  # noqa: BLE001  (recorded, not hidden)
            row = dict(cell=c[0], dtype=c[1], B=c[2], H=c[3], I=c[3], T=T, packed=c[4], pass_=c[5],
                       error=f"{type(e).__name__}: {e}"[:300])
            clear_cache()
            torch.cuda.empty_cache()
        rows.append(row)
        if log is not None:
            log.write(json.dumps(row) + "\n")
            log.flush()
        if progress:
            progress(_line(row))
    return rows


def _line(r):
    name = f"{r['cell']}{'(packed)' if r['packed'] else ''} {r['dtype']} B={r['B']} H={r['H']} {r['pass_']}"
    if "error" in r:
        return f"{name}: ERROR {r['error']}"
    return (f"{name}: cudnn {r['cudnn_ms']:.3f} ms  rnnkit {r['rnnkit_ms']:.3f} ms  ratio {r['ratio']:.2f}"
            f"  diff {r['out_rel_diff']:.1e}")


def _gmean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def summary(rows):
    ok = [r for r in rows if "error" not in r]
    grid = [r for r in ok if not r["packed"] and r["dtype"] in ("float32", "bfloat16")]
    out = {}
    for cell in ("lstm", "gru"):
        sel = [r["ratio"] for r in grid if r["cell"] == cell]
        out[f"{cell} grid geomean (target >= 1.0)"] = (_gmean(sel), len(sel))
    sel = [r["ratio"] for r in grid if r["dtype"] == "float32" and r["B"] <= 16 and 256 <= r["H"] <= 1024]
    out["float32, B <= 16, H 256-1024 geomean (target >= 1.5)"] = (_gmean(sel), len(sel))
    sel = [r["ratio"] for r in ok if r["packed"]]
    out["packed LSTM geomean (target >= 1.5)"] = (_gmean(sel), len(sel))
    sel = [r["ratio"] for r in ok if r["dtype"] == "float16" and r["cell"] == "gru"]
    out["float16 GRU geomean (target >= 1.5)"] = (_gmean(sel), len(sel))
    return out


def markdown(rows, header=""):
    lines = [header] if header else []
    lines += ["| cell | dtype | packed | B | H=I | pass | torch.nn path | torch.nn ms | rnnkit ms | ratio | out rel. diff |",
              "|---|---|---|---:|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['cell']} | {r['dtype']} | {r['packed']} | {r['B']} | {r['H']} | {r['pass_']} | "
                         f" | error: {r['error']} | | | |")
            continue
        lines.append(f"| {r['cell']} | {r['dtype']} | {'yes' if r['packed'] else 'no'} | {r['B']} | {r['H']} | "
                     f"{r['pass_']} | {r.get('nn_path', '?')} | {r['cudnn_ms']:.3f} | {r['rnnkit_ms']:.3f} | {r['ratio']:.2f} | "
                     f"{r['out_rel_diff']:.1e} |")
    lines += ["", "| target (ratio = cuDNN time / rnnkit time) | geometric mean | cases |", "|---|---:|---:|"]
    for k, (g, n) in summary(rows).items():
        lines.append(f"| {k} | {g:.2f} | {n} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=".")
    ap.add_argument("--sections", default="grid,packed,fp16gru")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    cl = cases(tuple(args.sections.split(",")), args.quick)
    name = torch.cuda.get_device_name()
    tag = args.tag or args.sections.replace(",", "-")
    with open(os.path.join(args.out, f"bench-{tag}.jsonl"), "w") as log:
        rows = run_gpu_bench(cl, log)
    header = (f"GPU: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
              f"{torch.backends.cudnn.version()}; T={T}, I=H; cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}\n"
              f"command: python benchmarks/bench_gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    md = markdown(rows, header)
    with open(os.path.join(args.out, f"bench-{tag}.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, f"bench-{tag}.json"), "w") as f:
        json.dump(dict(gpu=name, rows=rows), f, indent=1)
    print(md)


if __name__ == "__main__":
    main()
