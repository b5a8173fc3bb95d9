"""Elman RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh or relu."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import CellBase, CellEquations, CellWeights, State


def _elman_gates(activation):
    def gates(gx: Tensor, state: State, w: CellWeights) -> tuple:
        return (activation(gx + F.linear(state[0], w.w_hh, w.b_hh)),)  # (B, H): the new h is the one "gate"

    return gates


_tanh_step, _relu_step = _elman_gates(torch.tanh), _elman_gates(torch.relu)

ELMAN_TANH = CellEquations(
    name="rnn_tanh",
    gates=("h",),
    state_names=("h",),
    recur=_tanh_step,  # the new state is the one gate itself
    gate_values=_tanh_step,
    math="h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)",
)
ELMAN_RELU = CellEquations(
    name="rnn_relu",
    gates=("h",),
    state_names=("h",),
    recur=_relu_step,
    gate_values=_relu_step,
    math="h_t = relu(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)",
)
ELMAN = {"tanh": ELMAN_TANH, "relu": ELMAN_RELU}


def elman_equations(nonlinearity) -> CellEquations:
    if nonlinearity not in ELMAN:
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    return ELMAN[nonlinearity]


class RNNCell(CellBase):
    r"""An Elman RNN cell with tanh or ReLU non-linearity, as ``torch.nn.RNNCell``.

    .. math::  h' = \tanh(W_{ih} x + b_{ih} + W_{hh} h + b_{hh})   (or relu)

    ============  ==========================================
    input         (N, H_in) or (H_in)
    hx            (N, H_out) or (H_out); zeros when omitted
    returns h'    (N, H_out) or (H_out)
    ============  ==========================================

    Parameters ``weight_ih`` (H_out, H_in), ``weight_hh`` (H_out, H_out), ``bias_ih``, ``bias_hh``
    (H_out), all drawn from U(-1/sqrt(H_out), 1/sqrt(H_out)) in torch.nn's order.

    Equivalent to ``torch.tanh(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh)``.

    Unlike torch.nn, an unknown ``nonlinearity`` is rejected when the cell is built
    (ValueError), not at its first call.
    """

    _num_chunks = 1
    _state_arity = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None):
        elman_equations(nonlinearity)
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    @property
    def equations(self) -> CellEquations:
        return elman_equations(self.nonlinearity)
