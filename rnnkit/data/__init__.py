"""Embedded task generators: seeded, no download."""
from .dates import DateTask
from .vocab import Vocab

__all__ = ["DateTask", "Vocab"]
