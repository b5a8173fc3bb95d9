"""minLSTM (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs All We Needed?"), in its
log-space variant: forget and input gates depend on x_t alone and are normalised to sum to one, so
a whole sequence runs as a parallel scan over time (rnnkit/kernels/parallel_scan.py, backend
"scan") or, on the CPU, as one input product and an elementwise loop (the kernel generated from these
equations, what "auto" runs there), while the cell's forward steps one token at a time (streaming) with the
same results.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch.nn.functional as F
from torch import Tensor

from ._base import CellBase, CellEquations, State
from ._log_space import g, log_g


class MinLSTMWeights(NamedTuple):
    """The parameters MIN_LSTM reads: the input projection only (no recurrent weights)."""

    w_ih: Tensor                  # (3H, I): rows W_f, W_i, W_h
    b_ih: Optional[Tensor] = None  # (3H,):  b_f, b_i, b_h


def min_lstm_recur(gx: Tensor, state: State, w: MinLSTMWeights) -> State:
    (h,) = state
    k_f, k_i, k_h = gx.chunk(3, 1)  # each (B, H)
    log_f = F.logsigmoid(k_f)  # log f_t, f_t = sigmoid(k_f)
    log_i = F.logsigmoid(k_i)  # log i_t, i_t = sigmoid(k_i)
    # f'_t = f_t / (f_t + i_t) and i'_t = i_t / (f_t + i_t), from the logs: no 0/0 when both underflow
    f_prime = (log_f - log_i).sigmoid()
    i_prime = (log_i - log_f).sigmoid()
    h_tilde = g(k_h)  # \tilde h_t > 0
    return (f_prime * h + i_prime * h_tilde,)  # (B, H)


def min_lstm_log_terms(gx: Tensor):
    """(log a_t, log b_t) of h_t = a_t h_{t-1} + b_t: a_t = f'_t, b_t = i'_t * g(k_h); gx (..., 3H)."""
    k_f, k_i, k_h = gx.chunk(3, -1)  # each (..., H)
    diff = F.logsigmoid(k_i) - F.logsigmoid(k_f)  # log i_t - log f_t
    log_f_prime = F.logsigmoid(-diff)  # log f'_t = -log(1 + i_t / f_t)
    log_i_prime = F.logsigmoid(diff)  # log i'_t = -log(1 + f_t / i_t)
    return log_f_prime, log_i_prime + log_g(k_h)


MIN_LSTM = CellEquations(
    name="min_lstm",
    weights_type=MinLSTMWeights,
    gates=("f", "i", "h_tilde"),
    state_names=("h",),
    recur=min_lstm_recur,
    math="\n".join([
        "f_t = sigmoid(W_f x_t + b_f)",
        "i_t = sigmoid(W_i x_t + b_i)",
        "h~_t = g(W_h x_t + b_h)          g(v) = v + 0.5 if v >= 0 else sigmoid(v)",
        "f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)",
        "h_t = f'_t * h_{t-1} + i'_t * h~_t",
        "(scan: d_t = log i_t - log f_t, log f'_t = logsigmoid(-d_t), log i'_t = logsigmoid(d_t);",
        " h_t = A_t h_0 + exp(log A_t + logcumsumexp_s(log i'_s + log h~_s - log A_s)), log A_t = cumsum log f')",
    ]),
)


class MinLSTMCell(CellBase):
    r"""A minLSTM cell (Feng et al. 2024), log-space variant: its gates depend on the input only.

    .. math::
        f = \sigma(W_f x + b_f),\; i = \sigma(W_i x + b_i),\; \tilde h = g(W_h x + b_h),\;
        f' = \frac{f}{f + i},\; i' = \frac{i}{f + i},\; h' = f' h + i' \tilde h,
        \quad g(v) = v + 0.5 \text{ if } v \ge 0 \text{ else } \sigma(v)

    There is no cell state c and no recurrent weight: the state is h alone and the
    recurrence is linear in h with coefficients known before the loop.
    ``Recurrent(MinLSTMCell, ...)`` can therefore run a whole sequence as a parallel scan in
    log space (backend "scan", rnnkit/kernels/parallel_scan.py) or, on the CPU, as one product
    and an elementwise loop (the fused kernel "auto" picks there); this forward is the
    step-by-step (streaming) form.  f' and i' are computed from log f and log i
    (f' = sigmoid(log f - log i)), which equals f / (f + i) and stays defined when both
    gates underflow.

    Gate order f, i, h~: ``weight_ih`` is (3H, H_in), rows W_f, W_i, W_h.

    ============  ========================================================
    input         (N, H_in) or (H_in)
    hx            (N, H) or (H); zeros when omitted
    returns h'    (N, H) or (H)
    weight_ih     (3H, H_in)    U(-1/sqrt(H), 1/sqrt(H))
    bias_ih       (3H)          U(-1/sqrt(H), 1/sqrt(H))   (bias=True)
    ============  ========================================================

    Equivalent to, over a sequence x (T, N, H_in) from h = zeros (N, H)::

        for x_t in x:
            k_f, k_i, k_h = (x_t @ weight_ih.T + bias_ih).chunk(3, 1)
            f, i = k_f.sigmoid(), k_i.sigmoid()
            h_tilde = torch.where(k_h >= 0, k_h + 0.5, k_h.sigmoid())
            h = f / (f + i) * h + i / (f + i) * h_tilde
    """

    _num_chunks = 3
    _state_arity = 1

    def _parameter_shapes(self, input_size: int, hidden_size: int, bias: bool) -> dict:
        return {"weight_ih": (3 * hidden_size, input_size), "bias_ih": (3 * hidden_size,) if bias else None}

    @property
    def equations(self) -> CellEquations:
        return MIN_LSTM

    def cell_weights(self) -> MinLSTMWeights:
        return MinLSTMWeights(self.weight_ih, self.bias_ih)
