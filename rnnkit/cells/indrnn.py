"""IndRNN (Li, Li, Cook, Zhu & Gao 2018, "Independently Recurrent Neural Network"): each unit has one
recurrent weight, h_t = act(W x_t + u * h_{t-1} + b), act = relu (the paper's) or tanh.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ._base import CellBase, CellEquations, State


class IndRNNWeights(NamedTuple):
    """The parameters the IndRNN equations read."""

    w_ih: Tensor                  # (H, I)
    w_hh: Tensor                  # (H,)  the recurrent weights u (clipped, when the cell clips)
    b_ih: Optional[Tensor] = None  # (H,)


def _indrnn_recur(activation):
    def recur(gx: Tensor, state: State, w: IndRNNWeights) -> State:
        (h,) = state
        return (activation(gx + w.w_hh * h),)  # (B, H): elementwise recurrence, no matrix product

    return recur


INDRNN_RELU = CellEquations(
    name="indrnn_relu",
    weights_type=IndRNNWeights,
    gates=("h",),
    state_names=("h",),
    recur=_indrnn_recur(torch.relu),
    math="h_t = relu(W_ih x_t + b_ih + u * h_{t-1})      (u: one recurrent weight per unit)",
)
INDRNN_TANH = CellEquations(
    name="indrnn_tanh",
    weights_type=IndRNNWeights,
    gates=("h",),
    state_names=("h",),
    recur=_indrnn_recur(torch.tanh),
    math="h_t = tanh(W_ih x_t + b_ih + u * h_{t-1})      (u: one recurrent weight per unit)",
)
INDRNN = {"relu": INDRNN_RELU, "tanh": INDRNN_TANH}


def indrnn_equations(nonlinearity) -> CellEquations:
    if nonlinearity not in INDRNN:
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'relu' or 'tanh'.")
    return INDRNN[nonlinearity]


class IndRNNCell(CellBase):
    r"""An independently recurrent cell (Li et al. 2018).

    .. math::  h' = \mathrm{relu}(W_{ih} x + b_{ih} + u \odot h)   (or tanh)

    Each unit sees only its own previous value, through one recurrent weight: ``weight_hh``
    is the vector u (H), not a matrix.  The paper uses relu (the default here).

    ``recurrent_max_abs`` (keyword-only, default None: no clipping): the recurrent weights
    are clipped to [-recurrent_max_abs, recurrent_max_abs] where the equations read them
    (``cell_weights()``), so the bound holds at every call whatever the optimiser does; the
    paper bounds |u| by 2^(1/T) for relu over T steps, to keep gradients from exploding.
    The stored parameter is not changed; it gets no gradient where it lies beyond the bound.

    ============  ========================================================
    input         (N, H_in) or (H_in)
    hx            (N, H) or (H); zeros when omitted
    returns h'    (N, H) or (H)
    weight_ih     (H, H_in)     U(-1/sqrt(H), 1/sqrt(H))
    weight_hh     (H)           U(-1/sqrt(H), 1/sqrt(H))   the recurrent weights u
    bias_ih       (H)           U(-1/sqrt(H), 1/sqrt(H))   (bias=True; one bias, b)
    ============  ========================================================

    Equivalent to, over a sequence x (T, N, H_in) from h = zeros (N, H)::

        u = weight_hh.clamp(-recurrent_max_abs, recurrent_max_abs)  # when clipping
        for x_t in x:
            h = torch.relu(x_t @ weight_ih.T + bias_ih + u * h)
    """

    _num_chunks = 1
    _state_arity = 1
    _repr_options = (("nonlinearity", "relu"), ("recurrent_max_abs", None))
    recurrent_max_abs = None

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "relu",
                 device=None, dtype=None, *, recurrent_max_abs=None):
        indrnn_equations(nonlinearity)
        if recurrent_max_abs is not None:
            if isinstance(recurrent_max_abs, bool) or not isinstance(recurrent_max_abs, numbers.Real):
                raise TypeError("recurrent_max_abs should be a positive number or None, got: "
                                f"{type(recurrent_max_abs).__name__}")
            if not (recurrent_max_abs > 0 and math.isfinite(recurrent_max_abs)):
                raise ValueError(f"recurrent_max_abs should be a positive finite number, got {recurrent_max_abs}")
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity
        if recurrent_max_abs is not None:
            self.recurrent_max_abs = float(recurrent_max_abs)

    def _parameter_shapes(self, input_size: int, hidden_size: int, bias: bool) -> dict:
        return {"weight_ih": (hidden_size, input_size), "weight_hh": (hidden_size,),
                "bias_ih": (hidden_size,) if bias else None}

    @property
    def equations(self) -> CellEquations:
        return indrnn_equations(self.nonlinearity)

    def cell_weights(self) -> IndRNNWeights:
        u = self.weight_hh
        if self.recurrent_max_abs is not None:
            u = u.clamp(-self.recurrent_max_abs, self.recurrent_max_abs)
        return IndRNNWeights(self.weight_ih, u, self.bias_ih)
