"""Fixtures shared across the test folders."""
from __future__ import annotations

import os

import pytest
import torch

from rnnkit.kernels.ops import extension


def pytest_configure(config):
    """Under pytest-xdist (the README runs ``-n auto --dist loadfile``), each worker takes its share of the cores.

    torch's default is one intra-op thread per core in every worker, so two workers on two cores
    oversubscribe them and OpenMP's waiting threads spin against each other.  The tests that need
    several threads (a batch split across threads) set them themselves.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // workers))


@pytest.fixture
def extension_missing(monkeypatch):
    """rnnkit._C as in a source tree that was never built."""
    def missing():
        raise ModuleNotFoundError("No module named 'rnnkit._C'")

    monkeypatch.setattr(extension, "_import_extension", missing)
    extension.reset()
    yield
    monkeypatch.undo()
    extension.reset()
