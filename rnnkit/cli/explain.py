"""`rnnkit explain`: a layer's parameters, the shapes of everything it takes and returns, its equations."""
from __future__ import annotations

import torch

import rnnkit
from rnnkit.cells.lstm import PROJECTION_MATH

from .explain_structure import STRUCTURES
from .main import UsageError

LAYERS = {"rnn": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU}


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="show a layer's parameters, shapes and equations",
                       description="Show a recurrent layer's parameters, input/output shapes and equations; "
                                   "with --structure, the shapes through a model of that structure, step by step.")
    p.add_argument("mode", nargs="?", choices=sorted(LAYERS),
                   help="the layer (default with --structure: gru)")
    p.add_argument("--structure", choices=STRUCTURES,
                   help="N-1 (SequenceClassifier), N-N (SequenceTagger), 1-N (SequenceGenerator) or N-M (Seq2Seq) "
                        "around the layer")
    p.add_argument("--outputs", type=int, default=10,
                   help="with --structure: classes (N-1), tags (N-N), vocabulary (1-N, N-M); default %(default)s")
    p.add_argument("--pooling", choices=["last", "attention"], default="last", help="with --structure N-1")
    p.add_argument("--input-size", type=int, default=10)
    p.add_argument("--hidden-size", type=int, default=20)
    p.add_argument("--num-layers", type=int, default=1)
    p.add_argument("--bidirectional", action="store_true")
    p.add_argument("--batch-first", action="store_true")
    p.add_argument("--no-bias", action="store_true")
    p.add_argument("--proj-size", type=int, default=0, help="LSTM only")
    p.add_argument("--nonlinearity", choices=["tanh", "relu"], default="tanh", help="RNN only")
    p.add_argument("--seq-len", type=int, default=5)
    p.add_argument("--batch", type=int, default=3)
    p.add_argument("--check", action="store_true",
                   help="run the layer on rnnkit and torch.nn from one seed and print the largest difference")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", metavar="FILE",
                   help="draw every gate's activations at every step, for a random input, to this PNG")
    p.set_defaults(run=run)


def build_layer(args) -> torch.nn.Module:
    kwargs = dict(num_layers=args.num_layers, bias=not args.no_bias, batch_first=args.batch_first,
                  bidirectional=args.bidirectional)
    if args.mode == "lstm":
        kwargs["proj_size"] = args.proj_size
    elif args.proj_size:
        raise UsageError("--proj-size is only supported for lstm")
    if args.mode == "rnn":
        kwargs["nonlinearity"] = args.nonlinearity
    for name in ("seq_len", "batch"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be greater than zero, got {getattr(args, name)}")
    check_fits(args, kwargs)
    try:
        return LAYERS[args.mode](args.input_size, args.hidden_size, **kwargs)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None


def needed_bytes(args, kwargs: dict, hidden_size: int) -> float:
    """A lower bound on the float32 memory `explain` allocates: the layer (and with --check its torch.nn
    twin, input, outputs and states; with --plot the input and every gate at every step)."""
    from rnnkit.training.memory import parameter_count

    def build(layers):
        return LAYERS[args.mode](args.input_size, hidden_size, **{**kwargs, "num_layers": layers})
    params = parameter_count(build, args.num_layers)
    directions = 2 if args.bidirectional else 1
    positions = args.seq_len * args.batch
    state = (args.proj_size or hidden_size) * directions
    values = params
    if args.check:
        values += params + positions * args.input_size + 2 * positions * state
    if args.plot:
        gates = {"rnn": 1, "gru": 3, "lstm": 4}[args.mode]
        values += positions * args.input_size + positions * gates * hidden_size * directions * args.num_layers
    return 4 * values


def check_fits(args, kwargs: dict) -> None:
    """A one-line error, before anything is allocated, when the sizes asked for cannot fit in memory."""
    from rnnkit.training.memory import at_least, available_bytes, human, largest_fitting

    available = available_bytes("cpu")
    if available is None:
        return
    try:
        need = needed_bytes(args, kwargs, args.hidden_size)
    except (ValueError, TypeError) as e:  # the layer's own argument checks, reported as build_layer does
        raise UsageError(str(e)) from None
    if need <= available:
        return
    smallest = args.proj_size + 1  # proj_size must stay below hidden_size
    largest = largest_fitting(lambda h: needed_bytes(args, kwargs, h + smallest - 1) <= available,
                              args.hidden_size - smallest + 1)
    fix = (f"the largest --hidden-size that fits with the other sizes is {largest + smallest - 1}"
           if largest is not None else "lower --input-size, --num-layers, --seq-len or --batch")
    extra = " and what --check/--plot run" if args.check or args.plot else ""
    raise UsageError(f"{args.mode} with --input-size {args.input_size}, --hidden-size {args.hidden_size}, "
                     f"--num-layers {args.num_layers} needs {at_least(need)} of memory (its parameters "
                     f"as float32{extra}) where {human(available)} is available; {fix}")


def _table(rows, header) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(lines)


def describe(layer, seq_len: int, batch: int) -> str:
    """The text `rnnkit explain` prints for ``layer``."""
    D = 2 if layer.bidirectional else 1
    L, H = layer.num_layers, layer.hidden_size
    H_out = layer.proj_size or H
    eq = layer.equations
    out = [f"{layer!r}", ""]

    rows = [(name, tuple(p.shape), p.numel()) for name, p in layer.named_parameters()]
    out.append(f"Parameters ({len(rows)} tensors, {sum(r[2] for r in rows):,} values; "
               f"rows of weight_ih/weight_hh are the gates {', '.join(eq.gates)} in that order):")
    out.append(_table(rows + [("total", "", f"{sum(r[2] for r in rows):,}")], ("name", "shape", "count")))
    out.append("")

    seq_axes = ("batch", "seq_len") if layer.batch_first else ("seq_len", "batch")
    seq_shape = (batch, seq_len) if layer.batch_first else (seq_len, batch)
    shapes = [("input", seq_shape + (layer.input_size,), ", ".join(seq_axes + ("input_size",)))]
    state_rows = [("h_0", (D * L, batch, H_out),
                   f"num_layers*directions ({L}*{D}), batch, {'proj_size' if layer.proj_size else 'hidden_size'}")]
    if "c" in eq.state_names:
        state_rows.append(("c_0", (D * L, batch, H), f"num_layers*directions ({L}*{D}), batch, hidden_size"))
    shapes += state_rows
    shapes.append(("output", seq_shape + (D * H_out,),
                   ", ".join(seq_axes) + f", directions*{'proj_size' if layer.proj_size else 'hidden_size'}"
                   " (last layer's h_t at every step)"))
    shapes += [(n.replace("_0", "_n"), s, m + " (state after the last step read)") for n, s, m in state_rows]
    out.append("Shapes (zeros are used for the initial states when they are not given):")
    out.append(_table([(n, tuple(s), m) for n, s, m in shapes], ("tensor", "shape", "axes")))
    out.append("")
    out.append(f"Equations ({eq.name}; each layer k > 0 reads layer k-1's output as x_t):")
    math = eq.math + ("\n" + PROJECTION_MATH if layer.proj_size else "")
    out += ["  " + line for line in math.splitlines()]
    if D == 2:
        out.append("  The reverse direction reads x_T ... x_1; its outputs are stored in input order,")
        out.append("  so output[t] = [forward h_t ; reverse h_t] and h_n[2k+1] is the reverse state after x_1.")
    return "\n".join(out)


def check(layer, seq_len: int, batch: int, seed: int) -> float:
    """Largest absolute difference between rnnkit and torch.nn on the same input, outputs and states."""
    from .reference import torch_twin

    twin = torch_twin(layer)
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, seq_len) if layer.batch_first else (seq_len, batch)
    x = torch.randn(*shape, layer.input_size, generator=gen)
    with torch.no_grad():
        (a, sa), (b, sb) = layer(x), twin(x)
    sa, sb = (sa if isinstance(sa, tuple) else (sa,)), (sb if isinstance(sb, tuple) else (sb,))
    return max((u - v).abs().max().item() for u, v in zip((a,) + sa, (b,) + sb))


def plot_gates(layer, seq_len: int, batch: int, seed: int, path: str) -> None:
    from rnnkit.introspect import trace_gates
    from rnnkit.training.plots import gate_heatmaps

    gen = torch.Generator().manual_seed(seed)
    shape = (batch, seq_len) if layer.batch_first else (seq_len, batch)
    traces = trace_gates(layer, torch.randn(*shape, layer.input_size, generator=gen))
    try:
        gate_heatmaps(traces, layer.equations.gates, path, f"{layer!r}: gate activations")
    except OSError as e:
        raise UsageError(f"--plot {path}: {e.strerror or e}") from None


def run(args) -> int:
    if args.structure is not None:
        return _run_structure(args)
    if args.mode is None:
        raise UsageError("name the layer (rnn, lstm or gru), or give --structure N-1|N-N|1-N|N-M")
    layer = build_layer(args)
    print(describe(layer, args.seq_len, args.batch))
    if args.plot:
        plot_gates(layer, args.seq_len, args.batch, args.seed, args.plot)
        print()
        print(f"Gate activations of every step (batch row 0, a random input) drawn to {args.plot}")
    if args.check:
        diff = check(layer, args.seq_len, args.batch, args.seed)
        print()
        print(f"Check against torch.nn.{type(layer).__name__} (seed {args.seed}, same parameters, float32): "
              f"largest difference in output and states = {diff:.3g}")
        if diff > 1e-5:
            return 1
    return 0


def _run_structure(args) -> int:
    from . import explain_structure

    args.mode = args.mode or "gru"
    model = explain_structure.build_model(args, build_layer)
    print(explain_structure.describe(model, args.batch, args.seq_len))
    if args.plot:
        explain_structure.plot(model, args.batch, args.seq_len, args.plot)
        print()
        print(f"The structure, with these shapes, drawn to {args.plot}")
    return 0
