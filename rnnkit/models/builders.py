"""Recurrent layers and cells by the names the command line uses."""
from __future__ import annotations

import re

from torch import nn

from ..cells import CELLS
from ..layers import GRU, LSTM, RNN
from ..recurrent import Recurrent

TORCH_LAYERS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def snake_name(cls_name: str) -> str:
    """LayerNormLSTMCell -> layer_norm_lstm, MinGRUCell -> min_gru, IndRNNCell -> ind_rnn."""
    name = cls_name.removesuffix("Cell")
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def cell_classes() -> dict:
    """rnnkit.cells' cell classes by snake-case name."""
    return {snake_name(name): cls for name, cls in CELLS.items()}


def cell_names() -> list:
    return sorted(cell_classes())


def cell_class(cell: str):
    """The cell class named ``cell`` (snake-case or class name, any case)."""
    classes = cell_classes()
    key = cell.lower()
    for name, cls in classes.items():
        if key in (name, cls.__name__.lower()):
            return cls
    raise ValueError(f"unknown cell {cell!r}; choose from {', '.join(cell_names())}")


def recurrent_layer(cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                    bidirectional: bool = False, batch_first: bool = False) -> nn.Module:
    """rnn/lstm/gru -> rnnkit.RNN/LSTM/GRU; any other rnnkit.cells name -> Recurrent over that cell."""
    cls = cell_class(cell)
    layer = TORCH_LAYERS.get(snake_name(cls.__name__))
    if layer is not None:
        return layer(input_size, hidden_size, num_layers, bidirectional=bidirectional, batch_first=batch_first)
    return Recurrent(cls, input_size, hidden_size, num_layers, bidirectional=bidirectional, batch_first=batch_first)
