"""`rnnkit explain --structure N-1|N-N|1-N|N-M`: the shapes through one structure's model, step by step."""
from __future__ import annotations

import argparse

import torch

from .main import UsageError

STRUCTURES = ("N-1", "N-N", "1-N", "N-M")


def build_model(args, build_layer) -> torch.nn.Module:
    """The structure's model around the layer ``explain`` builds from its options (``build_layer(args)``).

    N-1 and N-N read features of --input-size; 1-N reads a vector of --input-size beside the embedding
    (also --input-size) of the previous token; N-M reads token ids embedded to --input-size.  --outputs:
    classes (N-1), tags (N-N) or the vocabulary (1-N, N-M).
    """
    from rnnkit.models import Seq2Seq, SequenceClassifier, SequenceGenerator, SequenceTagger

    if args.check:
        raise UsageError("--check compares a layer with torch.nn; with --structure leave it out")
    if args.outputs <= 3 and args.structure in ("1-N", "N-M"):
        raise UsageError(f"--outputs is the vocabulary for {args.structure}: it needs more than the 3 special "
                         f"tokens (pad, bos, eos), got {args.outputs}")
    if args.outputs <= 0:
        raise UsageError(f"--outputs must be greater than zero, got {args.outputs}")
    layer_args = argparse.Namespace(**vars(args))
    if args.structure == "1-N":
        layer_args.input_size = 2 * args.input_size  # [embedding ; condition]
    layer = build_layer(layer_args)
    torch.manual_seed(args.seed)
    try:
        if args.structure == "N-1":
            return SequenceClassifier(layer, args.outputs, pooling=args.pooling)
        if args.structure == "N-N":
            return SequenceTagger(layer, args.outputs)
        if args.structure == "1-N":
            return SequenceGenerator(layer, args.input_size, args.outputs)
        return Seq2Seq(layer, args.outputs, args.outputs, attention="additive")
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None


def describe(model, batch: int, steps: int) -> str:
    """The text `rnnkit explain --structure` prints for ``model``."""
    from rnnkit.models.structures import WHAT, flow

    from .explain import _table

    f = flow(model, batch=batch, steps=steps, out_steps=steps)
    params = sum(p.numel() for p in model.parameters())
    out = [f"Structure {f.structure}, {WHAT[f.structure]}: {f.model} ({params:,} parameters)", "", f"{model!r}", ""]
    out.append("Shapes (a random input of this batch and length, run through the model):")
    out.append(_table([(r.tensor, tuple(r.shape), r.axes) for r in f.rows], ("tensor", "shape", "axes")))
    out.append("")
    shown_in = f.steps_in if f.structure != "1-N" else f.steps_out
    out.append("One step t (every step has these shapes):")
    out.append(_table([(r.tensor, tuple(r.shape), r.axes) for r in (f.step_in, f.state, f.step_out)],
                      ("tensor", "shape", "axes")))
    out.append("")
    out.append("Step by step:")
    out += [f"  {n}. {line}" for n, line in enumerate(f.steps, 1)]
    reads = "1 vector" if f.structure == "1-N" else f"{shown_in} steps"
    writes = {"N-1": "1 output", "N-N": f"{f.steps_out} steps, one per input step"}.get(
        f.structure, f"{f.steps_out} steps here (when decoding: until eos)")
    out.append(f"  In: {reads}; out: {writes}.")
    return "\n".join(out)


def plot(model, batch: int, steps: int, path: str) -> None:
    from rnnkit.models.structures import flow
    from rnnkit.training.structure_plots import structure_diagram

    try:
        structure_diagram(flow(model, batch=batch, steps=steps, out_steps=steps), path)
    except OSError as e:
        raise UsageError(f"--plot {path}: {e.strerror or e}") from None
