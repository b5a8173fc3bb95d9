"""scikit-learn's bundled handwritten digits (1,797 images of 8x8 pixels, values 0..16), read row by row:
the N -> 1 task.  Each image is a sequence of 8 steps, each step one row of 8 pixels scaled to [0, 1].

The split is fixed (a seeded permutation, the same for every run): 1,437 images to train on,
360 held out.
"""
from __future__ import annotations

import torch

from .extras import require

ROWS, COLUMNS, LEVELS = 8, 8, 16
HELDOUT = 360


def load(task: str = "digits") -> tuple:
    """(images (N, 8, 8) float in [0, 1], labels (N,) int64), in scikit-learn's order."""
    datasets = require("sklearn.datasets", "scikit-learn", task)
    bunch = datasets.load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32) / LEVELS
    return images, torch.tensor(bunch.target, dtype=torch.long)


def split(n: int) -> tuple:
    """(train indices, held-out indices) of n images: the same permutation for every run."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return order[HELDOUT:], order[:HELDOUT]


def parse_image(text: str) -> torch.Tensor:
    """64 numbers (0..16, commas or spaces between them), row by row -> an image (8, 8) in [0, 1]."""
    parts = text.replace(",", " ").split()
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"expected {ROWS * COLUMNS} pixel values (numbers), got {text[:40]!r}") from None
    if len(values) != ROWS * COLUMNS:
        raise ValueError(f"expected {ROWS * COLUMNS} pixel values ({ROWS} rows of {COLUMNS}, from 0 to {LEVELS}), "
                         f"got {len(values)}")
    if not all(0 <= v <= LEVELS for v in values):
        raise ValueError(f"pixel values should lie in [0, {LEVELS}]")
    return torch.tensor(values).view(ROWS, COLUMNS) / LEVELS
