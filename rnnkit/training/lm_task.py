"""Task "lm": a character-level language model trained on the user's own text file."""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.vocab import Vocab
from ..models.charlm import CharLM


class Batch(NamedTuple):
    x: Tensor             # (B, T) ids
    y: Tensor             # (B, T) next ids
    global_tokens: int
    examples: int


class TaskInputError(ValueError):
    """The task's input (e.g. --data) cannot be used."""


class LMTask:
    name = "lm"
    default_bidirectional = False

    def __init__(self, cfg, device):
        self.cfg, self.device = cfg, device
        if not cfg.data:
            raise TaskInputError("task lm trains on your text: give it with --data FILE")
        path = Path(cfg.data)
        if not path.is_file():
            raise TaskInputError(f"--data {cfg.data}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise TaskInputError(f"--data {cfg.data}: not UTF-8 text") from None
        if len(text) < cfg.seq_len + 2:
            what = "is empty" if not text else f"has {len(text)} characters"
            raise TaskInputError(f"--data {cfg.data} {what}; it needs more than --seq-len + 1 = "
                                 f"{cfg.seq_len + 1} characters")
        if cfg.bidirectional:
            raise TaskInputError("a language model reads left to right: drop --bidirectional for task lm")
        self.vocab = Vocab(text)
        ids = torch.tensor(self.vocab.encode(text))
        cut = max(len(ids) - max(len(ids) // 10, cfg.seq_len + 1), cfg.seq_len + 1)
        self.train_ids, self.heldout_ids = ids[:cut], ids[cut:]

    def build_model(self) -> nn.Module:
        cfg = self.cfg
        return CharLM(len(self.vocab), cfg.cell, cfg.embedding, cfg.hidden, cfg.layers)

    def batch(self, step: int, rank: int = 0, world: int = 1) -> Batch:
        rng = random.Random(f"{self.cfg.seed}:lm:{step}")
        T = self.cfg.seq_len
        starts = [rng.randrange(0, len(self.train_ids) - T - 1) for _ in range(self.cfg.batch_size)]
        mine = starts[rank::world]
        x = torch.stack([self.train_ids[s:s + T] for s in mine]).to(self.device)
        y = torch.stack([self.train_ids[s + 1:s + T + 1] for s in mine]).to(self.device)
        return Batch(x, y, T * len(starts), len(starts))

    def loss_terms(self, model, batch: Batch) -> tuple:
        logits, _ = model(batch.x)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch.y.reshape(-1), reduction="sum")
        return loss, batch.y.numel(), int((logits.argmax(-1) == batch.y).sum())

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        was_training = model.training
        model.eval()
        ids = self.heldout_ids.to(self.device)
        logits, _ = model(ids[:-1].unsqueeze(0))
        loss = F.cross_entropy(logits[0], ids[1:])
        acc = (logits[0].argmax(-1) == ids[1:]).float().mean()
        model.train(was_training)
        return {"heldout_loss": float(loss), "bits_per_char": float(loss) / math.log(2), "accuracy": float(acc)}

    def samples(self, model, n: int = 3, length: int = 200) -> list:
        model.eval()
        gen = torch.Generator().manual_seed(self.cfg.seed)
        texts = []
        for k in range(n):
            start = (k * 997) % max(len(self.heldout_ids) - 8, 1)
            prompt = self.heldout_ids[start:start + 8]
            out = model.sample(prompt.to(self.device), length, generator=gen)
            texts.append(self.vocab.decode(prompt.tolist()) + self.vocab.decode(out.tolist()))
        return texts

    def vocab_state(self) -> dict:
        return {"text": self.vocab.to_dict()}
