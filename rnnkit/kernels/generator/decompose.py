"""The ops of a cell's step written as the elementwise ops and row-wise reductions the C++ emitter
knows (emit_cpp.py): a layer norm as a mean, a variance and arithmetic, each activation as its formula,
and the backward ops autograd emits for the activations that stay whole (sigmoid, tanh, relu).

``record`` (record.py) applies the table as it records: an op found here runs as these torch ops, each
recorded in turn.  A stage's backward is autograd over the decomposed forward (stages.py), so the
activations decomposed here need no backward entry: their gradients come from their parts'.

Why rnnkit's own table rather than torch._decomp's: those decompositions import sympy on their first
call (0.9 s, type promotion's check), paid by the first generated cell of each process; and the table
would be a private part of torch.  The formulas are torch's definitions (torch.nn.functional's docs).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

aten = torch.ops.aten


def _layer_norm(x: Tensor, normalized_shape, weight, bias, eps: float):
    dims = list(range(x.dim() - len(normalized_shape), x.dim()))
    var, mean = torch.var_mean(x, dim=dims, correction=0, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    out = (x - mean) * rstd
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out, mean, rstd


def _gelu(x: Tensor, approximate: str = "none"):
    if approximate == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1 + torch.tanh(inner))
    return 0.5 * x * (1 + torch.erf(x * math.sqrt(0.5)))


def _softplus(x: Tensor, beta: float = 1, threshold: float = 20):
    scaled = x * beta
    return torch.where(scaled > threshold, x, torch.log1p(torch.exp(scaled)) / beta)


def _log_sigmoid_forward(x: Tensor):
    # min(x, 0) - log(1 + exp(-|x|)): no overflow for either sign; the second output is CPU scratch space
    return torch.clamp_max(x, 0) - torch.log1p(torch.exp(-torch.abs(x))), x.new_zeros(0)


def _logaddexp(a: Tensor, b: Tensor):
    return torch.maximum(a, b) + torch.log1p(torch.exp(-torch.abs(a - b)))


def _elu(x: Tensor, alpha: float = 1, scale: float = 1, input_scale: float = 1):
    return torch.where(x > 0, x * scale, torch.expm1(x * input_scale) * (alpha * scale))


def _leaky_relu(x: Tensor, negative_slope: float = 0.01):
    return torch.where(x > 0, x, x * negative_slope)


# the backward ops autograd emits for the activations kept whole, given the output y (sigmoid, tanh)
# or the input (relu's threshold_backward)
def _sigmoid_backward(grad: Tensor, y: Tensor):
    return grad * (y * (1 - y))


def _tanh_backward(grad: Tensor, y: Tensor):
    return grad * (1 - y * y)


def _threshold_backward(grad: Tensor, x: Tensor, threshold: float):
    return torch.where(x <= threshold, 0, grad)


DECOMPOSITIONS = {
    aten.native_layer_norm.default: _layer_norm,
    aten.gelu.default: _gelu,
    aten.silu.default: lambda x: x * torch.sigmoid(x),
    aten.softplus.default: _softplus,
    aten.hardtanh.default: lambda x, min_val=-1, max_val=1: torch.clamp(x, min_val, max_val),
    aten.log_sigmoid_forward.default: _log_sigmoid_forward,
    aten.logaddexp.default: _logaddexp,
    aten.elu.default: _elu,
    aten.leaky_relu.default: _leaky_relu,
    aten.sigmoid_backward.default: _sigmoid_backward,
    aten.tanh_backward.default: _tanh_backward,
    aten.threshold_backward.default: _threshold_backward,
    aten.sgn.default: torch.sign,  # abs's backward; the same for real numbers
}

__all__ = ["DECOMPOSITIONS"]
