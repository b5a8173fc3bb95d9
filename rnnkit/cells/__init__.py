"""The equations: one file per cell family, each a plain step function plus its nn.Module."""
from ._base import CellEquations, CellWeights
from .elman import ELMAN_RELU, ELMAN_TANH, RNNCell, elman_equations
from .gru import GRU_EQUATIONS, GRUCell
from .lstm import LSTM_EQUATIONS, LSTMCell

__all__ = [
    "CellEquations", "CellWeights",
    "ELMAN_TANH", "ELMAN_RELU", "LSTM_EQUATIONS", "GRU_EQUATIONS", "elman_equations",
    "RNNCell", "LSTMCell", "GRUCell",
]
