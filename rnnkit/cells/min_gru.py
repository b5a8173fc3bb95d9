"""minGRU (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs All We Needed?"), in its
log-space variant: the update gate and the candidate depend on x_t alone, so a whole sequence
runs as a parallel scan over time (rnnkit/kernels/parallel_scan.py, backend "scan") or, on the CPU,
as one input product and an elementwise loop (the kernel generated from these equations, what "auto"
runs there), while the cell's forward steps one token at a time (streaming) with the same results.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch.nn.functional as F
from torch import Tensor

from ._base import CellBase, CellEquations, State
from ._log_space import g, log_g


class MinGRUWeights(NamedTuple):
    """The parameters MIN_GRU reads: the input projection only (no recurrent weights)."""

    w_ih: Tensor                  # (2H, I): rows W_z, W_h
    b_ih: Optional[Tensor] = None  # (2H,):  b_z, b_h


def min_gru_recur(gx: Tensor, state: State, w: MinGRUWeights) -> State:
    (h,) = state
    k_z, k_h = gx.chunk(2, 1)  # each (B, H)
    z = k_z.sigmoid()  # z_t
    one_minus_z = (-k_z).sigmoid()  # 1 - z_t, without the cancellation where z_t rounds to 1
    h_tilde = g(k_h)  # \tilde h_t > 0
    return (one_minus_z * h + z * h_tilde,)  # (B, H)


def min_gru_log_terms(gx: Tensor):
    """(log a_t, log b_t) of h_t = a_t h_{t-1} + b_t: a_t = 1 - z_t, b_t = z_t * g(k_h); gx (..., 2H)."""
    k_z, k_h = gx.chunk(2, -1)  # each (..., H)
    log_one_minus_z = F.logsigmoid(-k_z)  # log(1 - z_t)
    log_z = F.logsigmoid(k_z)  # log z_t
    return log_one_minus_z, log_z + log_g(k_h)


MIN_GRU = CellEquations(
    name="min_gru",
    weights_type=MinGRUWeights,
    gates=("z", "h_tilde"),
    state_names=("h",),
    recur=min_gru_recur,
    math="\n".join([
        "z_t = sigmoid(W_z x_t + b_z)",
        "h~_t = g(W_h x_t + b_h)          g(v) = v + 0.5 if v >= 0 else sigmoid(v)",
        "h_t = (1 - z_t) * h_{t-1} + z_t * h~_t",
        "(scan: log(1 - z_t) = logsigmoid(-k_z), log z_t = logsigmoid(k_z), log h~_t = log g(k_h);",
        " h_t = A_t h_0 + exp(log A_t + logcumsumexp_s(log z_s + log h~_s - log A_s)), log A_t = cumsum log(1 - z))",
    ]),
)


class MinGRUCell(CellBase):
    r"""A minGRU cell (Feng et al. 2024), log-space variant: its gates depend on the input only.

    .. math::
        z = \sigma(W_z x + b_z),\; \tilde h = g(W_h x + b_h),\; h' = (1 - z) h + z \tilde h,
        \quad g(v) = v + 0.5 \text{ if } v \ge 0 \text{ else } \sigma(v)

    No recurrent weights: h enters only through the interpolation, so the recurrence is
    linear in h with coefficients known before the loop.  ``Recurrent(MinGRUCell, ...)``
    can therefore run a whole sequence as a parallel scan in log space (backend "scan",
    rnnkit/kernels/parallel_scan.py) or, on the CPU, as one product and an elementwise loop
    (the fused kernel "auto" picks there); this forward is the step-by-step (streaming) form.

    Gate order z, h~: ``weight_ih`` is (2H, H_in), rows W_z then W_h.

    ============  ========================================================
    input         (N, H_in) or (H_in)
    hx            (N, H) or (H); zeros when omitted
    returns h'    (N, H) or (H)
    weight_ih     (2H, H_in)    U(-1/sqrt(H), 1/sqrt(H))
    bias_ih       (2H)          U(-1/sqrt(H), 1/sqrt(H))   (bias=True)
    ============  ========================================================

    With h_0 >= 0 every h_t is positive (g > 0, 0 < z < 1), as the paper's log-space scan
    assumes; rnnkit's scan keeps h_0 out of the logarithm, so any real h_0 works.

    Equivalent to, over a sequence x (T, N, H_in) from h = zeros (N, H)::

        W_hr, W_hz, W_hn = weight_hh.chunk(3, 0); b_hr, b_hz, b_hn = bias_hh.chunk(3)
        for x_t in x:
            k_z, k_h = (x_t @ weight_ih.T + bias_ih).chunk(2, 1)
            z = k_z.sigmoid()
            h_tilde = torch.where(k_h >= 0, k_h + 0.5, k_h.sigmoid())
            h = (1 - z) * h + z * h_tilde
    """

    _num_chunks = 2
    _state_arity = 1

    def _parameter_shapes(self, input_size: int, hidden_size: int, bias: bool) -> dict:
        return {"weight_ih": (2 * hidden_size, input_size), "bias_ih": (2 * hidden_size,) if bias else None}

    @property
    def equations(self) -> CellEquations:
        return MIN_GRU

    def cell_weights(self) -> MinGRUWeights:
        return MinGRUWeights(self.weight_ih, self.bias_ih)
