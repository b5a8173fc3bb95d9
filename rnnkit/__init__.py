"""rnnkit: recurrent layers for PyTorch, torch.nn-exact and computed by rnnkit itself."""
from .cells import GRUCell, LSTMCell, RNNCell
from .errors import UnsupportedBackendError
from .layers import GRU, LSTM, RNN, RNNBase

__version__ = "0.1.0"

__all__ = ["RNN", "LSTM", "GRU", "RNNBase", "RNNCell", "LSTMCell", "GRUCell",
           "UnsupportedBackendError", "__version__"]
