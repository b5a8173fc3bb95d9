r"""1 -> N: one vector in, a sequence of tokens out (the notes' one-to-many).

A recurrent decoder writes the sequence one token at a time.  The conditioning vector ``c``
enters at every step, beside the embedding of the previous token, so any rnnkit layer works
as the decoder whatever its state looks like (one tensor, an LSTM's pair, a cell's own tuple)
and the vector never fades from a long output:

.. math::
    o_t, s_t = \mathrm{layer}([E y_{t-1}; c],\ s_{t-1}),\quad s_0 = 0,\quad
    \mathrm{logits}_t = W_o\, \mathrm{dropout}(o_t)

Training feeds the true previous tokens (teacher forcing, the whole sequence in one call of the
layer); decoding feeds its own: greedy, sampling at a temperature, or beam search.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_packed_sequence

from .sequence_input import check_layer, output_size, pack, rows_of_packed, with_data


class SequenceGenerator(nn.Module):
    r"""Token sequences from a vector, with any unidirectional rnnkit recurrent layer as the decoder.

    Arguments:
        layer: rnnkit.RNN, LSTM, GRU or rnnkit.Recurrent(cell, ...), unidirectional, built with
            ``input_size = embedding size + condition_size`` (each step reads both); its
            ``batch_first`` sets the layout of ``tokens`` and of the scores.
        condition_size: C, the size of the conditioning vector.
        vocab_size: V, output tokens 0 .. V-1 (``pad_id``, ``bos_id``, ``eos_id`` among them).
        dropout: on the embeddings and before the read-out, in training.

    Shapes (B = batch, T = steps, E = ``layer.input_size - condition_size``):

    =====================  =====================================================
    condition              (B, C) float
    tokens                 decoder inputs bos, y_1 .. y_{T-1}: ids (B, T) if
                           batch_first else (T, B), or a PackedSequence of ids
    lengths                (B,) ints in [1, T], or None (every sequence is T long)
    step input             (B, E + C): [E y_{t-1}; c]
    forward -> scores      (B, T, V) / (T, B, V), the scores at step t predicting
                           y_{t+1}; exactly 0 at padding; a PackedSequence of
                           (N, V) for a PackedSequence input
    greedy, sample         tokens (B, T_out), always batch first: each row ends with
                           eos_id (unless max_len cut it), then pad_id
    beam_search            tokens (B, T_out) as greedy; with return_scores=True
                           also the summed log-probability (B,) of each
    =====================  =====================================================
    """

    def __init__(self, layer: nn.Module, condition_size: int, vocab_size: int, *, pad_id: int = 0,
                 bos_id: int = 1, eos_id: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        check_layer(layer, "SequenceGenerator")
        if layer.bidirectional:
            raise ValueError("SequenceGenerator: a decoder writes left to right; build the layer with "
                             "bidirectional=False")
        for name, value in (("condition_size", condition_size), ("vocab_size", vocab_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"SequenceGenerator: {name} should be a positive int, got {value!r}")
        embedding_dim = layer.input_size - condition_size
        if embedding_dim <= 0:
            raise ValueError(f"SequenceGenerator: each step reads [token embedding; condition], so the layer's "
                             f"input_size ({layer.input_size}) should be the embedding size plus condition_size "
                             f"({condition_size}); build it with input_size = E + {condition_size}")
        for name, value in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 <= value < vocab_size:
                raise ValueError(f"SequenceGenerator: {name} should be a token id in [0, {vocab_size}), got {value}")
        if not 0 <= dropout <= 1:
            raise ValueError(f"SequenceGenerator: dropout should be in [0, 1], got {dropout}")
        self.layer, self.condition_size, self.vocab_size = layer, condition_size, vocab_size
        self.embedding_dim = embedding_dim
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(output_size(layer), vocab_size)

    # ----- training: the whole sequence in one call of the layer ------------------------------
    def forward(self, condition: Tensor, tokens, lengths=None):
        batch = pack(tokens, lengths, self.layer.batch_first, 0, "SequenceGenerator", "token ids")
        ids = batch.packed.data
        self._check_ids(ids)
        condition = self._check_condition(condition, batch.lengths.numel())
        rows = rows_of_packed(batch.packed)  # (N,): which sequence each packed row belongs to
        steps = torch.cat([self.dropout(self.embedding(ids)), condition.index_select(0, rows)], dim=1)
        outputs, _ = self.layer(with_data(batch.packed, steps))
        scores = with_data(outputs, self.out(self.dropout(outputs.data)))  # (N, V)
        if batch.was_packed:
            return scores
        padded, _ = pad_packed_sequence(scores, batch_first=self.layer.batch_first, total_length=batch.steps)
        return padded

    # ----- one step of decoding -------------------------------------------------------------
    def step(self, tokens: Tensor, condition: Tensor, state=None) -> tuple:
        """tokens (B,) ids, condition (B, C), the layer's state (None: zeros) -> (scores (B, V), state)."""
        x = torch.cat([self.dropout(self.embedding(tokens)), condition], dim=1).unsqueeze(
            1 if self.layer.batch_first else 0)  # one step: (B, 1, E + C) or (1, B, E + C)
        out, state = self.layer(x, state)
        return self.out(self.dropout(out.squeeze(1 if self.layer.batch_first else 0))), state

    @torch.no_grad()
    def greedy(self, condition: Tensor, max_len: int = 50) -> Tensor:
        """The most likely token at every step: tokens (B, T_out).  Run in eval mode with dropout."""
        return self._decode(condition, max_len, lambda scores: scores.argmax(dim=-1))

    @torch.no_grad()
    def sample(self, condition: Tensor, max_len: int = 50, temperature: float = 1.0,
               generator: Optional[torch.Generator] = None) -> Tensor:
        """Each token drawn from softmax(scores / temperature): tokens (B, T_out).  A low temperature
        comes close to greedy, a high one to uniform."""
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"SequenceGenerator: temperature should be a number above 0, got {temperature!r}")

        def draw(scores):
            probs = torch.softmax(scores.float() / temperature, dim=-1)
            return torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return self._decode(condition, max_len, draw)

    def _decode(self, condition: Tensor, max_len: int, choose) -> Tensor:
        _check_max_len(max_len)
        condition = self._check_condition(condition)
        batch = condition.size(0)
        tokens = torch.full((batch,), self.bos_id, dtype=torch.long, device=condition.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=condition.device)
        state, out = None, []
        for _ in range(max_len):
            scores, state = self.step(tokens, condition, state)
            tokens = choose(scores).masked_fill(finished, self.pad_id)  # (B,)
            out.append(tokens)
            finished = finished | (tokens == self.eos_id)
            if bool(finished.all()):
                break
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def beam_search(self, condition: Tensor, max_len: int = 50, beam_size: int = 4,
                    length_penalty: float = 0.0, return_scores: bool = False):
        r"""The best of ``beam_size`` hypotheses kept at every step, for each row: tokens (B, T_out).

        Hypotheses are ranked by summed log-probability over :math:`\text{length}^{\alpha}`
        (α = ``length_penalty``; 0 ranks by log-probability alone, and then ``beam_size=1`` is
        greedy).  A finished hypothesis stays as it is while the others grow.
        """
        _check_max_len(max_len)
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"SequenceGenerator: beam_size should be a positive int, got {beam_size!r}")
        condition = self._check_condition(condition)
        batch, k, device = condition.size(0), beam_size, condition.device
        condition = condition.repeat_interleave(k, dim=0)  # (B*k, C): row b -> rows b*k .. b*k+k-1
        scores = torch.full((batch, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # every beam starts as the same empty hypothesis: keep one of them
        tokens = torch.full((batch * k,), self.bos_id, dtype=torch.long, device=device)
        finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
        lengths = torch.zeros(batch * k, device=device)
        base = (torch.arange(batch, device=device) * k).unsqueeze(1)  # (B, 1): each group's first row
        state, history = None, []
        for _ in range(max_len):
            step_scores, state = self.step(tokens, condition, state)
            logp = F.log_softmax(step_scores.float(), dim=-1)  # (B*k, V)
            done = torch.full_like(logp[0], float("-inf"))
            done[self.pad_id] = 0.0  # a finished hypothesis continues with padding, at no cost
            logp = torch.where(finished.unsqueeze(1), done, logp)
            candidates = (scores.view(-1, 1) + logp).view(batch, -1)  # (B, k*V)
            scores, flat = candidates.topk(k, dim=1)
            origin = (base + torch.div(flat, self.vocab_size, rounding_mode="floor")).view(-1)  # (B*k,)
            tokens = (flat % self.vocab_size).view(-1)
            state = _select(state, origin)
            was_finished = finished.index_select(0, origin)
            lengths = lengths.index_select(0, origin) + (~was_finished).float()
            history = [h.index_select(0, origin) for h in history] + [tokens]
            finished = was_finished | (tokens == self.eos_id)
            if bool(finished.all()):
                break
        ranked = scores / lengths.view(batch, k).clamp(min=1) ** length_penalty if length_penalty else scores
        best = base.squeeze(1) + ranked.argmax(dim=1)  # (B,)
        out = torch.stack(history, dim=1).index_select(0, best)
        return (out, scores.view(-1).index_select(0, best)) if return_scores else out

    # ----- checks ---------------------------------------------------------------------------------
    def _check_condition(self, condition, batch: Optional[int] = None) -> Tensor:
        if not isinstance(condition, Tensor) or condition.dim() != 2 or not condition.is_floating_point() \
                or condition.size(1) != self.condition_size:
            raise ValueError(f"SequenceGenerator: condition should be a float (B, {self.condition_size}) tensor, "
                             f"got {_describe(condition)}")
        if batch is not None and condition.size(0) != batch:
            raise ValueError(f"SequenceGenerator: condition has {condition.size(0)} rows for {batch} sequences")
        if condition.size(0) == 0:
            raise ValueError("SequenceGenerator: condition needs at least one row")
        return condition

    def _check_ids(self, ids: Tensor) -> None:
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"SequenceGenerator: tokens should be integer ids, got {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"SequenceGenerator: token ids should lie in [0, {self.vocab_size}), got min "
                             f"{int(ids.min())} and max {int(ids.max())}")


def _select(state, index: Tensor):
    """The layer's state (num_layers, B, H), or a tuple of such, at batch rows ``index``."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)


def _check_max_len(max_len) -> None:
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"SequenceGenerator: max_len should be a positive int, got {max_len!r}")


def _describe(x) -> str:
    if isinstance(x, Tensor):
        return f"{x.dtype} of shape {tuple(x.shape)}"
    return type(x).__name__


__all__ = ["SequenceGenerator"]
