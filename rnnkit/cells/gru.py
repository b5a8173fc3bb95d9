"""GRU, gate order r, z, n (torch.nn's): the reset gate acts on W_hn h + b_hn ("reset after")."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ._base import CellBase, CellEquations, CellWeights, State


def gru_recur(gx: Tensor, state: State, w: CellWeights) -> State:
    (h,) = state
    gh = F.linear(h, w.w_hh, w.b_hh)  # (B, 3H)
    x_r, x_z, x_n = gx.chunk(3, 1)
    h_r, h_z, h_n = gh.chunk(3, 1)
    r = (x_r + h_r).sigmoid()
    z = (x_z + h_z).sigmoid()
    n = (x_n + r * h_n).tanh()
    # (1 - z) * n + z * h, written as torch computes it so the rounding matches
    return ((h - n) * z + n,)


GRU_EQUATIONS = CellEquations(
    name="gru",
    gates=("r", "z", "n"),
    state_names=("h",),
    recur=gru_recur,
    math="\n".join([
        "r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)",
        "z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)",
        "n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))",
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

    ============  ==========================================
    input         (N, H_in) or (H_in)
    hx            (N, H) or (H); zeros when omitted
    returns h'    (N, H) or (H)
    ============  ==========================================

    ``weight_ih`` is (3H, H_in), ``weight_hh`` (3H, H): rows of W_r*, W_z*, W_n*, in that order.
    """

    _num_chunks = 3
    _state_arity = 1

    @property
    def equations(self) -> CellEquations:
        return GRU_EQUATIONS
