"""rnnkit: recurrent layers for PyTorch, torch.nn-exact and computed by rnnkit itself."""
from .cells import GRUCell, LSTMCell, RNNCell
from .errors import UnsupportedBackendError
from .layers import GRU, LSTM, RNN, RNNBase
from .recurrent import Recurrent

__version__ = "0.1.0"

__all__ = ["RNN", "LSTM", "GRU", "RNNBase", "RNNCell", "LSTMCell", "GRUCell", "Recurrent",
           "UnsupportedBackendError", "__version__"]
