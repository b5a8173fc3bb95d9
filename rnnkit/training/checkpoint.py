"""Checkpoints: written atomically, loadable with torch.load(weights_only=True), checked on load."""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch

FORMAT = "rnnkit-train-checkpoint"
VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that cannot be used: missing, corrupt, foreign, or from another configuration."""


def save(path: Path, payload: dict) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError):
        raise CheckpointError(f"{path} is not a readable torch checkpoint (corrupt, truncated, or another "
                              "kind of file)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rnnkit training checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} is a version {payload.get('version')} checkpoint; this rnnkit reads version {VERSION}")
    return payload
