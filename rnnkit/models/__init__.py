"""Models built from rnnkit's layers, one per structure of the notes, and a character LM.

=============  ==========================  ======================================
structure      model                       what goes in and comes out
=============  ==========================  ======================================
N -> 1         SequenceClassifier          a sequence -> one vector of scores
N -> N         SequenceTagger              a sequence -> scores at every step
1 -> N         SequenceGenerator           a vector -> a sequence of tokens
N -> M         Seq2Seq                     a sequence -> another, of its own length
=============  ==========================  ======================================
"""
from .charlm import CharLM
from .classifier import SequenceClassifier
from .generator import SequenceGenerator
from .seq2seq import Seq2Seq
from .tagger import SequenceTagger

__all__ = ["SequenceClassifier", "SequenceTagger", "SequenceGenerator", "Seq2Seq", "CharLM"]
