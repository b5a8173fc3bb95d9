"""torch.ao's ``quantize_dynamic`` and rnnkit's classes.

``torch.ao.quantization.quantize_dynamic(model, {rnnkit.LSTM, rnnkit.GRU, nn.Linear})`` swaps a
module whose class is a key of its mapping (by default ``get_default_dynamic_quant_module_mappings()``,
a copy of ``DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS``) and leaves any other in float without a word.
Two ways, both kept:

- ``DYNAMIC_MAPPINGS`` here, to pass explicitly: ``quantize_dynamic(model, {...},
  mapping={**get_default_dynamic_quant_module_mappings(), **rnnkit.quantization.DYNAMIC_MAPPINGS})``.
- ``register_with_torch_ao()``, run when ``rnnkit.quantization`` is imported, adds the same entries to
  torch's default mapping, so that the call without ``mapping=`` works.

Registering writes into a global dict of torch's; it adds keys that are rnnkit's own classes only,
never replaces one of torch's, and changes nothing for a model without rnnkit layers.  The
alternative, leaving torch's dict alone, makes the plain call a silent no-op on rnnkit's layers:
the failure issue 17 reports.  rnnkit's classes without an int8 version are registered too, to a
stand-in that raises (unsupported.py), so that naming one is an error, not a float layer.

What stays out of reach: a ``mapping=`` of the user's own that lacks these entries (torch then
swaps nothing and rnnkit is not called), and a set naming ``nn.LSTM`` for a model that holds
``rnnkit.LSTM`` (torch matches classes exactly).  ``rnnkit.quantize_dynamic`` has neither problem.
"""
from __future__ import annotations

from .. import layers
from ..cells import GRUCell, LSTMCell, RNNCell
from ..recurrent import Recurrent
from .gru import DynamicQuantizedGRU
from .lstm import DynamicQuantizedLSTM
from .unsupported import NoInt8Version

DYNAMIC_MAPPINGS = {
    layers.LSTM: DynamicQuantizedLSTM,
    layers.GRU: DynamicQuantizedGRU,
    layers.RNN: NoInt8Version("rnnkit.RNN", "no int8 kernel for the Elman recurrence"),
    LSTMCell: NoInt8Version("rnnkit.LSTMCell", "cells run one step from Python; quantize a layer"),
    GRUCell: NoInt8Version("rnnkit.GRUCell", "cells run one step from Python; quantize a layer"),
    RNNCell: NoInt8Version("rnnkit.RNNCell", "cells run one step from Python; quantize a layer"),
    Recurrent: NoInt8Version("rnnkit.Recurrent", "no int8 kernels for its cells"),
}


def register_with_torch_ao() -> bool:
    """Add DYNAMIC_MAPPINGS to torch.ao's default dynamic mapping (never replacing an entry of
    torch's); False where this torch has no torch.ao.quantization (nothing to register into)."""
    try:
        from torch.ao.quantization import quantization_mappings
    except ImportError:  # torch.ao.quantization removed: its quantize_dynamic is gone with it
        return False
    defaults = quantization_mappings.DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS
    for float_class, quantized in DYNAMIC_MAPPINGS.items():
        defaults.setdefault(float_class, quantized)
    return True


__all__ = ["DYNAMIC_MAPPINGS", "register_with_torch_ao"]
