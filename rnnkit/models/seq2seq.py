r"""Sequence to sequence with attention: a recurrent encoder, an attentive recurrent decoder.

The encoder is any rnnkit recurrent layer (RNN, LSTM, GRU; several layers, bidirectional,
LSTM projections all allowed) run on packed sequences, so padding never reaches it.  The
decoder is one rnnkit.GRUCell or rnnkit.LSTMCell.  With the sequence attentions
("additive", "dot", "general") each step is Luong's global attention with input feeding:

.. math::
    \begin{array}{ll}
    h_t = \mathrm{cell}([E y_{t-1}; \tilde h_{t-1}],\ h_{t-1}) \\
    a_t = \mathrm{softmax}(\mathrm{score}(h_t, m_{1..S})),\quad c_t = \sum_j a_{tj} m_j \\
    \tilde h_t = \tanh(W_c [c_t; h_t]),\quad \mathrm{logits}_t = W_o \tilde h_t
    \end{array}

With "notes" the step is the notes' Attn (weights from the embedded input and the previous
hidden state over ``max_src_len`` positions), ``h_t = cell(relu(Attn(E y_{t-1}, h_{t-1}, m)), h_{t-1})``
and ``logits_t = W_o h_t``; with "none" there is no attention: ``h_t = cell(E y_{t-1}, h_{t-1})``.
The first decoder state is ``tanh(W_b [h_fwd; h_bwd])`` of the encoder's last layer
(the cell state of an LSTM decoder starts at zero).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..attention.masks import lengths_to_padding_mask
from ..attention.notes import Attn
from ..attention.sequence import SEQUENCE_ATTENTIONS, sequence_attention
from ..cells import GRUCell, LSTMCell

ATTENTIONS = ("additive", "dot", "general", "notes", "none")
CELLS = {"gru": GRUCell, "lstm": LSTMCell}


class EncoderMemory(NamedTuple):
    """What the decoder reads at every step; one row per sequence (or per beam)."""

    values: Tensor            # (B, S_mem, D_enc) encoder outputs, zero at padding
    keys: Optional[Tensor]    # the attention's projection of values, or None
    mask: Tensor              # (B, S_mem) bool, True = padding
    src_len: int              # S, the source length the returned weights cover (S <= S_mem)

    def repeat(self, k: int) -> "EncoderMemory":
        """Each row k times in a row (row b -> rows b*k .. b*k+k-1), for beam search."""
        rep = lambda x: None if x is None else x.repeat_interleave(k, dim=0)  # noqa: E731
        return EncoderMemory(rep(self.values), rep(self.keys), rep(self.mask), self.src_len)


class DecoderState(NamedTuple):
    cell: tuple               # (h,) for GRU, (h, c) for LSTM; each (B, H)
    feed: Optional[Tensor]    # (B, H) attentional vector of the previous step (sequence attentions)

    def select(self, index: Tensor) -> "DecoderState":
        """The rows ``index`` (B',): beam search's reordering."""
        return DecoderState(tuple(s.index_select(0, index) for s in self.cell),
                            None if self.feed is None else self.feed.index_select(0, index))


class Seq2Seq(nn.Module):
    r"""An attentive encoder-decoder over token ids.

    Arguments:
        encoder: an rnnkit recurrent layer (rnnkit.RNN, LSTM, GRU, rnnkit.recurrent.Recurrent
            or alike: ``input_size``, ``hidden_size``, ``num_layers``, ``bidirectional`` and
            PackedSequence input, returning ``(output, h_n)``); its ``input_size`` is the
            source embedding size.
        src_vocab_size, tgt_vocab_size: vocabulary sizes (ids 0 .. size-1).
        attention: "additive" (Bahdanau), "dot", "general" (Luong), "notes" (the notes'
            Attn) or "none".
        cell: the decoder cell, "gru" (rnnkit.GRUCell) or "lstm" (rnnkit.LSTMCell).
        hidden_size: the decoder's; default the encoder output size D * H ("dot" needs
            them equal).
        embedding_dim: the target embedding size; default the encoder's input_size.
        attention_size: the hidden size of the additive score; default hidden_size.
        max_src_len: the longest source "notes" attention can address (its value_size1);
            required for "notes", unused otherwise.
        pad_id, bos_id, eos_id: special ids; padding embeds to zeros.
        dropout: on the embeddings and before the output layer, in training.

    ==================  ====================================================
    src                 (B, S) token ids, padded with anything after each length
    src_lengths         (B,) ints in [1, S], or None (every row is S long)
    tgt_in              (B, T) decoder inputs: bos, y_1, ..., y_{T-1}
    forward -> logits   (B, T, tgt_vocab_size), step t predicting y_{t+1}
    attention           (B, T, S): each output step's weights over the source,
                        0 at padding and after a decoded sequence ended; None
                        with attention="none"
    greedy, beam_search (tokens (B, T_out), attention); tokens end with eos_id
                        (unless max_len cut them) and are padded with pad_id
    ==================  ====================================================
    """

    def __init__(self, encoder: nn.Module, src_vocab_size: int, tgt_vocab_size: int, *,
                 attention: str = "additive", cell: str = "gru", hidden_size: Optional[int] = None,
                 embedding_dim: Optional[int] = None, attention_size: Optional[int] = None,
                 max_src_len: Optional[int] = None, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module) or not all(
                hasattr(encoder, a) for a in ("input_size", "hidden_size", "num_layers", "bidirectional")):
            raise TypeError("encoder should be an rnnkit recurrent layer (rnnkit.RNN, LSTM, GRU or Recurrent), "
                            f"got {type(encoder).__name__}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention should be one of {', '.join(map(repr, ATTENTIONS))}, got {attention!r}")
        if cell not in CELLS:
            raise ValueError(f"cell should be one of {', '.join(map(repr, CELLS))}, got {cell!r}")
        for name, value in (("src_vocab_size", src_vocab_size), ("tgt_vocab_size", tgt_vocab_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} should be a positive int, got {value!r}")
        for name, value in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 <= value < tgt_vocab_size:
                raise ValueError(f"{name} should be a target id in [0, {tgt_vocab_size}), got {value}")
        if pad_id >= src_vocab_size:
            raise ValueError(f"pad_id ({pad_id}) pads the source too: it should be below src_vocab_size "
                             f"({src_vocab_size})")
        if not 0 <= dropout <= 1:
            raise ValueError(f"dropout should be in [0, 1], got {dropout}")
        if getattr(encoder, "return_states", False):
            raise ValueError("the encoder should return (output, h_n): build it with return_states=False")
        directions = 2 if encoder.bidirectional else 1
        state_size = getattr(encoder, "proj_size", 0) or encoder.hidden_size
        # rnnkit.Recurrent may merge the directions' outputs by sum/mean/mul instead of concatenating
        merged = getattr(encoder, "merge", "concat") != "concat"
        enc_size = state_size * (1 if merged else directions)
        hidden_size = enc_size if hidden_size is None else hidden_size
        embedding_dim = encoder.input_size if embedding_dim is None else embedding_dim
        if attention == "dot" and hidden_size != enc_size:
            raise ValueError(f"attention='dot' needs the decoder hidden_size ({hidden_size}) to equal the "
                             f"encoder output size ({enc_size}); leave hidden_size unset or use 'general'")
        if attention == "notes":
            if isinstance(max_src_len, bool) or not isinstance(max_src_len, int) or max_src_len <= 0:
                raise ValueError("attention='notes' addresses a fixed number of source positions: "
                                 f"give max_src_len as a positive int, got {max_src_len!r}")
        self.attention, self.cell_type = attention, cell
        self.enc_size, self.hidden_size, self.embedding_dim = enc_size, hidden_size, embedding_dim
        self.max_src_len = max_src_len if attention == "notes" else None
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.tgt_vocab_size = tgt_vocab_size

        self.encoder = encoder
        self.src_embed = nn.Embedding(src_vocab_size, encoder.input_size, padding_idx=pad_id)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, embedding_dim, padding_idx=pad_id)
        self.bridge = nn.Linear(directions * state_size, hidden_size)
        if attention in SEQUENCE_ATTENTIONS:
            self.attn = sequence_attention(attention, hidden_size, enc_size, attention_size)
            self.combine = nn.Linear(enc_size + hidden_size, hidden_size)
            cell_input = embedding_dim + hidden_size
        elif attention == "notes":
            self.attn = Attn(embedding_dim, hidden_size, max_src_len, enc_size, hidden_size)
            cell_input = hidden_size
        else:
            self.attn = None
            cell_input = embedding_dim
        self.cell = CELLS[cell](cell_input, hidden_size)
        self.out = nn.Linear(hidden_size, tgt_vocab_size)
        self.dropout = nn.Dropout(dropout)

    # ----- encoder ------------------------------------------------------------------------
    def encode(self, src: Tensor, src_lengths=None) -> tuple[EncoderMemory, DecoderState]:
        """Run the encoder; return the memory the decoder attends to and its first state."""
        lengths = self._check_src(src, src_lengths)
        batch, src_len = src.shape
        emb = self.dropout(self.src_embed(src))  # (B, S, E)
        packed = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
        out, h_n = self.encoder(packed)
        if isinstance(h_n, tuple):  # LSTM: (h_n, c_n)
            h_n = h_n[0]
        values, _ = pad_packed_sequence(out, batch_first=True, total_length=src_len)  # (B, S, D*H)
        if values.size(-1) != self.enc_size:
            raise RuntimeError(f"the encoder returned outputs of size {values.size(-1)}, expected "
                               f"{self.enc_size} (directions x hidden size, or hidden size if merged)")
        directions = 2 if self.encoder.bidirectional else 1
        last = h_n[-directions:].transpose(0, 1).reshape(batch, -1)  # (B, D*H): last layer, both directions
        h0 = torch.tanh(self.bridge(last))  # (B, H)
        mask = lengths_to_padding_mask(lengths, src_len).to(src.device)  # (B, S)
        keys = None
        if self.attention in SEQUENCE_ATTENTIONS:
            keys = self.attn.project_keys(values)
        elif self.attention == "notes":
            extra = self.max_src_len - src_len
            values = F.pad(values, (0, 0, 0, extra))  # (B, max_src_len, D*H)
            mask = F.pad(mask, (0, extra), value=True)
        cell = (h0,) if self.cell_type == "gru" else (h0, torch.zeros_like(h0))
        feed = h0.new_zeros(batch, self.hidden_size) if self.attention in SEQUENCE_ATTENTIONS else None
        return EncoderMemory(values, keys, mask, src_len), DecoderState(cell, feed)

    # ----- one decoder step -----------------------------------------------------------------
    def decode_step(self, tokens: Tensor, state: DecoderState,
                    memory: EncoderMemory) -> tuple[Tensor, DecoderState, Optional[Tensor]]:
        """tokens (B,) -> logits (B, V), the next state, attention weights (B, S) or None."""
        emb = self.dropout(self.tgt_embed(tokens))  # (B, E)
        h_prev = state.cell[0]
        weights = None
        if self.attention == "notes":
            attended, weights = self.attn(emb.unsqueeze(0), h_prev.unsqueeze(0), memory.values, memory.mask)
            x = F.relu(attended[0])  # (B, H)
            weights = weights[:, :memory.src_len]  # positions past S carry exactly zero weight
        elif self.attention == "none":
            x = emb
        else:
            x = torch.cat([emb, state.feed], dim=1)  # (B, E + H): input feeding
        cell = self.cell(x, state.cell[0] if self.cell_type == "gru" else state.cell)
        cell = (cell,) if self.cell_type == "gru" else tuple(cell)
        h = cell[0]  # (B, H)
        feed = None
        if self.attention in SEQUENCE_ATTENTIONS:
            context, weights = self.attn.attend(h, memory.keys, memory.values, memory.mask)  # (B, D), (B, S)
            feed = h = torch.tanh(self.combine(torch.cat([context, h], dim=1)))  # (B, H)
        logits = self.out(self.dropout(h))  # (B, V)
        return logits, DecoderState(cell, feed), weights

    # ----- training ---------------------------------------------------------------------------
    def forward(self, src: Tensor, src_lengths, tgt_in: Tensor, teacher_forcing_ratio: float = 1.0,
                return_attention: bool = False):
        """Logits (B, T, V) for decoder inputs ``tgt_in`` (B, T) that start with bos.

        With ``teacher_forcing_ratio`` < 1, each row's input at step t > 0 is, with that
        probability, ``tgt_in[:, t]``, and otherwise the model's own previous prediction.
        ``return_attention=True`` returns (logits, attention (B, T, S) or None).
        """
        if not isinstance(tgt_in, Tensor) or tgt_in.dim() != 2 or tgt_in.is_floating_point():
            raise ValueError(f"tgt_in should be a (B, T) tensor of token ids, got "
                             f"{getattr(tgt_in, 'shape', type(tgt_in).__name__)}")
        if tgt_in.size(0) != src.size(0) or tgt_in.size(1) == 0:
            raise ValueError(f"tgt_in should be (B, T) with B = {src.size(0)} and T >= 1, got {tuple(tgt_in.shape)}")
        if not 0.0 <= teacher_forcing_ratio <= 1.0:
            raise ValueError(f"teacher_forcing_ratio should be in [0, 1], got {teacher_forcing_ratio}")
        memory, state = self.encode(src, src_lengths)
        logits, weights = [], []
        tokens = tgt_in[:, 0]
        for t in range(tgt_in.size(1)):
            if t > 0:
                tokens = tgt_in[:, t]
                if teacher_forcing_ratio < 1.0:
                    own = logits[-1].argmax(dim=-1)
                    forced = torch.rand(tokens.shape, device=tokens.device) < teacher_forcing_ratio
                    tokens = torch.where(forced, tokens, own)
            step_logits, state, w = self.decode_step(tokens, state, memory)
            logits.append(step_logits)
            weights.append(w)
        logits = torch.stack(logits, dim=1)  # (B, T, V)
        if not return_attention:
            return logits
        return logits, (None if self.attn is None else torch.stack(weights, dim=1))  # (B, T, S)

    def loss(self, src: Tensor, src_lengths, tgt: Tensor, teacher_forcing_ratio: float = 1.0) -> Tensor:
        """Mean cross-entropy of ``tgt`` (B, T+1) = bos, y_1 .. y_n, eos, pad... over non-pad targets."""
        logits = self(src, src_lengths, tgt[:, :-1], teacher_forcing_ratio)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt[:, 1:].reshape(-1),
                               ignore_index=self.pad_id)

    # ----- decoding ---------------------------------------------------------------------------
    @torch.no_grad()
    def greedy(self, src: Tensor, src_lengths=None, max_len: int = 100) -> tuple[Tensor, Optional[Tensor]]:
        """Most likely token at every step: (tokens (B, T_out), attention (B, T_out, S) or None).

        Stops after ``max_len`` steps or when every row has produced eos.  Run in eval mode
        (``model.eval()``) when the model has dropout.
        """
        _check_max_len(max_len)
        memory, state = self.encode(src, src_lengths)
        batch = src.size(0)
        tokens = src.new_full((batch,), self.bos_id)
        finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
        out_tokens, out_weights = [], []
        for _ in range(max_len):
            logits, state, w = self.decode_step(tokens, state, memory)
            tokens = logits.argmax(dim=-1).masked_fill(finished, self.pad_id)  # (B,)
            out_tokens.append(tokens)
            if w is not None:
                out_weights.append(w.masked_fill(finished.unsqueeze(1), 0.0))
            finished = finished | (tokens == self.eos_id)
            if bool(finished.all()):
                break
        attention = torch.stack(out_weights, dim=1) if out_weights else None
        return torch.stack(out_tokens, dim=1), attention

    @torch.no_grad()
    def beam_search(self, src: Tensor, src_lengths=None, max_len: int = 100, beam_size: int = 4,
                    length_penalty: float = 0.0, return_scores: bool = False):
        r"""The best of ``beam_size`` hypotheses kept at every step, for each row.

        Hypotheses are ranked by their summed log-probability divided by
        :math:`\text{length}^{\alpha}` (``length_penalty`` = α; 0 ranks by log-probability,
        and then ``beam_size=1`` is greedy decoding).  A hypothesis that produced eos is
        kept, unchanged, while the others grow.  Returns (tokens (B, T_out), attention
        (B, T_out, S) or None), plus with ``return_scores=True`` the summed log-probability
        (B,) of each returned sequence (before any length penalty).
        """
        _check_max_len(max_len)
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"beam_size should be a positive int, got {beam_size!r}")
        k = beam_size
        memory, state = self.encode(src, src_lengths)
        batch = src.size(0)
        memory = memory.repeat(k)
        state = state.select(torch.arange(batch, device=src.device).repeat_interleave(k))
        neg_inf = float("-inf")
        scores = src.new_full((batch, k), neg_inf, dtype=torch.float)
        scores[:, 0] = 0.0  # all beams start as the same empty hypothesis: keep one
        tokens = src.new_full((batch * k,), self.bos_id)
        finished = torch.zeros(batch * k, dtype=torch.bool, device=src.device)
        lengths = torch.zeros(batch * k, device=src.device)
        history, weight_history = [], []
        base = (torch.arange(batch, device=src.device) * k).unsqueeze(1)  # (B, 1): first row of each group
        for _ in range(max_len):
            logits, state, w = self.decode_step(tokens, state, memory)
            logp = F.log_softmax(logits.float(), dim=-1)  # (B*k, V)
            # A finished hypothesis continues only with padding, at no cost.
            done_row = torch.full_like(logp[0], neg_inf)
            done_row[self.pad_id] = 0.0
            logp = torch.where(finished.unsqueeze(1), done_row, logp)
            candidates = (scores.view(-1, 1) + logp).view(batch, -1)  # (B, k*V)
            scores, flat = candidates.topk(k, dim=1)  # (B, k)
            origin = (base + torch.div(flat, logp.size(1), rounding_mode="floor")).view(-1)  # (B*k,)
            tokens = (flat % logp.size(1)).view(-1)
            state = state.select(origin)
            was_finished = finished.index_select(0, origin)
            lengths = lengths.index_select(0, origin) + (~was_finished).float()
            history = [h.index_select(0, origin) for h in history] + [tokens]
            if w is not None:
                w = w.index_select(0, origin).masked_fill(was_finished.unsqueeze(1), 0.0)
                weight_history = [h.index_select(0, origin) for h in weight_history] + [w]
            finished = was_finished | (tokens == self.eos_id)
            if bool(finished.all()):
                break
        ranked = scores / lengths.view(batch, k).clamp(min=1) ** length_penalty if length_penalty else scores
        best = (base.squeeze(1) + ranked.argmax(dim=1))  # (B,)
        out_tokens = torch.stack(history, dim=1).index_select(0, best)  # (B, T_out)
        attention = (torch.stack(weight_history, dim=1).index_select(0, best)  # (B, T_out, S)
                     if weight_history else None)
        if return_scores:
            return out_tokens, attention, scores.view(-1).index_select(0, best)
        return out_tokens, attention

    # ----- checks -------------------------------------------------------------------------------
    def _check_src(self, src: Tensor, src_lengths) -> Tensor:
        if not isinstance(src, Tensor) or src.dim() != 2 or src.is_floating_point() or src.dtype == torch.bool:
            raise ValueError(f"src should be a (B, S) tensor of token ids, got "
                             f"{getattr(src, 'dtype', type(src).__name__)} of shape {tuple(getattr(src, 'shape', ()))}")
        batch, src_len = src.shape
        if batch == 0 or src_len == 0:
            raise ValueError(f"src should have at least one row and one step, got shape {tuple(src.shape)}")
        if self.max_src_len is not None and src_len > self.max_src_len:
            raise ValueError(f"attention='notes' was built for sources of at most max_src_len="
                             f"{self.max_src_len} steps, got src of {src_len} steps")
        if src_lengths is None:
            return torch.full((batch,), src_len, dtype=torch.long)
        lengths = torch.as_tensor(src_lengths)
        if lengths.is_floating_point() or lengths.dtype == torch.bool:
            raise ValueError(f"src_lengths should hold integers, got {lengths.dtype}")
        lengths = lengths.to("cpu", torch.long)
        if lengths.shape != (batch,):
            raise ValueError(f"src_lengths should have shape ({batch},), one length per row, got {tuple(lengths.shape)}")
        if int(lengths.min()) < 1 or int(lengths.max()) > src_len:
            raise ValueError(f"src_lengths should lie in [1, {src_len}] (src is {src_len} steps long), "
                             f"got min {int(lengths.min())} and max {int(lengths.max())}")
        return lengths


def _check_max_len(max_len) -> None:
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len should be a positive int, got {max_len!r}")


__all__ = ["Seq2Seq", "EncoderMemory", "DecoderState", "ATTENTIONS", "CELLS"]
