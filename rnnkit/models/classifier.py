r"""N -> 1: a whole sequence in, one vector of scores out (the notes' many-to-one).

The recurrent layer reads the sequence; one summary of it goes to a linear read-out:

- ``pooling="last"``: the last layer's final state of each direction, side by side: the
  forward state after the sequence's last real step, the reverse state after its first;
- ``pooling="attention"``: a weighted sum of the outputs at every real step, the weights
  ``softmax_t(w^T tanh(W o_t))`` (padding gets exactly zero weight).

.. math::
    \mathrm{scores} = W_o\, \mathrm{dropout}(s),\quad
    s = [h^{fwd}_{T_b}; h^{rev}_1] \ \text{or}\ \textstyle\sum_t a_t o_t
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn.utils.rnn import pad_packed_sequence

from ..attention.masks import lengths_to_padding_mask, masked_softmax
from .sequence_input import check_layer, directions, last_states, output_size, packed_features, state_size

POOLINGS = ("last", "attention")


class SequenceClassifier(nn.Module):
    r"""Scores for a whole sequence, from any rnnkit recurrent layer.

    Arguments:
        layer: rnnkit.RNN, LSTM, GRU or rnnkit.Recurrent(cell, ...) (any number of layers,
            bidirectional, LSTM projections); its ``batch_first`` sets the input layout.
        num_classes: outputs of the read-out.  The outputs are scores for cross-entropy;
            with one output and a regression loss they are a predicted value (the
            forecasting task of ``rnnkit train`` uses it so).
        pooling: "last" or "attention" (see above).
        vocab_size: None to read features (``input_size`` per step); a number to read token
            ids, embedded to ``input_size`` first.
        attention_size: the hidden size of the attention score (default: the output size).
        dropout: before the read-out, in training.

    Shapes (B = batch, T = steps, F = ``layer.input_size``, D = 2 if bidirectional else 1,
    H = the layer's state size, ``proj_size`` or ``hidden_size``):

    ======================  =====================================================
    input                   (B, T, F) if batch_first else (T, B, F); with
                            vocab_size, ids (B, T) / (T, B); or a PackedSequence
    lengths                 (B,) ints in [1, T], or None (every sequence is T long)
    summary s               (B, D*H) ("last"; also with a merging Recurrent), or
                            (B, output size) ("attention": D*H, or H when merged)
    forward -> scores       (B, num_classes)
    return_weights=True     (scores, weights (B, T)): "attention" only; rows sum to
                            1 over the real steps, exactly 0 at padding
    ======================  =====================================================
    """

    def __init__(self, layer: nn.Module, num_classes: int, *, pooling: str = "last",
                 vocab_size: Optional[int] = None, attention_size: Optional[int] = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        check_layer(layer, "SequenceClassifier")
        _check_count("num_classes", num_classes)
        if pooling not in POOLINGS:
            raise ValueError(f"SequenceClassifier: pooling should be one of {', '.join(map(repr, POOLINGS))}, "
                             f"got {pooling!r}")
        if vocab_size is not None:
            _check_count("vocab_size", vocab_size)
        if not 0 <= dropout <= 1:
            raise ValueError(f"SequenceClassifier: dropout should be in [0, 1], got {dropout}")
        self.layer, self.pooling, self.num_classes = layer, pooling, num_classes
        self.embedding = None if vocab_size is None else nn.Embedding(vocab_size, layer.input_size)
        if pooling == "last":
            self.summary_size = directions(layer) * state_size(layer)
        else:
            self.summary_size = output_size(layer)
            attention_size = self.summary_size if attention_size is None else attention_size
            _check_count("attention_size", attention_size)
            self.score_hidden = nn.Linear(self.summary_size, attention_size)
            self.score = nn.Linear(attention_size, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(self.summary_size, num_classes)

    def forward(self, input, lengths=None, *, return_weights: bool = False):
        batch, features = packed_features(input, lengths, self.layer, self.embedding, "SequenceClassifier")
        outputs, h_n = self.layer(features)
        weights = None
        if self.pooling == "last":
            if return_weights:
                raise ValueError("SequenceClassifier: return_weights needs pooling='attention'")
            summary = last_states(h_n, self.layer)  # (B, D*H)
        else:
            padded, _ = pad_packed_sequence(outputs, batch_first=True, total_length=batch.steps)  # (B, T, D*H)
            mask = lengths_to_padding_mask(batch.lengths, batch.steps).to(padded.device)  # (B, T)
            scores = self.score(torch.tanh(self.score_hidden(padded))).squeeze(-1)  # (B, T)
            weights = masked_softmax(scores, mask)
            summary = torch.bmm(weights.unsqueeze(1), padded).squeeze(1)  # (B, D*H)
        scores = self.out(self.dropout(summary))  # (B, num_classes)
        return (scores, weights) if return_weights else scores


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"SequenceClassifier: {name} should be a positive int, got {value!r}")


__all__ = ["SequenceClassifier", "POOLINGS"]
