"""LSTM, gate order i, f, g, o (torch.nn's), with the optional projection h = W_hr (o * tanh c).

Also the forget-gate bias option shared by every LSTM-family cell (``forget_bias``):
Gers et al. 2000 and Jozefowicz et al. 2015 start the forget gate open (bias 1) so that
the cell state is kept by default early in training.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import CellBase, CellEquations, CellWeights, State


def lstm_gates(gx: Tensor, state: State, w: CellWeights) -> tuple:
    gates = gx + F.linear(state[0], w.w_hh, w.b_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, 1)
    return i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()


def lstm_recur(gx: Tensor, state: State, w: CellWeights) -> State:
    i, f, g, o = lstm_gates(gx, state, w)
    c = f * state[1] + i * g  # (B, H)
    h = o * c.tanh()  # (B, H)
    if w.w_hr is not None:
        h = F.linear(h, w.w_hr)  # (B, P)
    return h, c


LSTM_EQUATIONS = CellEquations(
    name="lstm",
    gates=("i", "f", "g", "o"),
    state_names=("h", "c"),
    recur=lstm_recur,
    gate_values=lstm_gates,
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


def check_forget_bias(forget_bias, bias: bool):
    """Validate the ``forget_bias`` option of an LSTM-family cell; return it as a float (or None)."""
    if forget_bias is None:
        return None
    if isinstance(forget_bias, bool) or not isinstance(forget_bias, numbers.Real):
        raise TypeError(f"forget_bias should be a real number or None, got: {type(forget_bias).__name__}")
    if not math.isfinite(forget_bias):
        raise ValueError(f"forget_bias should be finite, got {forget_bias}")
    if not bias:
        raise ValueError("forget_bias needs the bias parameters; it cannot be set with bias=False")
    return float(forget_bias)


def init_forget_bias(cell) -> None:
    """Set the forget gate's rows (the second block of H) of bias_ih to ``cell.forget_bias``
    and of bias_hh to 0, so the gate's total bias is exactly forget_bias.  No-op when None."""
    if cell.forget_bias is None or cell.bias_ih is None:
        return
    H = cell.hidden_size
    with torch.no_grad():
        cell.bias_ih[H:2 * H].fill_(cell.forget_bias)  # rows of b_if
        cell.bias_hh[H:2 * H].zero_()  # rows of b_hf


class ForgetBiasCell(CellBase):
    """An LSTM-family cell (gates i, f, g, o; state (h, c)) with the keyword-only ``forget_bias``
    option: after the usual draws, the forget gate's bias rows are set by ``init_forget_bias``,
    here and on every ``reset_parameters()``."""

    _num_chunks = 4
    _state_arity = 2
    _repr_options = (("forget_bias", None),)
    forget_bias = None  # the class default: reset_parameters() runs inside CellBase.__init__ before it is set

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 forget_bias=None):
        forget_bias = check_forget_bias(forget_bias, bias)
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        if forget_bias is not None:
            self.forget_bias = forget_bias
            init_forget_bias(self)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        init_forget_bias(self)


class LSTMCell(ForgetBiasCell):
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

    ``forget_bias`` (keyword-only, default None: torch.nn's initialisation untouched):
    after the usual draws, the forget gate's bias rows are set to ``bias_ih[H:2H] =
    forget_bias`` and ``bias_hh[H:2H] = 0`` (again by ``reset_parameters()``); the repr
    shows it when set.  It needs ``bias=True``.

    Equivalent to::

        i, f, g, o = (x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh).chunk(4, 1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()
    """

    @property
    def equations(self) -> CellEquations:
        return LSTM_EQUATIONS
