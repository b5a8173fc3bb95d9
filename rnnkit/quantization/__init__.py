"""Dynamic int8 quantization of models holding rnnkit layers, for CPU inference.

``rnnkit.quantization.quantize_dynamic(model)`` returns a copy of ``model`` whose ``rnnkit.LSTM``
and ``rnnkit.GRU`` layers are rnnkit int8 layers (``DynamicQuantizedLSTM``/``GRU``: int8 weights,
one scale per output channel, the recurrence computed by rnnkit's own loop) and whose ``nn.Linear``
layers are ``DynamicQuantizedLinear`` (fbgemm's int8 product, as torch's own module).  torch.ao's ``quantize_dynamic`` picks the same
classes up (torch_ao.py).

One concept per module: int8_weight (the quantized matrix), int8_gemm (the in-loop product and
why it is float x int8), lstm_loop / gru_loop (the jitted time loops), layer_base / lstm / gru
(the modules), linear (nn.Linear), cpu_features (VNNI or not), unsupported (loud refusals), convert (``quantize_dynamic``),
torch_ao (torch.ao's mapping).  Nothing here imports numba until an int8 layer first runs.
"""
from .convert import quantize_dynamic
from .gru import DynamicQuantizedGRU
from .layer_base import DynamicQuantizedRNNBase
from .linear import DynamicQuantizedLinear
from .lstm import DynamicQuantizedLSTM
from .torch_ao import DYNAMIC_MAPPINGS, register_with_torch_ao

register_with_torch_ao()

__all__ = ["quantize_dynamic", "DynamicQuantizedLSTM", "DynamicQuantizedGRU", "DynamicQuantizedRNNBase", "DynamicQuantizedLinear",
           "DYNAMIC_MAPPINGS", "register_with_torch_ao"]
