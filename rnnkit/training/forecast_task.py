"""Task "forecast" (N -> 1, a value): the next value of a real series from a window of the past ones.

The series is the yearly sunspot numbers 1700-2008 that statsmodels ships, or your own with --data
(one number per line).  The model reads up to 20 past values (training windows have random
lengths from 5 to 20, so it also forecasts from a short history) and predicts the next.  Metric:
the mean absolute error over the last fifth of the series, each point forecast from the values
before it, against the naive forecast "next = last" on the same points: mae_ratio = MAE / naive
MAE, below 1 when the model beats it.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import series
from ..models.builders import recurrent_layer
from ..models.classifier import SequenceClassifier
from .lm_task import TaskInputError
from .structure_task import StructureTask

SHORTEST = 5


class Batch(NamedTuple):
    windows: Tensor       # (B, W, 1) scaled values, zeros after each length
    lengths: Tensor       # (B,)
    targets: Tensor       # (B,) the scaled next values
    global_tokens: int    # forecasts in the whole global batch
    examples: int


class ForecastTask(StructureTask):
    name = "forecast"
    structure = "N-1"
    metric = "mae_ratio"
    takes_data = True
    epoch_size = 250
    # attention pooling learns the "mostly the last values" rule far more slowly than the last state
    defaults = {"steps": 200, "lr": 0.01, "attention": "none", "hidden": 32}
    csv_fields = ("heldout_loss", "mae", "naive_mae", "mae_ratio")

    def __init__(self, cfg, device, saved: dict | None = None):
        super().__init__(cfg, device, saved)
        self.sequence_length = series.WINDOW
        if saved is not None:
            self.mean, self.std = float(saved["scale"]["mean"]), float(saved["scale"]["std"])
            return
        try:
            values = series.sunspots(self.name) if cfg.data is None else series.read_series(cfg.data)
        except ValueError as e:
            raise TaskInputError(str(e)) from None
        self.values = values
        self.first_heldout = series.first_heldout(len(values))
        train = values[:self.first_heldout]
        self.mean, self.std = float(train.mean()), float(train.std()) or 1.0
        self.scaled = (values - self.mean) / self.std
        # every target the training windows may predict: at least SHORTEST values before it
        self.train_targets = torch.arange(SHORTEST, self.first_heldout)

    def build_model(self) -> nn.Module:
        cfg = self.cfg
        layer = recurrent_layer(cfg.cell, 1, cfg.hidden, cfg.layers, cfg.bidirectional, batch_first=True)
        return SequenceClassifier(layer, 1, pooling="last" if cfg.attention == "none" else "attention")

    def _windows(self, targets: Tensor, lengths: Tensor) -> Tensor:
        """(B, W, 1): for each target index, the ``length`` values before it, left-aligned."""
        windows = torch.zeros(len(targets), series.WINDOW, 1)
        for row, (t, n) in enumerate(zip(targets.tolist(), lengths.tolist())):
            windows[row, :n, 0] = self.scaled[t - n:t]
        return windows

    def batch(self, step: int, rank: int = 0, world: int = 1) -> Batch:
        chosen = self.draw(step, len(self.train_targets), rank, world)
        targets = self.train_targets[chosen]
        # random history lengths, from the same seeded draw: a function of the step alone
        spread = self.draw(step + 10**9, series.WINDOW - SHORTEST + 1, rank, world) + SHORTEST
        lengths = torch.minimum(spread, targets)
        return Batch(self._windows(targets, lengths).to(self.device), lengths, self.scaled[targets].to(self.device),
                     self.cfg.batch_size, self.cfg.batch_size)

    def loss_terms(self, model, batch: Batch) -> tuple:
        predicted = model(batch.windows, batch.lengths).squeeze(1)  # (B,)
        loss = F.mse_loss(predicted, batch.targets, reduction="sum")
        return loss, batch.targets.numel(), 0

    def heldout_forecasts(self, model) -> tuple:
        """(target indices, truth, the model's forecasts, the naive ones), in the series' units."""
        targets = torch.arange(self.first_heldout, len(self.values))
        lengths = torch.full_like(targets, series.WINDOW)
        with self.evaluating(model):
            scaled = model(self._windows(targets, lengths).to(self.device), lengths).squeeze(1).cpu()
        return targets, self.values[targets], scaled * self.std + self.mean, self.values[targets - 1]

    def evaluate(self, model) -> dict:
        _, truth, predicted, naive = self.heldout_forecasts(model)
        mae, naive_mae = float((predicted - truth).abs().mean()), float((naive - truth).abs().mean())
        loss = float(F.mse_loss((predicted - self.mean) / self.std, (truth - self.mean) / self.std))
        return {"heldout_loss": loss, "mae": mae, "naive_mae": naive_mae, "mae_ratio": mae / naive_mae}

    def pictures(self, model) -> dict:
        from . import task_plots
        index, truth, predicted, naive = self.heldout_forecasts(model)
        mae, naive_mae = float((predicted - truth).abs().mean()), float((naive - truth).abs().mean())
        sunspots = self.cfg.data is None
        x = (index + 1700).numpy() if sunspots else index.numpy()  # the sunspot series starts in 1700
        title = (f"{'yearly sunspot numbers' if sunspots else self.cfg.data}, held out: MAE {mae:.2f} against "
                 f"{naive_mae:.2f} for next = last")
        return {"forecast.png": lambda f: task_plots.forecast(x, truth.numpy(), predicted.numpy(), naive.numpy(), f,
                                                              title, "year" if sunspots else "step")}

    def predict(self, model, text: str) -> str:
        """The recent values, oldest first (any number; the last 20 are read) -> the next value."""
        _, forecast, _ = self._forecast(model, text)
        return f"{forecast:.2f}"

    def prediction_picture(self, model, text: str):
        """The values read and the forecast after them (and the attention over them, where the model pools so)."""
        from . import prediction_plots
        values, forecast, weights = self._forecast(model, text)
        pooling = "attention pooling" if weights is not None else "its last state"
        title = f"forecast: the next value from the last {len(values)} read ({pooling})"
        return lambda path: prediction_plots.forecast_window(values.numpy(), forecast, weights, path, title)

    def _forecast(self, model, text: str) -> tuple:
        """(the values read, the forecast in the series' units, the attention weights (steps,) or None)."""
        values = series.parse_values(text)[-series.WINDOW:]
        window = ((values - self.mean) / self.std).view(1, -1, 1)
        with self.evaluating(model):
            if model.pooling == "attention":
                scaled, weights = model(window, return_weights=True)
                weights = weights[0].cpu().numpy()
            else:
                scaled, weights = model(window), None
        return values, float(scaled) * self.std + self.mean, weights

    def vocab_state(self) -> dict:
        return {"scale": {"mean": self.mean, "std": self.std}}
