"""Task "date-tags" (N -> N, aligned): tag each character of a written date with its field.

Metric: held-out per-step accuracy, over every character of --eval-size held-out dates (days no
run trains on), and the share of dates tagged without a single mistake.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.date_fields import TAG_NAMES, TAGS, DateFieldsTask, tag_ids
from ..data.vocab import Vocab
from ..models.builders import recurrent_layer
from ..models.tagger import SequenceTagger
from .structure_task import StructureTask

IGNORE = -100  # the tag of a padded step: cross_entropy's ignore_index


class Batch(NamedTuple):
    ids: Tensor           # (B, T) character ids, PAD after each length
    lengths: Tensor       # (B,)
    tags: Tensor          # (B, T) tag ids, IGNORE at padding
    global_tokens: int    # characters in the whole global batch
    examples: int


class DateTagsTask(StructureTask):
    name = "date-tags"
    structure = "N-N"
    metric = "step_accuracy"
    default_bidirectional = True
    epoch_size = 20_000
    defaults = {"steps": 120, "lr": 0.01}
    csv_fields = ("heldout_loss", "step_accuracy", "whole_dates")

    def __init__(self, cfg, device, saved: dict | None = None):
        super().__init__(cfg, device, saved)
        self.data = DateFieldsTask(seed=cfg.seed)
        self.vocab = self.data.vocab if saved is None else Vocab.from_dict(saved["source"])
        self.sequence_length = self.data.max_len
        self.heldout = [] if saved is not None else self.data.sample("heldout", cfg.eval_size, seed=0)

    def build_model(self) -> nn.Module:
        cfg = self.cfg
        layer = recurrent_layer(cfg.cell, cfg.embedding, cfg.hidden, cfg.layers, cfg.bidirectional, batch_first=True)
        return SequenceTagger(layer, len(TAGS), vocab_size=len(self.vocab))

    def _encode(self, pairs) -> tuple:
        ids, lengths = self.vocab.batch([text for text, _ in pairs])
        tags = torch.full(ids.shape, IGNORE, dtype=torch.long)
        for row, (_, tag_text) in enumerate(pairs):
            tags[row, :len(tag_text)] = torch.tensor(tag_ids(tag_text))
        return ids.to(self.device), lengths, tags.to(self.device)

    def batch(self, step: int, rank: int = 0, world: int = 1) -> Batch:
        pairs = self.data.sample("train", self.cfg.batch_size, seed=step)
        ids, lengths, tags = self._encode(pairs[rank::world])
        return Batch(ids, lengths, tags, sum(len(t) for t, _ in pairs), len(pairs))

    def loss_terms(self, model, batch: Batch) -> tuple:
        scores = model(batch.ids, batch.lengths)  # (B, T, tags)
        loss = F.cross_entropy(scores.reshape(-1, len(TAGS)), batch.tags.reshape(-1), ignore_index=IGNORE,
                               reduction="sum")
        real = batch.tags != IGNORE
        return loss, int(real.sum()), int(((scores.argmax(-1) == batch.tags) & real).sum())

    def _heldout(self, model) -> tuple:
        """(summed loss, predicted tags, true tags, whether each date is all right) over the held-out set."""
        loss, predicted, truth, whole = 0.0, [], [], []
        with self.evaluating(model):
            for start in range(0, len(self.heldout), 500):
                ids, lengths, tags = self._encode(self.heldout[start:start + 500])
                scores = model(ids, lengths)
                loss += float(F.cross_entropy(scores.reshape(-1, len(TAGS)), tags.reshape(-1), ignore_index=IGNORE,
                                              reduction="sum"))
                real = tags != IGNORE
                right = (scores.argmax(-1) == tags) | ~real
                whole.append(right.all(dim=1))
                predicted.append(scores.argmax(-1)[real])
                truth.append(tags[real])
        return loss, torch.cat(predicted), torch.cat(truth), torch.cat(whole)

    def evaluate(self, model) -> dict:
        loss, predicted, truth, whole = self._heldout(model)
        return {"heldout_loss": loss / len(truth), "step_accuracy": float((predicted == truth).float().mean()),
                "whole_dates": float(whole.float().mean())}

    def pictures(self, model) -> dict:
        from . import task_plots
        _, predicted, truth, _ = self._heldout(model)
        counts = torch.zeros(len(TAGS), len(TAGS), dtype=torch.long)
        counts.index_put_((truth.cpu(), predicted.cpu()), torch.ones_like(truth.cpu()), accumulate=True)
        accuracy = float((predicted == truth).float().mean())
        labels = [TAG_NAMES[t] for t in TAGS]
        title = f"date-tags, held out ({len(truth)} characters): per-step accuracy {accuracy:.4f}"
        return {"confusion.png": lambda f: task_plots.confusion_matrix(counts, labels, f, title)}

    def predict(self, model, text: str) -> str:
        """A written date -> one tag letter per character (d day, m month, y year, w weekday, . other)."""
        tags = self._tag_probabilities(model, text).argmax(-1)
        return f"{text}\n{''.join(TAGS[int(t)] for t in tags)}"

    def prediction_picture(self, model, text: str):
        """The probability of every tag at every character (step)."""
        from . import prediction_plots
        probs = self._tag_probabilities(model, text).numpy()
        title = f"date-tags: {text!r}, the probability of each field at each step"
        names = [TAG_NAMES[t] for t in TAGS]
        return lambda path: prediction_plots.tag_probabilities(text, probs, names, path, title)

    def _tag_probabilities(self, model, text: str) -> Tensor:
        """(len(text), tags): the softmax of the tagger's scores at each character."""
        if not text:
            raise ValueError("expected a written date, e.g. \"3 March 1998\"")
        ids, lengths = self.vocab.batch([text])
        with self.evaluating(model):
            return torch.softmax(model(ids, lengths)[0], dim=-1).cpu()

    def vocab_state(self) -> dict:
        return {"source": self.vocab.to_dict()}

