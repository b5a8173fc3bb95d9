"""Backends behind one interface (see base.Kernel), and how a layer picks one.

``backend="auto"`` tries the fast backends in order and takes the first whose
``check`` passes; the reference loop runs everything.  A backend named explicitly
is used or its UnsupportedBackendError reaches the user: no silent fallback.
"""
from __future__ import annotations

from ..errors import UnsupportedBackendError
from .base import Kernel
from .reference import ReferenceKernel

REFERENCE = ReferenceKernel()
BACKENDS: dict = {"reference": REFERENCE}
AUTO_ORDER: list = []  # fast backends, best first; the reference loop is always last


def register(kernel: Kernel, auto: bool = True) -> None:
    BACKENDS[kernel.name] = kernel
    if auto:
        AUTO_ORDER.append(kernel)


def check_backend_name(backend) -> None:
    names = ("auto",) + tuple(BACKENDS)
    if backend not in names:
        raise ValueError(f"backend should be one of {', '.join(map(repr, names))}, got {backend!r}")


def select(backend: str, eq, x, weights) -> Kernel:
    check_backend_name(backend)
    if backend != "auto":
        kernel = BACKENDS[backend]
        kernel.check(eq, x, weights)
        return kernel
    for kernel in AUTO_ORDER:
        try:
            kernel.check(eq, x, weights)
        except UnsupportedBackendError:
            continue
        return kernel
    return REFERENCE


__all__ = ["Kernel", "BACKENDS", "REFERENCE", "register", "select", "check_backend_name",
           "UnsupportedBackendError"]
