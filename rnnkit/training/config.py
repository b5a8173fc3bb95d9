"""What a training run is: every setting that decides its result."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional

# Settings that change where and how a run is watched or saved, but not its result:
# a resumed run may differ in these.
NOT_RESULT = ("device", "checkpoint_every", "log_every")


@dataclass
class TrainConfig:
    task: str = "dates"            # "dates" (seq2seq, embedded) or "lm" (character LM on --data)
    data: Optional[str] = None     # text file for task "lm"
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
