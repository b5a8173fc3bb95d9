"""nn.Linear with int8 weights: fbgemm's dynamic int8 product, called as torch's own module calls it.

A Linear is a matrix product, not a recurrence: ``torch.ops.quantized.linear_dynamic`` computes it
(x quantized to uint8 per call over its range, fbgemm's int8 product, the result in float), as in
torch's ``torch.ao.nn.quantized.dynamic.Linear``, with torch's default weights (int8, symmetric,
one scale for the whole matrix).  One difference: torch's module always quantizes x to 7 bits
(``reduce_range=True``), which fbgemm needs only where the CPU lacks VNNI (cpu_features.py); here
x gets 8 bits where it has VNNI, which halves the rounding step of x at the same speed.

Why one scale for the matrix, not one per output channel as rnnkit's recurrent layers have:
measured on the tutorial's decoder (256 -> 33,278, weights uniform +-0.1 as the tutorial
initialises them), interleaved, median of 60, on the project's AVX-512 EPYC, one thread, in
torch's module: per channel 2.45 ms against 2.34 for 25 rows, 97.2 against 93.5 ms for 500 rows
(3-4% slower), for an error of 1.891e-2 against 1.892e-2 (the rounding of x dominates).

    ======  ===================================
    input   (*, in_features) float32
    output  (*, out_features) float32
    ======  ===================================
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from .. import export as _export
from .cpu_features import fbgemm_reduce_range
from .int8_weight import INT8_MAX


class DynamicQuantizedLinear(nn.Module):
    """``y = x (s Q)^T + b``: Q (out, in) int8, s one float scale; x quantized per call (fbgemm).

    Buffers ``weight_int8`` (out, in), ``weight_scale`` (), ``bias`` (out,) when present.  Inference only,
    as the recurrent int8 layers: training mode, or an input that requires grad under grad mode, raises.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(()))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._packed = {}  # fbgemm's packed weight, made on first use (in a dict: torch.export reads no attribute of it)
        self.training = False  # built for inference: eval mode from the start

    @classmethod
    def from_float(cls, linear: nn.Linear, use_precomputed_fake_quant: bool = False) -> "DynamicQuantizedLinear":
        """The int8 copy of ``linear`` (float32, on the CPU; ``linear`` is not changed)."""
        if linear.weight.dtype != torch.float32 or linear.weight.device.type != "cpu":
            raise ValueError(f"rnnkit.quantize_dynamic: an nn.Linear needs float32 weights on the CPU to be "
                             f"quantized, got {linear.weight.dtype} on {linear.weight.device}")
        q = cls(linear.in_features, linear.out_features, linear.bias is not None)
        with torch.no_grad():
            w = linear.weight.detach()
            scale = w.abs().max() / INT8_MAX
            scale = scale if scale > 0 else torch.ones(())
            q.weight_int8.copy_(torch.round(w / scale).clamp_(-INT8_MAX, INT8_MAX))
            q.weight_scale.copy_(scale)
            if linear.bias is not None:
                q.bias.copy_(linear.bias)
        return q

    def _packed_weight(self):
        if not self._packed:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch 2.13: "quantized tensor creation ... deprecated"
                scale = float(self.weight_scale)
                qweight = torch.quantize_per_tensor(self.weight_int8.float() * scale, scale, 0, torch.qint8)
                self._packed["weight"] = torch.ops.quantized.linear_prepack(qweight, self.bias)
        return self._packed["weight"]

    def forward(self, input: Tensor) -> Tensor:
        if _export.compiling():  # fbgemm's packed weight is made on first use: eagerly, a graph break
            return _export.eager_call(self, input)
        if _export.exporting():
            raise _export.int8_not_exportable(type(self).__name__)
        cls = type(self).__name__
        if self.training:
            raise RuntimeError(f"{cls} is for inference only and is in training mode: call model.eval()")
        if torch.is_grad_enabled() and input.requires_grad:
            raise RuntimeError(f"{cls} is for inference only: its input requires grad; run it under torch.no_grad()")
        if input.dtype != torch.float32 or input.shape[-1] != self.in_features:
            raise RuntimeError(f"{cls}: expected float32 input of {self.in_features} features, got {input.dtype} "
                               f"of shape {tuple(input.shape)}")
        rows = input.reshape(-1, self.in_features)
        if rows.shape[0] == 0:
            return input.new_zeros(*input.shape[:-1], self.out_features)
        out = torch.ops.quantized.linear_dynamic(rows.contiguous(), self._packed_weight(), fbgemm_reduce_range())
        return out.view(*input.shape[:-1], self.out_features)

    # the packed weights follow the buffers
    def _apply(self, fn, *args, **kwargs):
        self._packed = {}
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._packed = {}
        return super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_packed"] = {}
        return state

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, " \
               "dtype=torch.qint8"


def quantize_linear(linear: nn.Linear) -> DynamicQuantizedLinear:
    return DynamicQuantizedLinear.from_float(linear)


__all__ = ["DynamicQuantizedLinear", "quantize_linear"]
