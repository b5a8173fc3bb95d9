"""Attention: the notes' Attn, attention over a padded sequence memory (Bahdanau, Luong),
torch.nn-compatible multi-head attention and the Transformer encoder."""
from .masks import (AttentionInputError, generate_square_subsequent_mask, lengths_to_padding_mask,
                    masked_softmax)
from .multihead import MultiheadAttention
from .notes import Attn
from .sequence import (SEQUENCE_ATTENTIONS, AdditiveAttention, DotAttention, GeneralAttention,
                       SequenceAttention, sequence_attention)
from .transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "Attn",
    "SequenceAttention", "AdditiveAttention", "DotAttention", "GeneralAttention",
    "SEQUENCE_ATTENTIONS", "sequence_attention",
    "MultiheadAttention", "TransformerEncoderLayer", "TransformerEncoder",
    "AttentionInputError", "generate_square_subsequent_mask", "lengths_to_padding_mask",
    "masked_softmax",
]
