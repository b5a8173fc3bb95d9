r"""Attention of a recurrent decoder over a padded sequence memory: Bahdanau and Luong scores.

Every module here scores T queries against the S positions of a memory, masks the padded
positions, and returns the weighted sum of the values (by default the memory itself):

.. math::
    e_{b,t,j} = \mathrm{score}(q_{b,t}, m_{b,j}),\quad
    a_{b,t} = \mathrm{softmax}_j(e_{b,t,j}),\ a_{b,t,j} = 0 \text{ where } j \text{ is padding},\quad
    c_{b,t} = \sum_j a_{b,t,j}\, v_{b,j}

==================  =====================  ==================================
score               formula                parameters
==================  =====================  ==================================
additive (Bahdanau) w^T tanh(W_q q + W_k m)  query_proj, key_proj, v
dot (Luong)         q . m                  none (query_size must equal key_size)
general (Luong)     q . (W m)              key_proj
==================  =====================  ==================================

Shapes (B = batch, S = memory length, T = number of queries):

==================  =======================================================
query               (B, query_size), or (B, T, query_size) for T queries at once
memory              (B, S, key_size)
key_padding_mask    optional (B, S) bool, True = padding (torch.nn's convention);
                    see rnnkit.attention.lengths_to_padding_mask
values              optional (B, S, value_size); default: the memory
returns context     (B, value_size), or (B, T, value_size)
returns weights     (B, S), or (B, T, S): rows sum to 1, exactly 0 at padding
==================  =======================================================

A decoder that attends at every step computes the memory's projection once with
``keys = attn.project_keys(memory)`` and then calls ``attn.attend(query, keys, memory, mask)``;
``attn(query, memory, mask)`` does both.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .masks import masked_softmax


class SequenceAttention(nn.Module):
    """The shared part: shape checks, masking, the weighted sum.  Subclasses give the score."""

    query_size: int
    key_size: int

    def project_keys(self, memory: Tensor) -> Tensor:
        """What the score needs of the memory (B, S, key_size), computed once per sequence."""
        return memory

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        """query (B, T, query_size), keys from project_keys -> scores (B, T, S)."""
        raise NotImplementedError

    def forward(self, query: Tensor, memory: Tensor, key_padding_mask: Optional[Tensor] = None,
                values: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        self._check_memory(memory)
        return self.attend(query, self.project_keys(memory), memory if values is None else values,
                           key_padding_mask)

    def attend(self, query: Tensor, keys: Tensor, values: Tensor,
               key_padding_mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Attention with the keys already projected (see project_keys)."""
        name = type(self).__name__
        if query.dim() not in (2, 3) or query.size(-1) != self.query_size:
            raise ValueError(f"{name}: expected query of shape (B, {self.query_size}) or "
                             f"(B, T, {self.query_size}), got {tuple(query.shape)}")
        batch, src_len = keys.size(0), keys.size(1)
        if query.size(0) != batch:
            raise ValueError(f"{name}: query has batch size {query.size(0)} but the memory has {batch}")
        if values.dim() != 3 or values.shape[:2] != keys.shape[:2]:
            raise ValueError(f"{name}: expected values of shape ({batch}, {src_len}, value_size) "
                             f"(B, S, value_size), got {tuple(values.shape)}")
        if key_padding_mask is not None:
            if not isinstance(key_padding_mask, Tensor) or key_padding_mask.dtype != torch.bool:
                raise TypeError(f"{name}: key_padding_mask should be a bool Tensor (True = padding), "
                                f"got {getattr(key_padding_mask, 'dtype', type(key_padding_mask).__name__)}")
            if tuple(key_padding_mask.shape) != (batch, src_len):
                raise ValueError(f"{name}: expected key_padding_mask of shape {(batch, src_len)} (B, S), "
                                 f"got {tuple(key_padding_mask.shape)}")
            key_padding_mask = key_padding_mask.unsqueeze(1)  # (B, 1, S)
        single = query.dim() == 2
        if single:
            query = query.unsqueeze(1)  # (B, 1, query_size)
        weights = masked_softmax(self.score(query, keys), key_padding_mask)  # (B, T, S)
        context = torch.bmm(weights, values)  # (B, T, value_size)
        if single:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights

    def _check_memory(self, memory: Tensor) -> None:
        if memory.dim() != 3 or memory.size(-1) != self.key_size:
            raise ValueError(f"{type(self).__name__}: expected memory of shape (B, S, {self.key_size}), "
                             f"got {tuple(memory.shape)}")


def _check_size(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} should be a positive int, got {value!r}")


class AdditiveAttention(SequenceAttention):
    r"""Bahdanau's additive score :math:`e_{tj} = w^T \tanh(W_q q_t + W_k m_j + b)`.

    Parameters: ``query_proj`` (hidden_size x query_size, no bias), ``key_proj``
    (hidden_size x key_size, with the bias b when ``bias``), ``v`` (1 x hidden_size).
    ``project_keys`` returns W_k m + b (B, S, hidden_size).
    """

    def __init__(self, query_size: int, key_size: int, hidden_size: Optional[int] = None,
                 bias: bool = True) -> None:
        super().__init__()
        hidden_size = query_size if hidden_size is None else hidden_size
        for name, value in (("query_size", query_size), ("key_size", key_size), ("hidden_size", hidden_size)):
            _check_size(name, value)
        self.query_size, self.key_size, self.hidden_size = query_size, key_size, hidden_size
        self.query_proj = nn.Linear(query_size, hidden_size, bias=False)
        self.key_proj = nn.Linear(key_size, hidden_size, bias=bias)
        self.v = nn.Linear(hidden_size, 1, bias=False)

    def project_keys(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)  # (B, S, hidden)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        q = self.query_proj(query)  # (B, T, hidden)
        return self.v(torch.tanh(q.unsqueeze(2) + keys.unsqueeze(1))).squeeze(-1)  # (B, T, S)


class DotAttention(SequenceAttention):
    r"""Luong's dot score :math:`e_{tj} = q_t \cdot m_j` (divided by :math:`\sqrt{d}` when ``scaled``).

    No parameters; the query and the memory must have the same feature size.
    """

    def __init__(self, query_size: int, key_size: Optional[int] = None, scaled: bool = False) -> None:
        super().__init__()
        key_size = query_size if key_size is None else key_size
        _check_size("query_size", query_size)
        if key_size != query_size:
            raise ValueError(f"DotAttention needs query_size == key_size, got {query_size} and {key_size}; "
                             "use GeneralAttention (a learned W between them) for different sizes")
        self.query_size = self.key_size = query_size
        self.scaled = scaled

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        scores = torch.bmm(query, keys.transpose(1, 2))  # (B, T, S)
        return scores / math.sqrt(self.query_size) if self.scaled else scores


class GeneralAttention(SequenceAttention):
    r"""Luong's general score :math:`e_{tj} = q_t \cdot (W m_j)`.

    Parameter: ``key_proj`` (query_size x key_size, bias only when ``bias``);
    ``project_keys`` returns W m (B, S, query_size).
    """

    def __init__(self, query_size: int, key_size: int, bias: bool = False) -> None:
        super().__init__()
        _check_size("query_size", query_size)
        _check_size("key_size", key_size)
        self.query_size, self.key_size = query_size, key_size
        self.key_proj = nn.Linear(key_size, query_size, bias=bias)

    def project_keys(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)  # (B, S, query_size)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(query, keys.transpose(1, 2))  # (B, T, S)


SEQUENCE_ATTENTIONS = {"additive": AdditiveAttention, "dot": DotAttention, "general": GeneralAttention}


def sequence_attention(kind: str, query_size: int, key_size: int,
                       hidden_size: Optional[int] = None) -> SequenceAttention:
    """Build one of SEQUENCE_ATTENTIONS by name ("additive", "dot", "general")."""
    if kind not in SEQUENCE_ATTENTIONS:
        raise ValueError(f"attention should be one of {', '.join(map(repr, SEQUENCE_ATTENTIONS))}, got {kind!r}")
    if kind == "additive":
        return AdditiveAttention(query_size, key_size, hidden_size)
    return SEQUENCE_ATTENTIONS[kind](query_size, key_size)


__all__ = ["SequenceAttention", "AdditiveAttention", "DotAttention", "GeneralAttention",
           "SEQUENCE_ATTENTIONS", "sequence_attention"]
