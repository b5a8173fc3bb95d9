"""Backends behind one interface (see base.Kernel), and how a layer picks one.

``backend="auto"`` tries the fast backends in order and takes the first whose
``check`` passes; the reference loop runs everything.  ``backend="fused"`` means
rnnkit's fused kernel for the call, whichever device and cell it is: the C++ operators
(torch.nn's families, "ops"), the kernel generated from the cell's own equations (every other rnnkit
cell: ``GeneratedKernel.auto_cells``), the numba kernels (torch.nn's families where the C++ extension is
not built, "numba"), the CUDA kernels (Triton) or the parallel scan of the min-cells.
``backend="generated"`` runs the generated kernel on any cell, what Recurrent runs a user's cell on.  A backend
named explicitly is used or its UnsupportedBackendError reaches the user: no silent
fallback to the reference loop.
"""
from __future__ import annotations

import torch

from ..errors import UnsupportedBackendError
from .base import Kernel
from .cpu import FusedKernel
from .gpu import CudaFusedKernel  # imports triton only when a CUDA call first needs it
from .ops import OpsKernel  # loads rnnkit._C only when a call first needs it
from .generator.layer import GeneratedKernel
from .parallel_scan import ParallelScanKernel
from .opaque import for_compile
from .reference import ReferenceKernel

REFERENCE = ReferenceKernel()
BACKENDS: dict = {"reference": REFERENCE}  # every kernel by its own name
AUTO_ORDER: list = []  # fast backends, best first; the reference loop is always last
FUSED: list = []  # the kernels backend="fused" tries, in order


def register(kernel: Kernel, auto: bool = True, fused: bool = True) -> None:
    BACKENDS[kernel.name] = kernel
    if auto:
        AUTO_ORDER.append(kernel)
    if fused:
        FUSED.append(kernel)


register(OpsKernel())  # "ops": torch.nn's families on the C++ operators (torch.ops.rnnkit), built at install
# "generated": any cell's kernel generated from its equations (generator/), what Recurrent runs a user's
# cell on; "auto" and "fused" take it for the rnnkit cells of GeneratedKernel.auto_cells: all but torch.nn's
# families, where it measured within 10% of their (now removed) hand-written numba kernels or faster
register(GeneratedKernel())
register(FusedKernel())  # "numba": torch.nn's families on numba CPU kernels (where rnnkit._C is not built)
register(CudaFusedKernel())  # "fused_cuda"
register(ParallelScanKernel())  # "scan": MinGRU / MinLSTM, parallel over time


def check_backend_name(backend) -> None:
    names = ("auto", "fused") + tuple(BACKENDS)
    if backend not in names:
        raise ValueError(f"backend should be one of {', '.join(map(repr, names))}, got {backend!r}")


def select(backend: str, eq, x, weights) -> Kernel:
    kernel = _select(backend, eq, x, weights)
    if torch.compiler.is_compiling() and not torch.compiler.is_exporting():  # torch.compile traces: see opaque.py
        return for_compile(kernel, eq, weights)
    return kernel


def _offered(order: list, eq) -> list:
    """The kernels of ``order`` that "auto" and "fused" may take for ``eq`` (Kernel.auto_cells)."""
    return [k for k in order if k.auto_cells is None or eq.name in k.auto_cells]


def _select(backend: str, eq, x, weights) -> Kernel:
    if backend == "auto":  # first: the default, and a name that needs no check (this runs on every call)
        for kernel in _offered(AUTO_ORDER, eq):
            try:
                kernel.check(eq, x, weights)
            except UnsupportedBackendError:
                continue
            return kernel
        return REFERENCE
    check_backend_name(backend)
    if backend != "fused":
        BACKENDS[backend].check(eq, x, weights)
        return BACKENDS[backend]
    reasons = []
    for kernel in _offered(FUSED, eq):
        try:
            kernel.check(eq, x, weights)
        except UnsupportedBackendError as e:
            reasons.append(f"{kernel.name}: {e}")
            continue
        return kernel
    raise UnsupportedBackendError(f"no fused kernel runs this call ({'; '.join(reasons)}); "
                                  "use backend='auto' or 'reference'")


__all__ = ["Kernel", "BACKENDS", "AUTO_ORDER", "FUSED", "REFERENCE", "register", "select", "check_backend_name",
           "UnsupportedBackendError"]
