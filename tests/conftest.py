"""Fixtures shared across the test folders."""
from __future__ import annotations

import pytest

from rnnkit.kernels.ops import extension


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
