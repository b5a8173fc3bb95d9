"""The equations: one file per cell family, each a plain step function plus its nn.Module."""
from ._base import CellEquations, CellWeights
from .elman import ELMAN_RELU, ELMAN_TANH, RNNCell, elman_equations
from .gru import GRU_EQUATIONS, GRU_RESET_BEFORE, GRUCell
from .indrnn import INDRNN_RELU, INDRNN_TANH, IndRNNCell, indrnn_equations
from .layernorm_gru import LAYERNORM_GRU, LayerNormGRUCell
from .layernorm_lstm import LAYERNORM_LSTM, LayerNormLSTMCell
from .lstm import LSTM_EQUATIONS, LSTMCell
from .min_gru import MIN_GRU, MinGRUCell
from .min_lstm import MIN_LSTM, MinLSTMCell
from .peephole_lstm import PEEPHOLE_LSTM, PeepholeLSTMCell

__all__ = [
    "CellEquations", "CellWeights",
    "ELMAN_TANH", "ELMAN_RELU", "LSTM_EQUATIONS", "GRU_EQUATIONS", "elman_equations",
    "GRU_RESET_BEFORE", "LAYERNORM_LSTM", "LAYERNORM_GRU", "PEEPHOLE_LSTM",
    "INDRNN_RELU", "INDRNN_TANH", "indrnn_equations", "MIN_GRU", "MIN_LSTM",
    "RNNCell", "LSTMCell", "GRUCell",
    "LayerNormLSTMCell", "LayerNormGRUCell", "PeepholeLSTMCell", "IndRNNCell", "MinGRUCell", "MinLSTMCell",
]

# Every cell class by its class name: what `rnnkit train --cell` and `rnnkit verify` enumerate.
CELLS = {name: globals()[name] for name in sorted(__all__) if name.endswith("Cell")}
__all__.append("CELLS")
