"""A weight matrix quantized to int8, symmetric, one scale per output channel (row).

For a float matrix W (N, K), row j gets the scale s_j = max_k |W_jk| / 127 and the values
q_jk = round(W_jk / s_j), clamped to [-127, 127], so that W_jk ~ s_j q_jk with an error of at
most s_j / 2 per element.  One scale per row (per output channel) rather than one for the whole
matrix (torch's ``quantize_dynamic`` default, per tensor): a row of small weights keeps its own
resolution instead of that of the largest weight anywhere, and the product needs no zero point.

    ======  ==========  ===========================================
    values  (N, K)      int8, in [-127, 127] (never -128: symmetric)
    scale   (N,)        float32, > 0
    ======  ==========  ===========================================

``fbgemm_packed(bias)`` is the same matrix packed for ``torch.ops.quantized.linear_dynamic`` (a
matrix product: x quantized per call to uint8, the product in int8/int32, the result scaled back
to float and ``bias`` added).  Building it goes through torch's quantized tensors, which warn in
torch 2.13 that their creation functions are deprecated; that warning is torch's business with
rnnkit, not the user's, so it is silenced here, the one place that creates them.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple, Optional

import torch
from torch import Tensor

INT8_MAX = 127  # symmetric range [-127, 127]: the negation of every value is a value
# The layout of the VNNI product (int8_vnni.py): k padded to whole 64-byte operands, n to blocks of 4
# columns, and the activations' zero point (uint8 activations: x / scale + 128 in [1, 255]).
K_ALIGN = 64
N_ALIGN = 4
ZERO_POINT = 128


class VnniWeight(NamedTuple):
    values: Tensor  # (n4, kp) int8: the values, zero-padded to n4 = N rounded up to 4, kp = K up to 64
    scale: Tensor  # (N,) float32
    zero: Tensor  # (N,) int32: ZERO_POINT * the row sums, what the uint8 activations' offset adds


class Int8Weight(NamedTuple):
    values: Tensor  # (N, K) int8
    scale: Tensor  # (N,) float32

    @classmethod
    def quantize(cls, weight: Tensor) -> "Int8Weight":
        """Per-row symmetric quantization of a float matrix (N, K)."""
        w = weight.detach().to(torch.float32)
        scale = w.abs().amax(dim=1) / INT8_MAX  # (N,)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row: any scale is exact
        values = torch.round(w / scale[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
        return cls(values.contiguous(), scale.contiguous())

    def dequantize(self) -> Tensor:
        """The float matrix the int8 values stand for, s_j q_jk (N, K)."""
        return self.values.to(torch.float32) * self.scale[:, None]

    def vnni_layout(self) -> VnniWeight:
        """The matrix laid out for the VNNI product (int8_vnni.py)."""
        n, k = self.values.shape
        n4, kp = -(-n // N_ALIGN) * N_ALIGN, -(-max(k, 1) // K_ALIGN) * K_ALIGN
        padded = torch.zeros(n4, kp, dtype=torch.int8)
        padded[:n, :k] = self.values
        zero = (self.values.to(torch.int32).sum(dim=1) * ZERO_POINT).to(torch.int32)
        return VnniWeight(padded, self.scale.contiguous(), zero.contiguous())

    def quantized_tensor(self) -> Tensor:
        """The matrix as torch's per-channel qint8 tensor (what torch's quantized modules take)."""
        rows = self.values.shape[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch 2.13: "quantized tensor creation ... deprecated"
            # quantizing the dequantized matrix with the same scales gives back exactly these values
            # (each s_j q_jk / s_j is within a few ulp of the integer q_jk, far from a rounding boundary)
            return torch.quantize_per_channel(self.dequantize(), self.scale.to(torch.float64),
                                              torch.zeros(rows, dtype=torch.int64), 0, torch.qint8)

    def fbgemm_packed(self, bias: Optional[Tensor] = None):
        """The matrix packed for ``torch.ops.quantized.linear_dynamic`` (per-channel int8), with ``bias`` (N,)."""
        qweight = self.quantized_tensor()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.ops.quantized.linear_prepack(qweight, None if bias is None else bias.detach().float())


__all__ = ["Int8Weight", "VnniWeight", "INT8_MAX", "K_ALIGN", "N_ALIGN", "ZERO_POINT"]
