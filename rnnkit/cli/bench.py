"""`rnnkit bench`: time rnnkit against torch.nn side by side (the measuring code is rnnkit.bench)."""
from __future__ import annotations

from .main import UsageError


def _shape(text: str) -> tuple:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) <= 0:
        raise UsageError(f"a shape is four positive integers T,B,I,H, got {text!r}")
    return shape


def add_parser(sub) -> None:
    from rnnkit.bench.cases import DEFAULT_MODES, EXTRAS, MODES, PASSES
    p = sub.add_parser(
        "bench", help="time rnnkit against torch.nn on this machine",
        description="Time torch.nn and rnnkit side by side in one process (interleaved, median of "
                    "repeats, same thread count) and print per mode x shape x pass both times and the "
                    "ratio torch/rnnkit (for the extras, against the layer named in the 'against' column); "
                    "write the table as JSON and a bar chart PNG.")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES),
                   help=f"comma-separated, from {', '.join(MODES)} (default: %(default)s)")
    p.add_argument("--shapes", default=None,
                   help="semicolon-separated T,B,I,H shapes (default: the four of the grid)")
    p.add_argument("--passes", default=",".join(PASSES), help="fwd, fwd+bwd (default: both)")
    p.add_argument("--extras", default=",".join(EXTRAS),
                   help="extra cases: lstm_packed (random lengths) and lstm_bi2 (2 layers, bidirectional) "
                        "at 200,16,64,64; transformer (encoder layer, d_model 256, 8 heads, batch 32, "
                        "sequence 128); layernorm_lstm (rnnkit.cells.LayerNormLSTMCell against "
                        "torch.nn.LSTM); min_gru and min_gru_scan (MinGRUCell at T=4096, fused and on the "
                        "parallel scan, against rnnkit's fused GRU); '' for none (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=15, help="timed runs of each (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.add_argument("--json", default="rnnkit-bench.json", help="where to write the table (default: %(default)s)")
    p.add_argument("--png", default="rnnkit-bench.png", help="where to write the chart (default: %(default)s)")
    p.set_defaults(run=run)


def run(args) -> int:
    from rnnkit.bench import report
    from rnnkit.bench.cases import EXTRAS, MODES, PASSES, SHAPES

    def pick(text, allowed, what):
        items = [v for v in (text or "").split(",") if v]
        bad = [v for v in items if v not in allowed]
        if bad:
            raise UsageError(f"unknown {what} {', '.join(bad)}; choose from {', '.join(allowed)}")
        return items

    modes = pick(args.modes, MODES, "mode")
    passes = pick(args.passes, PASSES, "pass")
    extras = pick(args.extras, EXTRAS, "extra")
    shapes = SHAPES if args.shapes is None else [_shape(s) for s in args.shapes.split(";") if s]
    if args.repeats <= 0:
        raise UsageError(f"--repeats must be greater than zero, got {args.repeats}")
    if not passes or (not (modes and shapes) and not extras):
        raise UsageError("nothing to run: pick at least one pass and one mode and shape (or an extra)")
    result = report.run(modes, shapes, passes, extras, repeats=args.repeats, warmup=args.warmup,
                        threads=args.threads, with_memory=not args.no_memory)
    print()
    print(f"torch {result['torch']}, {result['threads']} threads, median of {args.repeats}; "
          "ratio = torch time / rnnkit time (extras: the 'against' layer's time / rnnkit time)")
    print(report.table(result["rows"]))
    print()
    for line in result["summary"]:
        print(line)
    report.write_json(result, args.json)
    print(f"\nwrote {args.json}")
    if report.write_png(result, args.png):
        print(f"wrote {args.png}")
    else:
        print("matplotlib is not installed: no chart written")
    return 0
