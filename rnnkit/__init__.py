"""rnnkit: recurrent layers for PyTorch, torch.nn-exact and computed by rnnkit itself."""
from . import attention, models
from .attention import (AdditiveAttention, Attn, DotAttention, GeneralAttention, MultiheadAttention,
                        TransformerEncoder, TransformerEncoderLayer)
from .cells import GRUCell, LSTMCell, RNNCell
from .errors import UnsupportedBackendError
from .layers import GRU, LSTM, RNN, RNNBase
from .quantization import quantize_dynamic
from .recurrent import Recurrent

__version__ = "0.1.0"

__all__ = ["RNN", "LSTM", "GRU", "RNNBase", "RNNCell", "LSTMCell", "GRUCell", "Recurrent",
           "Attn", "AdditiveAttention", "DotAttention", "GeneralAttention", "MultiheadAttention",
           "TransformerEncoderLayer", "TransformerEncoder", "attention", "models",
           "UnsupportedBackendError", "quantize_dynamic", "__version__"]
