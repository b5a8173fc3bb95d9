"""What a training run is: every setting that decides its result."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Optional

# Settings that change where and how a run is watched or saved, but not its result:
# a resumed run may differ in these.
NOT_RESULT = ("device", "checkpoint_every", "log_every")
# Sizes and counts: whole numbers above zero.
COUNTS = ("hidden", "embedding", "layers", "batch_size", "seq_len", "eval_every", "eval_size", "checkpoint_every",
          "log_every", "steps")
# What torch.manual_seed takes (a seed is kept as 64 bits, signed or not).
SEED_RANGE = (-2**63, 2**64 - 1)
DEVICES = ("cpu", "cuda")


class ConfigError(ValueError):
    """A setting rnnkit train cannot run with; the message names it as its command-line option."""


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class TrainConfig:
    task: str = "dates"            # "dates" (seq2seq, embedded), "lm" (character LM on --data) or a structure's
    data: Optional[str] = None     # text file for task "lm" (and "forecast": a series, one number a line)
    cell: str = "gru"
    attention: str = "additive"
    hidden: int = 64
    embedding: int = 32
    layers: int = 1
    bidirectional: bool = True
    steps: int = 500
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 100
    log_every: int = 10
    checkpoint_every: int = 100
    eval_size: int = 1000          # held-out examples scored at each evaluation
    seq_len: int = 128             # task "lm": characters per training window

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def result_settings(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in NOT_RESULT}

    def check(self) -> None:
        """ConfigError for the first setting a run cannot use (types too: a checkpoint's config is read back)."""
        from ..models.builders import cell_class
        from ..models.seq2seq import ATTENTIONS
        from .trainer import TASKS

        if self.task not in TASKS:
            raise ConfigError(f"unknown --task {self.task!r}; choose from {', '.join(TASKS)}")
        if self.data is not None and not isinstance(self.data, str):
            raise ConfigError(f"--data must be a file name, got {self.data!r}")
        if not isinstance(self.cell, str):
            raise ConfigError(f"--cell must be a cell name, got {self.cell!r}")
        try:
            cell_class(self.cell)
        except ValueError as e:
            raise ConfigError(f"--cell: {e}") from None
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"unknown --attention {self.attention!r}; choose from {', '.join(ATTENTIONS)}")
        for name in COUNTS:
            value = getattr(self, name)
            if not _whole(value):
                raise ConfigError(f"{option(name)} must be a whole number, got {value!r}")
            if value <= 0:
                raise ConfigError(f"{option(name)} must be greater than zero, got {value}")
        if not isinstance(self.bidirectional, bool):
            raise ConfigError(f"--bidirectional must be true or false, got {self.bidirectional!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) \
                or not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"--lr must be a finite number greater than zero, got {self.lr!r}")
        if not _whole(self.seed) or not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise ConfigError(f"--seed must be a whole number from -2**63 to 2**64-1 (what torch.manual_seed "
                              f"takes), got {self.seed!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"unknown --device {self.device!r}; choose cpu or cuda")
