"""GRU, gate order r, z, n (torch.nn's).

Two variants of the candidate n, as Keras names them:

- ``reset_after=True`` (torch.nn's, cuDNN's, the default): the reset gate acts on the
  recurrent product, n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).
- ``reset_after=False`` (Cho et al. 2014 v3, Keras' other variant): the reset gate acts
  on the state before the product, n = tanh(W_in x + b_in + W_hn (r * h) + b_hn).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ._base import CellBase, CellEquations, CellWeights, State


def gru_gates(gx: Tensor, state: State, w: CellWeights) -> tuple:
    (h,) = state
    gh = F.linear(h, w.w_hh, w.b_hh)  # (B, 3H)
    x_r, x_z, x_n = gx.chunk(3, 1)
    h_r, h_z, h_n = gh.chunk(3, 1)
    r = (x_r + h_r).sigmoid()
    z = (x_z + h_z).sigmoid()
    n = (x_n + r * h_n).tanh()
    return r, z, n


def gru_recur(gx: Tensor, state: State, w: CellWeights) -> State:
    _, z, n = gru_gates(gx, state, w)
    # (1 - z) * n + z * h, written as torch computes it so the rounding matches
    return ((state[0] - n) * z + n,)


def gru_reset_before_gates(gx: Tensor, state: State, w: CellWeights) -> tuple:
    (h,) = state
    H = w.w_hh.size(1)
    w_hrz, w_hn = w.w_hh.split((2 * H, H))  # (2H, H) rows of W_hr, W_hz; (H, H) W_hn
    b_hrz, b_hn = (None, None) if w.b_hh is None else w.b_hh.split((2 * H, H))  # (2H,), (H,)
    gh = F.linear(h, w_hrz, b_hrz)  # (B, 2H)
    x_r, x_z, x_n = gx.chunk(3, 1)
    h_r, h_z = gh.chunk(2, 1)
    r = (x_r + h_r).sigmoid()
    z = (x_z + h_z).sigmoid()
    n = (x_n + F.linear(r * h, w_hn, b_hn)).tanh()  # (B, H)
    return r, z, n


def gru_reset_before_recur(gx: Tensor, state: State, w: CellWeights) -> State:
    _, z, n = gru_reset_before_gates(gx, state, w)
    return ((state[0] - n) * z + n,)


GRU_EQUATIONS = CellEquations(
    name="gru",
    gates=("r", "z", "n"),
    state_names=("h",),
    recur=gru_recur,
    gate_values=gru_gates,
    math="\n".join([
        "r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)",
        "z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)",
        "n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))",
        "h_t = (1 - z_t) * n_t + z_t * h_{t-1}",
    ]),
)
GRU_RESET_BEFORE = CellEquations(
    name="gru_reset_before",
    gates=("r", "z", "n"),
    state_names=("h",),
    recur=gru_reset_before_recur,
    gate_values=gru_reset_before_gates,
    math="\n".join([
        "r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)",
        "z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)",
        "n_t = tanh(W_in x_t + b_in + W_hn (r_t * h_{t-1}) + b_hn)",
        "h_t = (1 - z_t) * n_t + z_t * h_{t-1}",
    ]),
)


class GRUCell(CellBase):
    r"""A gated recurrent unit cell, as ``torch.nn.GRUCell``.

    .. math::
        r = \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}),\;
        z = \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}),\;
        n = \tanh(W_{in} x + b_{in} + r (W_{hn} h + b_{hn})),\;
        h' = (1 - z) n + z h

    With ``reset_after=False`` (keyword-only; Keras' ``reset_after=False``, Cho et al.
    2014 v3) the reset gate is applied before the recurrent product instead:

    .. math::  n = \tanh(W_{in} x + b_{in} + W_{hn} (r h) + b_{hn})

    ============  ==========================================
    input         (N, H_in) or (H_in)
    hx            (N, H) or (H); zeros when omitted
    returns h'    (N, H) or (H)
    ============  ==========================================

    ``weight_ih`` is (3H, H_in), ``weight_hh`` (3H, H): rows of W_r*, W_z*, W_n*, in that order.
    Both variants have the same parameters, drawn as torch.nn draws them; the repr shows
    ``reset_after`` only when it is False.

    Equivalent to (``reset_after=False``), over a sequence x (T, N, H_in) from h = zeros (N, H)::

        W_hr, W_hz, W_hn = weight_hh.chunk(3, 0); b_hr, b_hz, b_hn = bias_hh.chunk(3)
        for x_t in x:
            x_r, x_z, x_n = (x_t @ weight_ih.T + bias_ih).chunk(3, 1)
            r = (x_r + h @ W_hr.T + b_hr).sigmoid()
            z = (x_z + h @ W_hz.T + b_hz).sigmoid()
            n = (x_n + (r * h) @ W_hn.T + b_hn).tanh()
            h = (1 - z) * n + z * h
    """

    _num_chunks = 3
    _state_arity = 1
    _repr_options = (("reset_after", True),)
    reset_after = True  # the class default, so cells pickled before the option existed still load

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 reset_after: bool = True):
        if not isinstance(reset_after, bool):
            raise TypeError(f"reset_after should be of type bool, got: {type(reset_after).__name__}")
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.reset_after = reset_after

    @property
    def equations(self) -> CellEquations:
        return GRU_EQUATIONS if self.reset_after else GRU_RESET_BEFORE
