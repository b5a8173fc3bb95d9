"""Run the grid and report: the table, the target summary, JSON and a bar chart."""
from __future__ import annotations

import json
import math
import platform

import torch

from . import memory
from .machine import cpu_name
from .cases import BASELINES, Case, grid, make_runners
from .timing import time_pair

# Targets of issue 3 (ratio = torch time / rnnkit time).
TARGETS = {"lstm": (1.0, 0.8), "gru": (2.0, 1.0), "rnn": (2.0, 1.0)}  # (geometric mean, no entry below)
# Issue 4: a layer-normalised LSTM's forward+backward within 1.5x torch.nn.LSTM's time; minGRU
# training faster than rnnkit's fused GRU (ratio = GRU time / minGRU time > 1).
LAYERNORM_LSTM_MAX_SLOWDOWN = 1.5
# Issue 18: a user's cell on its generated kernel, forward+backward, at least 20x the reference loop at
# the small sizes (T, B, I, H) = (100, 1, 32, 32) and (200, 16, 64, 64).
CUSTOM_CELL_MIN_SPEEDUP = 20.0
CUSTOM_CELL_SMALL = ([100, 1, 32, 32], [200, 16, 64, 64])


def run_case(case: Case, repeats: int, warmup: int) -> dict:
    rk, tw = make_runners(case)
    # a user's cell on its generated kernel runs 10-50x shorter than on the reference loop it is timed
    # against: its samples repeat it to about 20 ms, or it would run cold after each reference call
    min_time = 0.02 if case.family == "custom_cell" else 0.0
    t_torch, t_rnnkit = time_pair(tw, rk, repeats=repeats, warmup=warmup, min_time=min_time)
    return {"mode": case.mode, "shape": list(case.shape), "pass": case.pass_, "key": case.key,
            "family": case.family, "baseline": case.baseline, "torch_ms": t_torch * 1e3,
            "rnnkit_ms": t_rnnkit * 1e3, "ratio": t_torch / t_rnnkit}


def summarize(rows: list) -> list:
    """One line per family: geometric mean and minimum of the ratios of the main grid
    (the four shapes; the extra cases are reported on their own lines)."""
    from .cases import EXTRAS
    lines = []
    for fam, (gm_target, min_target) in TARGETS.items():
        ratios = [r["ratio"] for r in rows if r["family"] == fam and r["mode"] not in EXTRAS]
        if not ratios:
            continue
        gm = math.exp(sum(math.log(v) for v in ratios) / len(ratios))
        lo = min(ratios)
        ok = gm >= gm_target and lo >= min_target
        lines.append(f"{fam}: geometric mean {gm:.2f} (target >= {gm_target}), lowest {lo:.2f} "
                     f"(target >= {min_target}) over {len(ratios)} entries: {'met' if ok else 'NOT met'}")
    for r in rows:
        if r["mode"] in ("lstm_packed", "lstm_bi2", "transformer"):
            lines.append(f"{r['key']}: ratio {r['ratio']:.2f}")
    for r in rows:
        if r["mode"] == "layernorm_lstm" and r["pass"] == "fwd+bwd":
            slow = 1 / r["ratio"]
            ok = slow <= LAYERNORM_LSTM_MAX_SLOWDOWN
            lines.append(f"{r['key']}: {slow:.2f}x the time of torch.nn.LSTM (target <= "
                         f"{LAYERNORM_LSTM_MAX_SLOWDOWN}): {'met' if ok else 'NOT met'}")
    for r in rows:
        if r["mode"] == "min_gru" and r["pass"] == "fwd+bwd":
            lines.append(f"{r['key']} (fused sequential kernel, what auto runs on the CPU): rnnkit GRU time / "
                         f"minGRU time {r['ratio']:.2f} (target > 1): {'met' if r['ratio'] > 1 else 'NOT met'}")
        if r["mode"] == "min_gru_scan" and r["pass"] == "fwd+bwd":
            lines.append(f"{r['key']} (log-space parallel scan, backend='scan'): rnnkit GRU time / minGRU time "
                         f"{r['ratio']:.2f} (for comparison: on the CPU the scan's log/exp per element cost "
                         f"more than the sequential loop)")
    for r in rows:
        if r["mode"] == "transformer" and r["pass"] == "fwd+bwd":
            lines.append(f"transformer encoder layer fwd+bwd: ratio {r['ratio']:.2f} (target >= 0.95): "
                         f"{'met' if r['ratio'] >= 0.95 else 'NOT met'}")
    for r in rows:
        if r["family"] == "custom_cell" and r["pass"] == "fwd+bwd":
            if list(r["shape"]) in [list(s) for s in CUSTOM_CELL_SMALL]:
                ok = r["ratio"] >= CUSTOM_CELL_MIN_SPEEDUP
                lines.append(f"{r['key']}: {r['ratio']:.1f}x the reference loop (target >= "
                             f"{CUSTOM_CELL_MIN_SPEEDUP:.0f}): {'met' if ok else 'NOT met'}")
            else:
                lines.append(f"{r['key']}: {r['ratio']:.1f}x the reference loop")
    packed = [r for r in rows if r["mode"] == "lstm_packed" and r["pass"] == "fwd+bwd"]
    for r in packed:
        lines.append(f"packed lstm fwd+bwd: ratio {r['ratio']:.2f} (target >= 3.0): "
                     f"{'met' if r['ratio'] >= 3.0 else 'NOT met'}")
    mem = [r for r in rows if r.get("rnnkit_peak_mb") is not None and r.get("torch_peak_mb") is not None]
    if mem:
        worse = [r["key"] for r in mem if r["rnnkit_peak_mb"] > r["torch_peak_mb"]]
        lines.append(f"peak memory fwd+bwd: rnnkit <= torch in {len(mem) - len(worse)}/{len(mem)} entries"
                     + (f"; higher in: {', '.join(worse)}" if worse else ""))
    return lines


def table(rows: list) -> str:
    header = ["mode", "T,B,I,H", "pass", "against", "its ms", "rnnkit ms", "ratio", "peak MB torch",
              "peak MB rnnkit"]
    body = []
    for r in rows:
        mem = [f"{r[k]:.2f}" if r.get(k) is not None else "" for k in ("torch_peak_mb", "rnnkit_peak_mb")]
        body.append([r["mode"], ",".join(map(str, r["shape"])), r["pass"], r.get("baseline", "torch.nn"),
                     f"{r['torch_ms']:.3f}", f"{r['rnnkit_ms']:.3f}", f"{r['ratio']:.2f}", *mem])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    fmt = " | ".join("{:<%d}" % w for w in widths)
    lines = [fmt.format(*header), "-|-".join("-" * w for w in widths)]
    lines += [fmt.format(*row) for row in body]
    return "\n".join(lines)


def run(modes, shapes, passes, extras, repeats=15, warmup=2, threads=None, with_memory=True,
        progress=print) -> dict:
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    rows = []
    for case in grid(modes, shapes, passes, extras):
        row = run_case(case, repeats, warmup)
        # peak memory against torch.nn's twin only, not for the cases timed against another layer
        if with_memory and case.pass_ == "fwd+bwd" and case.mode not in BASELINES:
            for impl in ("torch", "rnnkit"):
                peak = memory.measure(impl, case.mode, case.shape, threads)
                row[f"{impl}_peak_mb"] = None if peak is None else peak / 2**20
        rows.append(row)
        if progress:
            mem = ""
            if row.get("torch_peak_mb") is not None:
                mem = f"  peak MB torch {row['torch_peak_mb']:.2f} rnnkit {row['rnnkit_peak_mb']:.2f}"
            against = "torch" if case.baseline.startswith("torch") else case.baseline
            progress(f"{case.key:<42} {against} {row['torch_ms']:9.3f} ms  rnnkit {row['rnnkit_ms']:9.3f} ms  "
                     f"ratio {row['ratio']:5.2f}{mem}")
    summary = summarize(rows)
    per_step = {}
    if with_memory:
        from rnnkit.verify.memory import bytes_per_step
        for mode in ("lstm", "gru"):
            per_step[mode] = bytes_per_step(mode, hidden_size=64)
            summary.append(f"{mode} B=1 H=64 float32: {per_step[mode]:,.0f} bytes kept per step for the backward "
                           f"(T=100,000: {per_step[mode] * 1e5 / 2**20:.0f} MB), linear in T")
    return {"threads": threads, "torch": torch.__version__, "machine": platform.machine(),
            "processor": cpu_name(), "repeats": repeats, "rows": rows,
            "bytes_per_step": per_step, "summary": summary}


def write_json(result: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


def write_png(result: dict, path: str) -> bool:
    """A bar chart of the ratios (log scale, 1.0 marked); False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = result["rows"]
    colors = {"lstm": "tab:blue", "gru": "tab:orange", "rnn": "tab:green", "transformer": "tab:purple",
              "layernorm_lstm": "tab:red", "min_gru": "tab:brown", "custom_cell": "tab:gray"}
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows) + 2), 5))
    ax.bar(range(len(rows)), [r["ratio"] for r in rows], color=[colors[r["family"]] for r in rows])
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["key"] for r in rows], rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("baseline time / rnnkit time")
    ax.set_title(f"rnnkit vs torch.nn on the CPU, {result['threads']} threads, torch {result['torch']}")
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color=c, label=fam) for fam, c in colors.items()])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
