"""``quantize_dynamic``: a copy of a model with its LSTM, GRU and Linear layers in int8.

Which module becomes what (class match is exact: a user's subclass may override ``forward``, which
a swap would lose, so it is left in float with a warning):

    =====================  ================================================
    rnnkit.LSTM            DynamicQuantizedLSTM (proj_size included)
    rnnkit.GRU             DynamicQuantizedGRU
    torch.nn.Linear        DynamicQuantizedLinear (linear.py: fbgemm's product, as torch's module)
    other rnnkit layers    left in float, with one warning naming them
    anything else          left as it is
    =====================  ================================================

The user's model is deep-copied first and never changed; the copy is returned in eval mode.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from .. import layers
from ..recurrent import Recurrent
from .gru import DynamicQuantizedGRU
from .linear import quantize_linear
from .lstm import DynamicQuantizedLSTM

SWAPS = {layers.LSTM: DynamicQuantizedLSTM.from_float, layers.GRU: DynamicQuantizedGRU.from_float,
         nn.Linear: quantize_linear}
# recurrent modules that stay in float: a warning names them, so that nothing is left in float unsaid
LEFT_IN_FLOAT = (layers.RNNBase, Recurrent)


def quantize_dynamic(model: nn.Module, dtype=torch.qint8) -> nn.Module:
    """A copy of ``model`` for CPU inference with int8 weights (dynamic quantization).

    Every ``rnnkit.LSTM`` and ``rnnkit.GRU`` becomes an rnnkit int8 layer (the recurrence
    computed by rnnkit: see DynamicQuantizedLSTM/GRU), every ``nn.Linear`` a DynamicQuantizedLinear
    (fbgemm's int8 product, as torch's dynamically quantized Linear); weights are int8, symmetric, one scale per output channel.  The copy is in
    eval mode and runs under ``torch.no_grad()`` or ``torch.inference_mode()``; its int8 layers
    refuse training mode and inputs that require grad.  ``model`` itself is not changed.

    ``dtype``: ``torch.qint8`` only (anything else raises ValueError).
    """
    if dtype != torch.qint8:
        raise ValueError(f"rnnkit.quantize_dynamic quantizes to torch.qint8 only, got dtype={dtype}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"rnnkit.quantize_dynamic takes an nn.Module, got {type(model).__name__}")
    model = copy.deepcopy(model)
    model.eval()
    left: list = []
    swap = SWAPS.get(type(model))
    if swap is not None:
        return swap(model).eval()
    _swap_children(model, "", left)
    if isinstance(model, LEFT_IN_FLOAT):
        left.insert(0, f"(the model itself: {type(model).__name__})")
    if left:
        warnings.warn(f"rnnkit.quantize_dynamic left these recurrent modules in float (rnnkit has int8 kernels for "
                      f"rnnkit.LSTM and rnnkit.GRU only): {', '.join(left)}", UserWarning, stacklevel=2)
    return model


def _swap_children(module: nn.Module, prefix: str, left: list) -> None:
    for name, child in module.named_children():
        swap = SWAPS.get(type(child))
        if swap is not None:
            setattr(module, name, swap(child).eval())
            continue
        if isinstance(child, LEFT_IN_FLOAT):
            left.append(f"{prefix}{name} ({type(child).__module__}.{type(child).__name__})")
            continue  # a Recurrent's cells are its own business: none of them is swapped either
        _swap_children(child, f"{prefix}{name}.", left)


__all__ = ["quantize_dynamic"]
