"""Models built from rnnkit's layers, used by the command line."""
from .charlm import CharLM
from .seq2seq import Seq2Seq

__all__ = ["Seq2Seq", "CharLM"]
