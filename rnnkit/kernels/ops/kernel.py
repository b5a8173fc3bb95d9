"""The "ops" backend: the Kernel interface on rnnkit's C++ operators (torch.ops.rnnkit.*)."""
from __future__ import annotations

from functools import lru_cache

import torch

from ...errors import UnsupportedBackendError
from ..base import Kernel, check_tensors, refuse_under_transforms
from . import extension
from .families import FAMILIES

DTYPES = (torch.float32, torch.float64)


@lru_cache(maxsize=64)
def _batch_sizes_tensor(batch_sizes: tuple) -> torch.Tensor:
    """The step sizes as the operators take them (1-D int64 on the CPU), made once per layout: the
    layers pass the same layout for every layer-direction and, when padded, for every call."""
    return torch.tensor(batch_sizes, dtype=torch.int64)


class OpsKernel(Kernel):
    """torch.nn's recurrences (LSTM with or without projection, GRU, Elman tanh/relu) on the C++
    operators of rnnkit._C: float32 and float64 on the CPU, padded or packed, either direction."""

    name = "ops"

    def check(self, eq, x, weights) -> None:
        if eq not in FAMILIES:
            raise UnsupportedBackendError(
                f"backend 'ops' has no operator for the recurrence {eq.name!r} (it runs rnn_tanh, rnn_relu, lstm "
                "and gru); use backend='auto', 'fused' or 'reference'")
        if torch.is_autocast_enabled("cpu"):
            raise UnsupportedBackendError(
                "backend 'ops' does not run under torch.autocast yet (no autocast rule is registered for its "
                "operators); use backend='auto' or 'reference'")
        if torch.jit.is_tracing():  # a trace of the operators would load only where rnnkit._C is loaded
            raise UnsupportedBackendError(
                "backend 'ops' is not recorded by torch.jit.trace (a trace holding rnnkit's operators would run "
                "only where rnnkit._C is loaded; the reference loop's trace is plain torch ops, which load "
                "anywhere); use backend='auto' or 'reference', which trace")
        refuse_under_transforms("ops")
        dtype = x.dtype
        if not (dtype in DTYPES and all(t is None or (t.device.type == "cpu" and t.dtype == dtype
                                                      and t.layout == torch.strided) for t in (x, *weights))):
            check_tensors("ops", x, weights, "cpu", DTYPES)
        extension.load()

    def layer(self, eq, x, batch_sizes, state0, weights, reverse):
        family = FAMILIES[eq]
        w_ih, w_hh, b_ih, b_hh, w_hr = weights
        operator = getattr(torch.ops.rnnkit, family.name)
        projection = (w_hr,) if family.projectable else ()
        results = operator(x, _batch_sizes_tensor(tuple(batch_sizes)), *state0, w_ih, w_hh, b_ih, b_hh, *projection,
                           reverse)
        return results[0], tuple(results[1:1 + family.states])


__all__ = ["OpsKernel"]
