"""Peephole LSTM (Gers & Schmidhuber 2000, "Recurrent nets that time and count"): the input and
forget gates see the previous cell state c_{t-1}, the output gate sees the new one c_t, each
through a diagonal (elementwise) peephole weight.  Gate order i, f, g, o (torch.nn's).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch.nn.functional as F
from torch import Tensor

from ._base import CellEquations, State
from .lstm import ForgetBiasCell


class PeepholeLSTMWeights(NamedTuple):
    """The parameters PEEPHOLE_LSTM reads."""

    w_ih: Tensor                  # (4H, I)
    w_hh: Tensor                  # (4H, H)
    b_ih: Optional[Tensor]        # (4H,)
    b_hh: Optional[Tensor]        # (4H,)
    w_ci: Tensor                  # (H,)  peephole c_{t-1} -> i
    w_cf: Tensor                  # (H,)  peephole c_{t-1} -> f
    w_co: Tensor                  # (H,)  peephole c_t -> o


def peephole_lstm_recur(gx: Tensor, state: State, w: PeepholeLSTMWeights) -> State:
    h, c = state
    gates = gx + F.linear(h, w.w_hh, w.b_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, 1)  # each (B, H)
    i = (i + w.w_ci * c).sigmoid()  # sees c_{t-1}
    f = (f + w.w_cf * c).sigmoid()  # sees c_{t-1}
    g = g.tanh()
    c = f * c + i * g  # (B, H): c_t
    o = (o + w.w_co * c).sigmoid()  # sees c_t
    h = o * c.tanh()  # (B, H)
    return h, c


PEEPHOLE_LSTM = CellEquations(
    name="peephole_lstm",
    weights_type=PeepholeLSTMWeights,
    gates=("i", "f", "g", "o"),
    state_names=("h", "c"),
    recur=peephole_lstm_recur,
    math="\n".join([
        "i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi + w_ci * c_{t-1})",
        "f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf + w_cf * c_{t-1})",
        "g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)",
        "c_t = f_t * c_{t-1} + i_t * g_t",
        "o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho + w_co * c_t)",
        "h_t = o_t * tanh(c_t)",
    ]),
)


class PeepholeLSTMCell(ForgetBiasCell):
    r"""An LSTM cell with peephole connections (Gers & Schmidhuber 2000).

    .. math::
        i = \sigma(W_{ii} x + b_{ii} + W_{hi} h + b_{hi} + w_{ci} \odot c),\;
        f = \sigma(W_{if} x + b_{if} + W_{hf} h + b_{hf} + w_{cf} \odot c),\;
        g = \tanh(W_{ig} x + b_{ig} + W_{hg} h + b_{hg}),\;
        c' = f c + i g,\;
        o = \sigma(W_{io} x + b_{io} + W_{ho} h + b_{ho} + w_{co} \odot c'),\;
        h' = o \tanh(c')

    The peepholes are diagonal: one weight per unit, elementwise on the cell state.  i and f
    see the previous cell state, o sees the new one.

    Gate order i, f, g, o (torch.nn's): ``weight_ih`` is (4H, H_in), ``weight_hh`` (4H, H),
    their rows W_i*, W_f*, W_g*, W_o*.

    ============  ========================================================
    input         (N, H_in) or (H_in)
    hx            (h_0, c_0), each (N, H) or (H); zeros when omitted
    returns       (h_1, c_1), each (N, H) or (H)
    weight_ih     (4H, H_in)
    weight_hh     (4H, H)
    bias_ih       (4H)          (bias=True)
    bias_hh       (4H)          (bias=True)
    weight_ci     (H)           peephole c_{t-1} -> i
    weight_cf     (H)           peephole c_{t-1} -> f
    weight_co     (H)           peephole c_t -> o
    ============  ========================================================

    All drawn from U(-1/sqrt(H), 1/sqrt(H)) in the order above, so one seed gives the same
    weight_ih, weight_hh, bias_ih, bias_hh as ``LSTMCell``; with the peepholes at zero the
    cell is exactly LSTMCell.  ``forget_bias`` (keyword-only): as ``LSTMCell``'s.

    Equivalent to, over a sequence x (T, N, H_in) from h = c = zeros (N, H)::

        for x_t in x:
            i, f, g, o = (x_t @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh).chunk(4, 1)
            i, f = (i + weight_ci * c).sigmoid(), (f + weight_cf * c).sigmoid()
            c = f * c + i * g.tanh()
            h = (o + weight_co * c).sigmoid() * c.tanh()
    """

    def _parameter_shapes(self, input_size: int, hidden_size: int, bias: bool) -> dict:
        H = hidden_size
        return {**super()._parameter_shapes(input_size, hidden_size, bias),
                "weight_ci": (H,), "weight_cf": (H,), "weight_co": (H,)}

    @property
    def equations(self) -> CellEquations:
        return PEEPHOLE_LSTM

    def cell_weights(self) -> PeepholeLSTMWeights:
        return PeepholeLSTMWeights(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                                   self.weight_ci, self.weight_cf, self.weight_co)
