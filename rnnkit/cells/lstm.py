"""LSTM, gate order i, f, g, o (torch.nn's), with the optional projection h = W_hr (o * tanh c)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ._base import CellBase, CellEquations, CellWeights, State


def lstm_recur(gx: Tensor, state: State, w: CellWeights) -> State:
    h, c = state
    gates = gx + F.linear(h, w.w_hh, w.b_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, 1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    c = f * c + i * g  # (B, H)
    h = o * c.tanh()  # (B, H)
    if w.w_hr is not None:
        h = F.linear(h, w.w_hr)  # (B, P)
    return h, c


LSTM_EQUATIONS = CellEquations(
    name="lstm",
    gates=("i", "f", "g", "o"),
    state_names=("h", "c"),
    recur=lstm_recur,
    math="\n".join([
        "i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)",
        "f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)",
        "g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)",
        "o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)",
        "c_t = f_t * c_{t-1} + i_t * g_t",
        "h_t = o_t * tanh(c_t)",
    ]),
)
PROJECTION_MATH = "h_t = W_hr (o_t * tanh(c_t))        (proj_size > 0)"


class LSTMCell(CellBase):
    r"""A long short-term memory cell, as ``torch.nn.LSTMCell``.

    .. math::
        i = \sigma(W_{ii} x + b_{ii} + W_{hi} h + b_{hi}),\;
        f = \sigma(W_{if} x + b_{if} + W_{hf} h + b_{hf}),\;
        g = \tanh(W_{ig} x + b_{ig} + W_{hg} h + b_{hg}),\;
        o = \sigma(W_{io} x + b_{io} + W_{ho} h + b_{ho}),\;
        c' = f c + i g,\; h' = o \tanh(c')

    ============  ===============================================
    input         (N, H_in) or (H_in)
    hx            (h_0, c_0), each (N, H) or (H); zeros when omitted
    returns       (h_1, c_1), each (N, H) or (H)
    ============  ===============================================

    ``weight_ih`` is (4H, H_in), ``weight_hh`` (4H, H): the rows of W_i*, W_f*, W_g*, W_o*, in that order.

    Equivalent to::

        i, f, g, o = (x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh).chunk(4, 1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()
    """

    _num_chunks = 4
    _state_arity = 2

    @property
    def equations(self) -> CellEquations:
        return LSTM_EQUATIONS
