"""`rnnkit train`: train a sequence model on an embedded task (or your text), with progress and pictures."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rnnkit.models.builders import cell_class
from rnnkit.models.seq2seq import ATTENTIONS
from rnnkit.training import TrainConfig, checkpoint
from rnnkit.training.trainer import TASKS

from .main import UsageError

DEFAULTS = TrainConfig()
OUTPUT_FILES = ("checkpoint.pt", "metrics.json", "metrics.csv", "loss.png", "attention.png", "samples.txt")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a sequence model (default: date normalisation with attention)",
                       description="Train a recurrent model. With no arguments: a seq2seq model with attention "
                                   "that rewrites human dates ('tuesday 3 march 1998') as ISO dates.")
    p.add_argument("--task", default=DEFAULTS.task, help=f"one of {', '.join(TASKS)} (default %(default)s)")
    p.add_argument("--data", help="text file for --task lm")
    p.add_argument("--cell", default=DEFAULTS.cell, help="rnn, lstm, gru or any rnnkit.cells name (default %(default)s)")
    p.add_argument("--attention", default=DEFAULTS.attention,
                   help=f"one of {', '.join(ATTENTIONS)} (default %(default)s)")
    p.add_argument("--hidden", type=int, default=DEFAULTS.hidden)
    p.add_argument("--embedding", type=int, default=DEFAULTS.embedding)
    p.add_argument("--layers", type=int, default=DEFAULTS.layers)
    p.add_argument("--bidirectional", action=_BoolFlag, default=None,
                   help="bidirectional encoder (default: yes for dates, no for lm)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, help=f"optimizer steps (default {DEFAULTS.steps})")
    steps.add_argument("--epochs", type=float, help="passes over the task's epoch (dates: 20,000 examples; "
                                                     "lm: the training text once)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--lr", type=float, default=DEFAULTS.lr)
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--device", default=DEFAULTS.device, help="cpu or cuda")
    p.add_argument("--seq-len", type=int, default=DEFAULTS.seq_len, help="lm: characters per window")
    p.add_argument("--eval-every", type=int, default=DEFAULTS.eval_every)
    p.add_argument("--eval-size", type=int, default=DEFAULTS.eval_size)
    p.add_argument("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every)
    p.add_argument("--log-every", type=int, default=DEFAULTS.log_every)
    p.add_argument("--out", help="output folder (default: a new runs/<task>-N)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(run=run)


class _BoolFlag(argparse.Action):
    """--flag / --no-flag."""

    def __init__(self, option_strings, dest, **kwargs):
        opts = list(option_strings) + [s.replace("--", "--no-", 1) for s in option_strings]
        super().__init__(opts, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith("--no-"))


def config_from_args(args) -> TrainConfig:
    if args.task not in TASKS:
        raise UsageError(f"unknown --task {args.task!r}; choose from {', '.join(TASKS)}")
    try:
        cell_class(args.cell)
    except ValueError as e:
        raise UsageError(f"--cell: {e}") from None
    if args.attention not in ATTENTIONS:
        raise UsageError(f"unknown --attention {args.attention!r}; choose from {', '.join(ATTENTIONS)}")
    for name in ("hidden", "embedding", "layers", "batch_size", "seq_len", "eval_every", "eval_size",
                 "checkpoint_every", "log_every"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be greater than zero, got {getattr(args, name)}")
    if args.steps is not None and args.steps <= 0 or args.epochs is not None and args.epochs <= 0:
        raise UsageError("--steps and --epochs must be greater than zero")
    if not args.lr > 0:
        raise UsageError(f"--lr must be greater than zero, got {args.lr}")
    if args.device not in ("cpu", "cuda"):
        raise UsageError(f"unknown --device {args.device!r}; choose cpu or cuda")
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here")
    bidirectional = args.bidirectional
    if bidirectional is None:
        bidirectional = TASKS[args.task].default_bidirectional
    cfg = TrainConfig(task=args.task, data=args.data, cell=args.cell, attention=args.attention,
                      hidden=args.hidden, embedding=args.embedding, layers=args.layers,
                      bidirectional=bidirectional, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      device=args.device, eval_every=args.eval_every, log_every=args.log_every,
                      checkpoint_every=args.checkpoint_every, eval_size=args.eval_size, seq_len=args.seq_len)
    if args.epochs is not None:
        cfg.steps = max(1, round(args.epochs * epoch_examples(cfg) / cfg.batch_size))
    elif args.steps is not None:
        cfg.steps = args.steps
    return cfg


def epoch_examples(cfg) -> int:
    if cfg.task == "dates":
        return 20_000
    size = Path(cfg.data).stat().st_size if cfg.data and Path(cfg.data).is_file() else cfg.seq_len
    return max(1, size // cfg.seq_len)


def choose_out(args, task: str) -> Path:
    if args.out:
        return Path(args.out)
    if args.resume:
        raise UsageError("--resume needs --out, the folder of the run to continue")
    n = 1
    while Path("runs", f"{task}-{n}").exists():
        n += 1
    return Path("runs", f"{task}-{n}")


def prepare_out(out: Path, resume: bool) -> None:
    """Make sure --out can be written and holds nothing this run would write over."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if resume:
        if not (out / "checkpoint.pt").is_file():
            raise UsageError(f"--resume: no checkpoint.pt in {out}")
    else:
        taken = [name for name in OUTPUT_FILES if (out / name).exists()]
        if taken:
            raise UsageError(f"--out {out} already holds a run ({', '.join(taken)}); continue it with --resume "
                             "or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".rnnkit-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"--out {out} is not writable ({e.strerror or e})") from None


def run(args) -> int:
    from rich.console import Console

    from rnnkit.training import Interrupted, train
    from rnnkit.training.checkpoint import CheckpointError
    from rnnkit.training.lm_task import TaskInputError
    from rnnkit.training.progress import RichProgress, summary
    from rnnkit.training.trainer import ConfigMismatch

    cfg = config_from_args(args)
    if cfg.task == "lm":  # read the text before any folder is made, so a bad --data writes nothing
        from rnnkit.training.lm_task import LMTask
        try:
            LMTask(cfg, "cpu")
        except TaskInputError as e:
            raise UsageError(str(e)) from None
    main_rank = os.environ.get("RANK", "0") == "0"
    out = choose_out(args, cfg.task)
    if main_rank:
        prepare_out(out, args.resume)
    if args.resume:
        try:
            checkpoint.load(out / "checkpoint.pt")
        except CheckpointError as e:
            raise UsageError(str(e)) from None
    console = Console(stderr=True)
    progress = None if args.quiet or not main_rank else RichProgress(console)
    if main_rank and not args.quiet:
        console.print(f"rnnkit train: task {cfg.task}, cell {cfg.cell}, attention {cfg.attention}, "
                      f"{cfg.steps} steps of {cfg.batch_size} -> {out}")
    try:
        metrics = train(cfg, out, resume=args.resume, progress=progress)
    except Interrupted as e:
        print(f"rnnkit train: {e}; continue with: rnnkit train --out {out} --resume "
              "(and the same options)", file=sys.stderr)
        return 130
    except (ConfigMismatch, CheckpointError) as e:
        raise UsageError(str(e)) from None
    if main_rank and not args.quiet:
        summary(metrics, out, Console())
        for text in metrics.get("samples", []):
            print(f"sample: {text!r}")
    return 0
