"""The "scan" backend: recurrences whose coefficients depend on the input alone, run as one parallel
scan over time in log space (Feng et al. 2024, "Were RNNs All We Needed?", section 3 and appendix).

It runs the min cells (rnnkit.cells.MinGRUCell, MinLSTMCell), whose step is the linear recurrence

    h_t = a_t * h_{t-1} + b_t,   0 < a_t < 1,  b_t > 0,  both functions of x_t only.

Unrolled, h_t = A_t h_0 + sum_{s<=t} (A_t / A_s) b_s with A_t = a_1 ... a_t, and in log space

    log A_t = cumsum_t(log a)                                              (T, B, H)
    h_t     = exp(log A_t) * h_0 + exp(log A_t + logcumsumexp_t(log b - log A))

all steps at once: no loop over time, and no product of many small numbers that could
underflow.  The cells' equations give (log a, log b) (``log_terms`` in rnnkit/cells/min_*.py);
h_0 is kept out of the logarithm (the paper takes log h_0), so any real initial state works.

The cumulative sums reach magnitudes of order T * |log a| and the scan's relative error grows
with them; for inputs of lower precision the scan accumulates in float64 (``accumulate_dtype``),
which keeps float32 results at float32 accuracy for T in the thousands and for large inputs.

Sequences arrive in packed layout (x (N, I), ``batch_sizes`` longest first, see
rnnkit.recurrent); they are gathered into a padded (T, B, .) block, each sequence starting at
row 0 (for the reverse direction, each sequence reversed within its own length), scanned, and
scattered back.  Padding lies after every sequence's end, so it never reaches a real step.
Autograd gives the backward.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..cells.min_gru import MIN_GRU, min_gru_log_terms
from ..cells.min_lstm import MIN_LSTM, min_lstm_log_terms
from ..errors import UnsupportedBackendError
from .base import Kernel, named_tensors

LOG_TERMS = {MIN_GRU: min_gru_log_terms, MIN_LSTM: min_lstm_log_terms}  # by identity of the equations


def log_space_scan(log_a: Tensor, log_b: Tensor, h0: Tensor) -> Tensor:
    """All h_t of h_t = a_t h_{t-1} + b_t (t = 1..T, along dim 0) from log a, log b (T, B, H) and h_0 (B, H)."""
    log_A = torch.cumsum(log_a, 0)  # (T, B, H): log(a_1 ... a_t)
    log_sum = log_A + torch.logcumsumexp(log_b - log_A, 0)  # (T, B, H): log sum_{s<=t} (A_t / A_s) b_s
    return torch.exp(log_sum) + torch.exp(log_A) * h0  # (T, B, H)


def _padded_rows(batch_sizes: Sequence[int], reverse: bool, device):
    """For the padded block (T, B): the packed row of each position (N where it is padding),
    and each sequence's length.  Position p of sequence b is its step p (reverse: step len_b - 1 - p)."""
    T, B = len(batch_sizes), batch_sizes[0]
    bs = torch.tensor(batch_sizes, dtype=torch.long, device=device)  # (T,)
    starts = torch.cumsum(bs, 0) - bs  # (T,): first packed row of each step
    seq = torch.arange(B, device=device)  # (B,)
    lengths = (bs.unsqueeze(1) > seq).sum(0)  # (B,)
    pos = torch.arange(T, device=device).unsqueeze(1)  # (T, 1)
    step = (lengths - 1 - pos) if reverse else pos.expand(T, B)  # (T, B): the time step read at each position
    valid = pos < lengths  # (T, B)
    rows = torch.where(valid, starts[step.clamp(min=0)] + seq, int(bs.sum()))  # (T, B)
    return rows, valid, lengths


class ParallelScanKernel(Kernel):
    """The min cells' recurrences as one parallel scan over time in log space, any device,
    floating dtypes; packed or padded input, either direction, any initial state.

    ``accumulate_dtype``: the dtype of the cumulative sums for inputs of lower precision
    (float64 by default; None scans in the input's own dtype, faster but with a relative
    error that grows like T * eps * |log a|).
    """

    name = "scan"

    def __init__(self, accumulate_dtype=torch.float64):
        self.accumulate_dtype = accumulate_dtype

    def check(self, eq, x, weights) -> None:
        if eq not in LOG_TERMS:
            raise UnsupportedBackendError(
                f"backend 'scan' runs only recurrences whose gates depend on the input alone "
                f"(min_gru, min_lstm); it has no scan for {eq.name!r}: use backend='reference' (or 'auto')")
        tensors = named_tensors(x, weights)
        for name, t in tensors:
            if not t.is_floating_point():
                raise UnsupportedBackendError(
                    f"backend 'scan' needs real floating-point tensors, got {name} of dtype {t.dtype}")
            if t.layout != torch.strided:
                raise UnsupportedBackendError(f"backend 'scan' needs dense tensors, got {name} with {t.layout}")

    def _scan_dtype(self, dtype):
        acc = self.accumulate_dtype
        if acc is None or torch.finfo(dtype).bits >= torch.finfo(acc).bits:
            return dtype
        return acc

    def layer(self, eq, x, batch_sizes, state0, weights, reverse):
        batch_sizes = [int(b) for b in batch_sizes]
        T, B = len(batch_sizes), batch_sizes[0]
        (h0,) = state0  # (B, H)
        log_a, log_b = LOG_TERMS[eq](eq.project(x, weights))  # each (N, H), packed
        H = log_a.size(-1)
        dtype = self._scan_dtype(log_a.dtype)
        if all(b == B for b in batch_sizes):  # padded input: a plain reshape (and a flip in reverse)
            log_a, log_b = log_a.view(T, B, H), log_b.view(T, B, H)  # (T, B, H)
            if reverse:
                log_a, log_b = log_a.flip(0), log_b.flip(0)
            h = log_space_scan(log_a.to(dtype), log_b.to(dtype), h0.to(dtype)).to(x.dtype)  # (T, B, H)
            final = h[-1]  # (B, H)
            out = (h.flip(0) if reverse else h).reshape(T * B, H)  # (N, H)
            return out, (final,)
        rows, valid, lengths = _padded_rows(batch_sizes, reverse, x.device)  # (T, B), (T, B), (B,)
        pad = log_a.new_zeros(1, H)  # finite filler for the padding rows, which no real step reads
        index = rows.reshape(-1)  # (T*B,)
        log_a = torch.cat((log_a, pad)).index_select(0, index).view(T, B, H)  # (T, B, H)
        log_b = torch.cat((log_b, pad)).index_select(0, index).view(T, B, H)  # (T, B, H)
        h = log_space_scan(log_a.to(dtype), log_b.to(dtype), h0.to(dtype)).to(x.dtype)  # (T, B, H)
        flat = h.reshape(T * B, H)  # (T*B, H): position p of sequence b at row p*B + b
        source = torch.empty(x.size(0), dtype=torch.long, device=x.device)  # (N,): padded row of each packed row
        source[rows[valid]] = torch.arange(T * B, device=x.device).view(T, B)[valid]
        out = flat.index_select(0, source)  # (N, H)
        final = h[lengths - 1, torch.arange(B, device=x.device)]  # (B, H): each sequence's last position
        return out, (final,)


__all__ = ["ParallelScanKernel", "log_space_scan", "LOG_TERMS"]
