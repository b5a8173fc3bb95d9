"""A real time series for forecasting: yearly sunspot numbers 1700-2008 (statsmodels' bundled copy), or
the user's own series, one number per line.

The forecaster reads a window of past values and predicts the next one.  The last fifth of the
series is held out: its values are predicted from windows that end before each of them, and
the result is compared with the naive forecast "next = last" on the same points.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .extras import require

WINDOW = 20
HELDOUT_FRACTION = 0.2


def sunspots(task: str = "forecast") -> torch.Tensor:
    """(309,) float: the yearly mean sunspot numbers, 1700 .. 2008."""
    datasets = require("statsmodels.datasets.sunspots", "statsmodels", task)
    frame = datasets.load_pandas().data
    return torch.tensor(frame["SUNACTIVITY"].to_numpy(), dtype=torch.float32)


def read_series(path, window: int = WINDOW) -> torch.Tensor:
    """The user's series: one number per line (a header line and blank lines are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--data {path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"--data {path}: not UTF-8 text") from None
    values = []
    for number, line in enumerate(lines, 1):
        cells = [c for c in line.replace(",", " ").split() if c]
        if not cells:
            continue
        if len(cells) != 1:
            raise ValueError(f"--data {path}: line {number} holds {len(cells)} values; a series has one number "
                             "per line")
        try:
            value = float(cells[0])
        except ValueError:
            if number == 1 and not values:
                continue  # a header
            raise ValueError(f"--data {path}: line {number} is not a number ({cells[0][:20]!r})") from None
        if not math.isfinite(value):
            raise ValueError(f"--data {path}: line {number} is not a finite number ({cells[0][:20]!r})")
        values.append(value)
    needed = minimum_length(window)
    if len(values) < needed:
        raise ValueError(f"--data {path} holds {len(values)} values; forecasting with a window of {window} "
                         f"needs at least {needed}")
    return torch.tensor(values, dtype=torch.float32)


def minimum_length(window: int = WINDOW) -> int:
    """Enough for some training windows and some held-out points."""
    return 5 * window


def first_heldout(n: int) -> int:
    """The index of the first held-out value of a series of n values."""
    return n - max(1, int(n * HELDOUT_FRACTION))


def parse_values(text: str) -> torch.Tensor:
    """The user's recent values ("12.5, 30, 41") -> (T,) float."""
    parts = text.replace(",", " ").split()
    if not parts:
        raise ValueError("expected the recent values of the series, e.g. \"12.5, 30, 41\"")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"expected numbers separated by commas or spaces, got {text[:40]!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError("expected finite numbers")
    return torch.tensor(values)
