"""torch.nn's recurrent layers as the reference, for `explain --check`, `verify` and `bench`.

The one module of the package that names torch.nn's recurrent modules: rnnkit never
computes with them, it only compares against them.
"""
from __future__ import annotations

import torch

import rnnkit


def torch_cell_class(name: str) -> type:
    """torch.nn's cell class ``name`` ("RNNCell", "LSTMCell", "GRUCell"): the user's cell that torch.nn
    itself is, as the kernel generator's benchmarks run it through Recurrent."""
    return getattr(torch.nn, name)


def torch_twin(layer: torch.nn.Module) -> torch.nn.Module:
    """The torch.nn layer of the same class and arguments, holding copies of ``layer``'s parameters."""
    cls = getattr(torch.nn, type(layer).__name__)
    if isinstance(layer, rnnkit.RNNBase):
        kwargs = dict(num_layers=layer.num_layers, bias=layer.bias, batch_first=layer.batch_first,
                      dropout=layer.dropout, bidirectional=layer.bidirectional)
        if isinstance(layer, rnnkit.RNN):
            kwargs["nonlinearity"] = layer.nonlinearity
        if layer.proj_size:
            kwargs["proj_size"] = layer.proj_size
    else:
        kwargs = dict(bias=layer.bias)
        if isinstance(layer, rnnkit.RNNCell):
            kwargs["nonlinearity"] = layer.nonlinearity
    p = next(layer.parameters())
    twin = cls(layer.input_size, layer.hidden_size, **kwargs, device=p.device, dtype=p.dtype)
    twin.load_state_dict(layer.state_dict(), strict=True)
    twin.train(layer.training)
    return twin


def torch_transformer_layer(d_model: int, nhead: int, *, batch_first: bool = True, seed: int = 0):
    """torch.nn.TransformerEncoderLayer and rnnkit's, built from one seed: identical parameters."""
    torch.manual_seed(seed)
    ref = torch.nn.TransformerEncoderLayer(d_model, nhead, batch_first=batch_first)
    torch.manual_seed(seed)
    ours = rnnkit.TransformerEncoderLayer(d_model, nhead, batch_first=batch_first)
    return ours, ref
