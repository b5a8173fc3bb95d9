"""``writable``: whether a cache folder can be used, for the caches of compiled code (numba's kernels,
kernels/cpu/_jit.py; generated kernels, kernels/generator/build.py)."""
from __future__ import annotations

import os
import tempfile


def writable(folder: str) -> bool:
    """Whether files can be made in ``folder`` (made if missing): tried, as numba tries its cache
    folders, since permission bits say nothing for root or on a read-only mount."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


__all__ = ["writable"]
