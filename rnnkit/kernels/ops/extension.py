"""Loading rnnkit's C++ extension (``rnnkit._C``, built from csrc/ at install time) and completing its
operators with what is registered from Python: the fake (shape) kernels and the differentiable backward.

Loaded at ``import rnnkit`` when it is built (load_if_built: about 10 ms, so that
``torch.jit.load`` finds the operators), else on first use.  The package must import without the
extension (a source tree never built, an isolated build that had no torch to build against): then
``backend="auto"`` runs the numba kernels and only ``backend="ops"`` refuses, saying how to build.
"""
from __future__ import annotations

import importlib
from functools import lru_cache

from ...errors import UnsupportedBackendError

BUILD_HINT = ("build it against the installed torch from the source tree with "
              "`pip install --no-build-isolation -e .` (after `pip install torch`); "
              "use backend='auto', 'fused' or 'reference' meanwhile")


def _import_extension():
    """Imports rnnkit._C, whose static initialisers register the operators and their CPU kernels."""
    return importlib.import_module("rnnkit._C")


@lru_cache(maxsize=1)
def _load() -> str | None:
    """None once the operators are complete; else why the extension could not be loaded."""
    try:
        _import_extension()
    except (ImportError, OSError) as e:  # not built, or built for another torch (undefined symbols)
        return f"{type(e).__name__}: {e}"
    from . import autograd, fake  # noqa: F401  (each registers its part of every operator on import)
    return None


# True once the operators are complete: a plain flag, which dynamo reads as a constant while it traces
# (through _load's lru_cache it would trace the import itself, which it refuses)
_READY = False


def ready() -> bool:
    return _READY


def load() -> None:
    """Make the operators ready (once); UnsupportedBackendError, saying how to build, if they cannot be."""
    global _READY
    if _READY:
        return
    problem = _load()
    if problem is not None:
        raise UnsupportedBackendError(
            f"backend 'ops' needs rnnkit's C++ extension rnnkit._C, which could not be loaded ({problem}); "
            + BUILD_HINT)
    _READY = True


def load_if_built() -> None:
    """load(), silently doing nothing without the extension: run when rnnkit.kernels.ops is imported
    (by ``import rnnkit``), so that ``torch.jit.load`` of a model scripted with rnnkit's layers finds the
    operators (about 10 ms); without the extension only what needs the operators refuses."""
    try:
        load()
    except UnsupportedBackendError:
        pass


def available() -> bool:
    return _load() is None


def reset() -> None:
    """Forget the outcome of the last load (for tests that hide the extension)."""
    global _READY
    _READY = False
    _load.cache_clear()


__all__ = ["load", "load_if_built", "ready", "available", "reset", "BUILD_HINT"]
