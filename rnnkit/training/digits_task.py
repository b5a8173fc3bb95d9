"""Task "digits" (N -> 1): scikit-learn's handwritten digits read row by row, one class per image.

Metric: held-out accuracy over the 360 images no run trains on.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import digits
from ..models.builders import recurrent_layer
from ..models.classifier import SequenceClassifier
from .structure_task import NothingToDraw, StructureTask


class Batch(NamedTuple):
    images: Tensor        # (B, 8, 8): 8 steps of 8 pixels
    labels: Tensor        # (B,)
    global_tokens: int    # images in the whole global batch (one label each)
    examples: int


class DigitsTask(StructureTask):
    name = "digits"
    structure = "N-1"
    metric = "heldout_accuracy"
    default_bidirectional = True
    epoch_size = 1797 - digits.HELDOUT
    defaults = {"steps": 300, "lr": 0.01, "attention": "none"}  # last-state pooling
    csv_fields = ("heldout_loss", "heldout_accuracy")

    def __init__(self, cfg, device, saved: dict | None = None):
        super().__init__(cfg, device, saved)
        self.sequence_length = digits.ROWS
        if saved is not None:  # predict: the data is read only when asked for a held-out image
            self.images = self.labels = None
            return
        self._load()

    def _load(self) -> None:
        self.images, self.labels = digits.load(self.name)
        self.train_index, self.heldout_index = digits.split(len(self.labels))

    def build_model(self) -> nn.Module:
        cfg = self.cfg
        layer = recurrent_layer(cfg.cell, digits.COLUMNS, cfg.hidden, cfg.layers, cfg.bidirectional, batch_first=True)
        return SequenceClassifier(layer, 10, pooling="last" if cfg.attention == "none" else "attention")

    def batch(self, step: int, rank: int = 0, world: int = 1) -> Batch:
        chosen = self.train_index[self.draw(step, len(self.train_index), rank, world)]
        return Batch(self.images[chosen].to(self.device), self.labels[chosen].to(self.device),
                     self.cfg.batch_size, self.cfg.batch_size)

    def loss_terms(self, model, batch: Batch) -> tuple:
        scores = model(batch.images)  # (B, 10)
        loss = F.cross_entropy(scores, batch.labels, reduction="sum")
        return loss, batch.labels.numel(), int((scores.argmax(-1) == batch.labels).sum())

    def _heldout_scores(self, model) -> Tensor:
        with self.evaluating(model):
            return model(self.images[self.heldout_index].to(self.device)).cpu()

    def evaluate(self, model) -> dict:
        scores, labels = self._heldout_scores(model), self.labels[self.heldout_index]
        return {"heldout_loss": float(F.cross_entropy(scores, labels)),
                "heldout_accuracy": float((scores.argmax(-1) == labels).float().mean())}

    def pictures(self, model) -> dict:
        from . import task_plots
        predicted, labels = self._heldout_scores(model).argmax(-1), self.labels[self.heldout_index]
        counts = torch.zeros(10, 10, dtype=torch.long)
        counts.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
        accuracy = float((predicted == labels).float().mean())
        title = f"digits, held out ({len(labels)} images): accuracy {accuracy:.3f}"
        return {"confusion.png": lambda f: task_plots.confusion_matrix(counts, [str(d) for d in range(10)], f, title)}

    def predict(self, model, text: str) -> str:
        """An index of a held-out image, or 64 pixel values (0..16) row by row -> the digit read."""
        image, truth = self._image(text)
        with self.evaluating(model):
            probs = torch.softmax(model(image.unsqueeze(0)), dim=-1)[0]
        digit = int(probs.argmax())
        told = "" if truth is None else f", true {truth}"
        return f"{digit} (probability {float(probs[digit]):.3f}{told})"

    def prediction_picture(self, model, text: str):
        """The image, the attention weight of each row (step) and each class's probability."""
        from . import prediction_plots
        if model.pooling != "attention":
            raise NothingToDraw("this model reads its last state (trained with --attention none), so it has no "
                                "weights over the rows to draw; train with --attention additive for attention "
                                "pooling")
        image, truth = self._image(text)
        with self.evaluating(model):
            scores, weights = model(image.unsqueeze(0), return_weights=True)
        probs = torch.softmax(scores, dim=-1)[0]
        told = "" if truth is None else f" (true {truth})"
        title = f"digits: read {int(probs.argmax())}{told}, attention pooling over the 8 rows"
        return lambda path: prediction_plots.attention_over_rows(image, weights[0], probs, path, title)

    def _image(self, text: str) -> tuple:
        """(image (8, 8), its true digit or None) from a held-out index or 64 pixel values."""
        if text.strip().isdigit() and len(text.split()) == 1:
            if self.images is None:
                self._load()
            k = int(text)
            if not 0 <= k < len(self.heldout_index):
                raise ValueError(f"a held-out image index lies in [0, {len(self.heldout_index)}), got {k}")
            return self.images[self.heldout_index[k]], int(self.labels[self.heldout_index[k]])
        return digits.parse_image(text), None

    def vocab_state(self) -> dict:
        return {}
