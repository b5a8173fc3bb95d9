"""Task "spell-numbers" (1 -> N): write a number's English words from its value.  342 -> "three hundred
forty-two".

The number reaches the model as one vector (its digits, one-hot); the generator writes the words
character by character.  Metric: exact match of the greedy spelling over the 106 numbers no run
trains on.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.number_words import CHARS, DIGITS, NumberWordsTask, digit_vector, parse_number, spell
from ..data.vocab import BOS, EOS, PAD, Vocab
from ..models.builders import recurrent_layer
from ..models.generator import SequenceGenerator
from .structure_task import StructureTask

CONDITION = DIGITS * 10


class Batch(NamedTuple):
    condition: Tensor     # (B, 30) the numbers' digits, one-hot
    tokens: Tensor        # (B, T + 1): <bos>, the characters, <eos>, <pad>...
    global_tokens: int    # target characters (with <eos>) in the whole global batch
    examples: int


class SpellTask(StructureTask):
    name = "spell-numbers"
    structure = "1-N"
    metric = "exact_match"
    reads_left_to_right = True
    epoch_size = 894
    defaults = {"steps": 200, "lr": 0.01, "hidden": 128}
    csv_fields = ("heldout_loss", "exact_match", "char_accuracy")

    def __init__(self, cfg, device, saved: dict | None = None):
        super().__init__(cfg, device, saved)
        self.data = NumberWordsTask(seed=cfg.seed)
        self.vocab = Vocab(CHARS) if saved is None else Vocab.from_dict(saved["target"])
        self.sequence_length = self.data.max_len

    def build_model(self) -> nn.Module:
        cfg = self.cfg
        layer = recurrent_layer(cfg.cell, cfg.embedding + CONDITION, cfg.hidden, cfg.layers, False, batch_first=True)
        return SequenceGenerator(layer, CONDITION, len(self.vocab), pad_id=PAD, bos_id=BOS, eos_id=EOS)

    def _encode(self, numbers: list) -> tuple:
        condition = torch.stack([digit_vector(n) for n in numbers])
        tokens, _ = self.vocab.batch([spell(n) for n in numbers], eos=True)
        tokens = torch.cat([torch.full((len(numbers), 1), BOS), tokens], dim=1)
        return condition.to(self.device), tokens.to(self.device)

    def batch(self, step: int, rank: int = 0, world: int = 1) -> Batch:
        numbers = self.data.sample(self.cfg.batch_size, seed=step)
        condition, tokens = self._encode(numbers[rank::world])
        return Batch(condition, tokens, sum(len(spell(n)) + 1 for n in numbers), len(numbers))

    def loss_terms(self, model, batch: Batch) -> tuple:
        lengths = (batch.tokens[:, 1:] != PAD).sum(1)  # each row's characters and <eos>
        scores = model(batch.condition, batch.tokens[:, :-1], lengths)  # (B, T, V), teacher forcing
        target = batch.tokens[:, 1:]
        loss = F.cross_entropy(scores.reshape(-1, scores.size(-1)), target.reshape(-1), ignore_index=PAD,
                               reduction="sum")
        real = target != PAD
        return loss, int(real.sum()), int(((scores.argmax(-1) == target) & real).sum())

    def evaluate(self, model) -> dict:
        numbers = self.data.heldout
        condition, tokens = self._encode(numbers)
        with self.evaluating(model):
            loss, characters, right = self.loss_terms(model, Batch(condition, tokens, 0, 0))
            written = model.greedy(condition, max_len=self.data.max_len)
        exact = sum(self.vocab.decode(row) == spell(n) for row, n in zip(written.tolist(), numbers))
        return {"heldout_loss": float(loss) / characters, "exact_match": exact / len(numbers),
                "char_accuracy": right / characters}

    def samples(self, model) -> list:
        """The held-out numbers spelled: "342 -> three hundred forty-two" (a * marks a miss)."""
        numbers = self.data.heldout
        condition, _ = self._encode(numbers)
        with self.evaluating(model):
            written = model.greedy(condition, max_len=self.data.max_len)
        lines = []
        for n, row in zip(numbers, written.tolist()):
            text = self.vocab.decode(row)
            lines.append(f"{n} -> {text}" + ("" if text == spell(n) else f"   * should be {spell(n)}"))
        return ["\n".join(lines)]

    def pictures(self, model) -> dict:
        from . import task_plots
        examples = [self._written_steps(model, n) for n in self.data.heldout[:3]]
        title = "spell-numbers: the probability of every character at every step (greedy decoding)"
        return {"steps.png": lambda f: task_plots.token_probabilities(examples, f, title)}

    def prediction_picture(self, model, text: str):
        """The probability of every character at every step of the number's greedy spelling."""
        from . import task_plots
        example = self._written_steps(model, parse_number(text))
        title = "spell-numbers: the probability of every character at every step (greedy decoding)"
        return lambda path: task_plots.token_probabilities([example], path, title)

    def _written_steps(self, model, n: int) -> tuple:
        """(n, the tokens written greedily, their probabilities (steps, V), the vocabulary's labels)."""
        labels = list(self.vocab.itos)  # the specials are named "<pad>", "<bos>", "<eos>"
        condition, _ = self._encode([n])
        with self.evaluating(model):
            written = model.greedy(condition, max_len=self.data.max_len)  # (1, T)
            # teacher-forced on its own output: the distribution each greedy step chose from
            inputs = torch.cat([torch.full((1, 1), BOS, device=written.device), written[:, :-1]], dim=1)
            probs = torch.softmax(model(condition, inputs), dim=-1)[0]  # (T, V)
        return str(n), [labels[int(t)] for t in written[0]], probs.cpu().numpy(), labels

    def predict(self, model, text: str) -> str:
        """A number from 0 to 999 -> its words."""
        condition, _ = self._encode([parse_number(text)])
        with self.evaluating(model):
            return self.vocab.decode(model.greedy(condition, max_len=self.data.max_len)[0].tolist())

    def vocab_state(self) -> dict:
        return {"target": self.vocab.to_dict()}
