r"""N -> N, aligned: one label per step (the notes' many-to-many with equal lengths).

The recurrent layer reads the sequence; the same linear read-out turns its output at every
real step into that step's scores.  Bidirectional, each step's label sees the whole sequence.

.. math::
    \mathrm{scores}_t = W_o\, \mathrm{dropout}(o_t),\quad o_t = [h^{fwd}_t; h^{rev}_t]
"""
from __future__ import annotations

from typing import Optional

from torch import nn
from torch.nn.utils.rnn import pad_packed_sequence

from .sequence_input import check_layer, output_size, packed_features, with_data


class SequenceTagger(nn.Module):
    r"""Scores at every step, from any rnnkit recurrent layer.

    Arguments:
        layer: rnnkit.RNN, LSTM, GRU or rnnkit.Recurrent(cell, ...) (any number of layers,
            bidirectional, LSTM projections); its ``batch_first`` sets the layout in and out.
        num_tags: scores per step.
        vocab_size: None to read features (``input_size`` per step); a number to read token
            ids, embedded to ``input_size`` first.
        dropout: before the read-out, in training.

    Shapes (B = batch, T = steps, F = ``layer.input_size``, O = the layer's output size:
    D * H, or H when rnnkit.Recurrent merges the directions):

    ====================  =====================================================
    input                 (B, T, F) if batch_first else (T, B, F); with
                          vocab_size, ids (B, T) / (T, B); or a PackedSequence
    lengths               (B,) ints in [1, T], or None (every sequence is T long)
    layer output o        (B, T, O) / (T, B, O), as packed rows (N, O) inside
    forward -> scores     (B, T, num_tags) / (T, B, num_tags), exactly 0 at padding;
                          for a PackedSequence input a PackedSequence of the same
                          layout with data (N, num_tags)
    ====================  =====================================================
    """

    def __init__(self, layer: nn.Module, num_tags: int, *, vocab_size: Optional[int] = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        check_layer(layer, "SequenceTagger")
        for name, value in (("num_tags", num_tags), ("vocab_size", vocab_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"SequenceTagger: {name} should be a positive int, got {value!r}")
        if not 0 <= dropout <= 1:
            raise ValueError(f"SequenceTagger: dropout should be in [0, 1], got {dropout}")
        self.layer, self.num_tags = layer, num_tags
        self.embedding = None if vocab_size is None else nn.Embedding(vocab_size, layer.input_size)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(output_size(layer), num_tags)

    def forward(self, input, lengths=None):
        batch, features = packed_features(input, lengths, self.layer, self.embedding, "SequenceTagger")
        outputs, _ = self.layer(features)
        # The read-out runs on the packed rows only: no padded step is ever scored.
        scores = with_data(outputs, self.out(self.dropout(outputs.data)))  # (N, num_tags)
        if batch.was_packed:
            return scores
        padded, _ = pad_packed_sequence(scores, batch_first=self.layer.batch_first, total_length=batch.steps)
        return padded


__all__ = ["SequenceTagger"]
