"""rnnkit modules that have no int8 version: named for quantization, they refuse loudly.

torch.ao's ``quantize_dynamic(model, {rnnkit.RNN, ...})`` swaps a module only if its class is a key
of the mapping, and silently leaves it in float otherwise.  Mapping these classes to a stand-in
whose ``from_float`` raises turns that silent no-op into an error that names the module.
"""
from __future__ import annotations


class NoInt8Version:
    """The torch.ao mapping's value for an rnnkit class without an int8 kernel."""

    def __init__(self, class_name: str, why: str) -> None:
        self.class_name, self.why = class_name, why

    def from_float(self, mod, use_precomputed_fake_quant: bool = False):
        raise NotImplementedError(
            f"{self.class_name} has no dynamically quantized version in rnnkit ({self.why}); rnnkit quantizes "
            "rnnkit.LSTM and rnnkit.GRU (and torch quantizes nn.Linear). Leave "
            f"{self.class_name} out of the set given to quantize_dynamic to keep it in float")


__all__ = ["NoInt8Version"]
