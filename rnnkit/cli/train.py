"""`rnnkit train`: train a sequence model on an embedded task (or your text), with progress and pictures."""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from rnnkit.models.seq2seq import ATTENTIONS
from rnnkit.training import TrainConfig, checkpoint
from rnnkit.training.config import ConfigError
from rnnkit.training.outputs import FILES as OUTPUT_FILES
from rnnkit.training.trainer import TASKS

from .main import UsageError

DEFAULTS = TrainConfig()


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a sequence model (default: date normalisation with attention)",
                       description="Train a recurrent model. With no arguments: a seq2seq model with attention "
                                   "that rewrites human dates ('tuesday 3 march 1998') as ISO dates.")
    p.add_argument("--task", default=DEFAULTS.task,
                   help=f"one of {', '.join(TASKS)} (default %(default)s). The four structures of the notes: "
                        "digits (N-1), date-tags (N-N), spell-numbers (1-N), dates (N-M); forecast: N-1 on a series")
    p.add_argument("--data", help="text file for --task lm; a series, one number per line, for --task forecast "
                                  "(default: the yearly sunspot numbers)")
    p.add_argument("--cell", default=DEFAULTS.cell, help="rnn, lstm, gru or any rnnkit.cells name (default %(default)s)")
    p.add_argument("--attention", help=f"one of {', '.join(ATTENTIONS)} (default {DEFAULTS.attention}; digits and "
                                      "forecast: none, which reads the last state instead of attention pooling)")
    p.add_argument("--hidden", type=int, help=f"default {DEFAULTS.hidden}, or the task's own")
    p.add_argument("--embedding", type=int, default=DEFAULTS.embedding)
    p.add_argument("--layers", type=int, default=DEFAULTS.layers)
    p.add_argument("--bidirectional", action=_BoolFlag, default=None,
                   help="bidirectional encoder (default: yes for dates, no for lm)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, help=f"optimizer steps (default {DEFAULTS.steps}, or the task's own)")
    steps.add_argument("--epochs", type=float, help="passes over the task's epoch (dates: 20,000 examples; "
                                                     "lm: the training text once; the others: their training set)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--lr", type=float, help=f"default {DEFAULTS.lr}, or the task's own")
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
    if args.task not in TASKS:  # the task picks defaults below
        raise UsageError(f"unknown --task {args.task!r}; choose from {', '.join(TASKS)}")
    if args.steps is not None and args.steps <= 0:
        raise UsageError("--steps and --epochs must be greater than zero")
    if args.epochs is not None and not (math.isfinite(args.epochs) and args.epochs > 0):
        raise UsageError(f"--epochs must be a finite number greater than zero, got {args.epochs}")
    bidirectional = args.bidirectional
    if bidirectional is None:
        bidirectional = TASKS[args.task].default_bidirectional
    # a setting left out takes the task's own default (what reaches its stated level in time), else rnnkit's
    task_defaults = getattr(TASKS[args.task], "defaults", {})

    def setting(name):
        given = getattr(args, name)
        return given if given is not None else task_defaults.get(name, getattr(DEFAULTS, name))
    cfg = TrainConfig(task=args.task, data=args.data, cell=args.cell, attention=setting("attention"),
                      hidden=setting("hidden"), embedding=args.embedding, layers=args.layers,
                      bidirectional=bidirectional, batch_size=args.batch_size, lr=setting("lr"), seed=args.seed,
                      device=args.device, eval_every=args.eval_every, log_every=args.log_every,
                      checkpoint_every=args.checkpoint_every, eval_size=args.eval_size, seq_len=args.seq_len)
    if args.epochs is not None:
        steps = args.epochs * epoch_examples(cfg) / cfg.batch_size
        if not math.isfinite(steps):
            raise UsageError(f"--epochs {args.epochs} asks for more steps than a float can count")
        cfg.steps = max(1, round(steps))
    elif args.steps is not None:
        cfg.steps = args.steps
    else:
        cfg.steps = task_defaults.get("steps", cfg.steps)
    try:
        cfg.check()
    except ConfigError as e:
        raise UsageError(str(e)) from None
    if cfg.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here")
    return cfg


def epoch_examples(cfg) -> int:
    if cfg.task == "dates":
        return 20_000
    if hasattr(TASKS[cfg.task], "epoch_size"):
        return TASKS[cfg.task].epoch_size
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


def prepare_out(out: Path, resume: bool):
    """--out, locked for this run, holding nothing this run would write over (with --resume: a checkpoint)."""
    from rnnkit.training.outdir import FolderBusy, OutFolder

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    _check_holdings(out, resume)  # before anything is made: a refused run writes nothing
    try:
        folder = OutFolder(out).claim()
    except FolderBusy:
        raise UsageError(f"--out {out} is in use by another rnnkit train run; wait for it to end or choose "
                         "another --out") from None
    except OSError as e:
        raise UsageError(f"--out {out} is not writable ({e.strerror or e})") from None
    try:
        _check_holdings(out, resume)  # again under the lock: another run may have finished into it meanwhile
        if not os.access(out, os.W_OK | os.X_OK):
            raise UsageError(f"--out {out} is not writable (Permission denied)")
    except BaseException:
        folder.release()
        raise
    return folder


def _check_holdings(out: Path, resume: bool) -> None:
    if resume:
        if not (out / checkpoint.NAME).is_file():
            raise UsageError(f"--resume: no {checkpoint.NAME} in {out}")
        return
    # lexists: a link counts, even one to nowhere
    taken = [name for name in OUTPUT_FILES if os.path.lexists(out / name)]
    if taken:
        raise UsageError(f"--out {out} already holds a run ({', '.join(taken)}); continue it with --resume "
                         "or choose another --out")


def _next_step_hint(out: Path) -> str:
    if (out / checkpoint.NAME).is_file():
        return f"continue with: rnnkit train --out {out} --resume (and the same options)"
    return "run the same command again to start over"


def _out_of_memory(e: BaseException) -> bool:
    import torch
    return isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)) or (
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


def run(args) -> int:
    from rich.console import Console

    from rnnkit.training import Interrupted, train
    from rnnkit.training.checkpoint import CheckpointError
    from rnnkit.training.lm_task import TaskInputError
    from rnnkit.training.memory import TooLarge, check_training_fits
    from rnnkit.training.outdir import OutputError
    from rnnkit.training.progress import RichProgress, summary
    from rnnkit.training.trainer import ConfigMismatch

    cfg = config_from_args(args)
    if cfg.task != "dates":  # read the data before any folder is made, so bad input writes nothing
        from dataclasses import replace

        from rnnkit.data.extras import MissingExtra
        try:
            TASKS[cfg.task](replace(cfg, eval_size=1), "cpu")
        except (TaskInputError, MissingExtra) as e:
            raise UsageError(str(e)) from None
    try:
        check_training_fits(cfg)
    except TooLarge as e:
        raise UsageError(str(e)) from None
    main_rank = os.environ.get("RANK", "0") == "0"
    out = choose_out(args, cfg.task)
    folder = prepare_out(out, args.resume) if main_rank else out
    try:
        if args.resume:
            try:
                checkpoint.load(out / checkpoint.NAME)
            except CheckpointError as e:
                raise UsageError(str(e)) from None
        console = Console(stderr=True)
        progress = None if args.quiet or not main_rank else RichProgress(console)
        if main_rank and not args.quiet:
            console.print(f"rnnkit train: task {cfg.task}, cell {cfg.cell}, attention {cfg.attention}, "
                          f"{cfg.steps} steps of {cfg.batch_size} -> {out}")
        try:
            metrics = train(cfg, folder, resume=args.resume, progress=progress)
        except Interrupted as e:
            print(f"rnnkit train: {e}; {_next_step_hint(out)}", file=sys.stderr)
            # Cut short while writing the final outputs, the run did not finish and --out is as it was: an
            # error like the other faults that leave it so (exit 2).  Stopped during training, it saved its
            # checkpoint as asked: Ctrl-C's usual 130.
            return 2 if e.during == "outputs" else 130
        except (ConfigMismatch, CheckpointError) as e:
            raise UsageError(str(e)) from None
        except OutputError as e:
            free = "free some space, then " if e.disk_full else ""
            raise UsageError(f"{e}; that file and the rest of --out are as they were before the write: "
                             f"{free}{_next_step_hint(out)}") from None
        except BaseException as e:
            if _out_of_memory(e):
                raise UsageError(f"ran out of memory while training ({str(e).splitlines()[0]}); lower --hidden, "
                                 f"--layers or --batch-size") from None
            raise
    finally:
        if main_rank:
            folder.release()
    if main_rank and not args.quiet:
        summary(metrics, out, Console())
        for text in metrics.get("samples", []):
            print(f"sample: {text!r}")
    return 0
