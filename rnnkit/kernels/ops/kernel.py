"""The "ops" backend: the Kernel interface on rnnkit's C++ operators (torch.ops.rnnkit.*)."""
from __future__ import annotations


import torch

from ...errors import UnsupportedBackendError
from ..base import Kernel, batch_sizes_tensor, check_tensors, refuse_under_transforms
from . import extension
from .families import FAMILIES

DTYPES = (torch.float32, torch.float64)  # what the operators compute in
# what the kernel takes: the operators run bfloat16 and float16 layers in float32 (the time loop, on
# widened states and weights) and their large products in the layer's dtype (float32 accumulation)
HALF_DTYPES = (torch.bfloat16, torch.float16)
ACCEPTED = DTYPES + HALF_DTYPES


class OpsKernel(Kernel):
    """torch.nn's recurrences (LSTM with or without projection, GRU, Elman tanh/relu) on the C++
    operators of rnnkit._C: float32 and float64 on the CPU, padded or packed, either direction;
    bfloat16 and float16 computed in float32."""

    name = "ops"
    fresh_states = True  # the operators' own results; their autograd saves h0, c0 and output, never h_n

    def check(self, eq, x, weights) -> None:
        if eq not in FAMILIES:
            raise UnsupportedBackendError(
                f"backend 'ops' has no operator for the recurrence {eq.name!r} (it runs rnn_tanh, rnn_relu, lstm "
                "and gru); use backend='auto', 'fused' or 'reference'")
        if torch.is_autocast_enabled("cpu") and x.dtype not in HALF_DTYPES:
            # the layer casts a call whole where torch.nn does (its input is then bfloat16/float16);
            # elsewhere torch.nn's autocast acts op by op, which the reference loop reproduces
            raise UnsupportedBackendError(
                "backend 'ops' runs under torch.autocast only where the layer casts the whole call (as torch.nn's "
                "oneDNN LSTM is cast); autocast op by op runs on backend='auto' or 'reference'")
        if torch.jit.is_tracing():  # a trace of the operators would load only where rnnkit._C is loaded
            raise UnsupportedBackendError(
                "backend 'ops' is not recorded by torch.jit.trace (a trace holding rnnkit's operators would run "
                "only where rnnkit._C is loaded; the reference loop's trace is plain torch ops, which load "
                "anywhere); use backend='auto' or 'reference', which trace")
        refuse_under_transforms("ops")
        dtype = x.dtype
        # (is_cpu, not device.type: a device object per tensor cost 0.25 us each, paid by every call)
        if not (dtype in ACCEPTED and all(t is None or (t.is_cpu and t.dtype == dtype and t.layout == torch.strided)
                                          for t in (x, *weights))):
            check_tensors("ops", x, weights, "cpu", ACCEPTED)
        extension.load()

    def layer(self, eq, x, batch_sizes, state0, weights, reverse):
        family = FAMILIES[eq]
        w_ih, w_hh, b_ih, b_hh, w_hr = weights
        operator = getattr(torch.ops.rnnkit, family.name)
        projection = (w_hr,) if family.projectable else ()
        results = operator(x, batch_sizes_tensor(tuple(batch_sizes)), *state0, w_ih, w_hh, b_ih, b_hh, *projection,
                           reverse)
        return results[0], tuple(results[1:1 + family.states])


__all__ = ["OpsKernel"]
