"""Layer-normalised GRU (Ba, Kiros & Hinton 2016), as haste's LayerNormGRU computes it: layer norm on
the input projection and on the recurrent projection.  Gate order r, z, n (torch.nn's), reset after
the recurrent product as torch.nn's GRU.

The input projection's layer norm depends on x_t alone, so it lives in ``project``: all steps
are normalised at once, before the time loop.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from ._base import CellBase, CellEquations, State
from .layernorm_lstm import LN_EPS


class LayerNormGRUWeights(NamedTuple):
    """The parameters LAYERNORM_GRU reads (the shifts are None with bias=False)."""

    w_ih: Tensor                  # (3H, I)
    w_hh: Tensor                  # (3H, H)
    b_ih: Optional[Tensor]        # (3H,)  shift of LN(W_ih x)
    b_hh: Optional[Tensor]        # (3H,)  shift of LN(W_hh h)
    gamma_ih: Tensor              # (3H,)  gain of LN(W_ih x)
    gamma_hh: Tensor              # (3H,)  gain of LN(W_hh h)


def layernorm_gru_project(x: Tensor, w: LayerNormGRUWeights) -> Tensor:
    wx = F.linear(x, w.w_ih)  # (N, 3H)
    return F.layer_norm(wx, (wx.size(-1),), w.gamma_ih, w.b_ih, LN_EPS)  # (N, 3H): over all 3H of a row


def layernorm_gru_recur(gx: Tensor, state: State, w: LayerNormGRUWeights) -> State:
    (h,) = state
    wh = F.linear(h, w.w_hh)  # (B, 3H)
    gh = F.layer_norm(wh, (wh.size(-1),), w.gamma_hh, w.b_hh, LN_EPS)  # (B, 3H)
    x_r, x_z, x_n = gx.chunk(3, 1)  # each (B, H)
    h_r, h_z, h_n = gh.chunk(3, 1)  # each (B, H)
    r = (x_r + h_r).sigmoid()
    z = (x_z + h_z).sigmoid()
    n = (x_n + r * h_n).tanh()
    return ((h - n) * z + n,)  # (1 - z) * n + z * h


LAYERNORM_GRU = CellEquations(
    name="layernorm_gru",
    weights_type=LayerNormGRUWeights,
    gates=("r", "z", "n"),
    state_names=("h",),
    recur=layernorm_gru_recur,
    project=layernorm_gru_project,
    math="\n".join([
        "LN(v; gamma, beta) = gamma * (v - mean(v)) / sqrt(var(v) + 1e-5) + beta   (over all features of v)",
        "a_t = LN(W_ih x_t; gamma_ih, b_ih)        (3H: rows r, z, n)",
        "u_t = LN(W_hh h_{t-1}; gamma_hh, b_hh)    (3H: rows r, z, n)",
        "r_t = sigmoid(a_t[r] + u_t[r])",
        "z_t = sigmoid(a_t[z] + u_t[z])",
        "n_t = tanh(a_t[n] + r_t * u_t[n])",
        "h_t = (1 - z_t) * n_t + z_t * h_{t-1}",
    ]),
)


class LayerNormGRUCell(CellBase):
    r"""A GRU cell with layer normalisation (Ba et al. 2016), as haste's ``LayerNormGRU``.

    .. math::
        a = \mathrm{LN}(W_{ih} x;\, \gamma_{ih}, b_{ih}),\;
        u = \mathrm{LN}(W_{hh} h;\, \gamma_{hh}, b_{hh}),\;
        r = \sigma(a_r + u_r),\; z = \sigma(a_z + u_z),\;
        n = \tanh(a_n + r\, u_n),\; h' = (1 - z) n + z h

    where ``LN(v; gamma, beta) = gamma * (v - mean(v)) / sqrt(var(v) + 1e-5) + beta`` over
    all 3H features of v (``F.layer_norm``).  The layer norms' shifts are the usual GRU
    biases ``bias_ih`` and ``bias_hh``, added after normalising (haste's bias and
    recurrent_bias); the reset gate multiplies the normalised recurrent n rows, as
    torch.nn's GRU multiplies W_hn h + b_hn.

    Gate order r, z, n (torch.nn's; haste stores z, r, n): ``weight_ih`` is (3H, H_in),
    ``weight_hh`` (3H, H), their rows W_r*, W_z*, W_n*.

    ============  ========================================================
    input         (N, H_in) or (H_in)
    hx            (N, H) or (H); zeros when omitted
    returns h'    (N, H) or (H)
    weight_ih     (3H, H_in)    U(-1/sqrt(H), 1/sqrt(H))
    weight_hh     (3H, H)       U(-1/sqrt(H), 1/sqrt(H))
    bias_ih       (3H)          U(-1/sqrt(H), 1/sqrt(H))  (bias=True)
    bias_hh       (3H)          U(-1/sqrt(H), 1/sqrt(H))  (bias=True)
    gamma_ih      (3H)          ones   (the paper's gain initialisation)
    gamma_hh      (3H)          ones
    ============  ========================================================

    The four torch.nn-named parameters are drawn in torch.nn's order, so one seed gives the
    same values as ``GRUCell``.  With ``bias=False`` the layer norms have no shift.

    Equivalent to, over a sequence x (T, N, H_in) from h = zeros (N, H)::

        ln = lambda v, g, b: F.layer_norm(v, (v.size(-1),), g, b, 1e-5)
        for x_t in x:
            a_r, a_z, a_n = ln(x_t @ weight_ih.T, gamma_ih, bias_ih).chunk(3, 1)
            u_r, u_z, u_n = ln(h @ weight_hh.T, gamma_hh, bias_hh).chunk(3, 1)
            r, z = (a_r + u_r).sigmoid(), (a_z + u_z).sigmoid()
            n = (a_n + r * u_n).tanh()
            h = (1 - z) * n + z * h
    """

    _num_chunks = 3
    _state_arity = 1

    def _parameter_shapes(self, input_size: int, hidden_size: int, bias: bool) -> dict:
        G = 3 * hidden_size
        return {**super()._parameter_shapes(input_size, hidden_size, bias), "gamma_ih": (G,), "gamma_hh": (G,)}

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            if p is not None:
                nn.init.uniform_(p, -stdv, stdv)
        nn.init.ones_(self.gamma_ih)
        nn.init.ones_(self.gamma_hh)

    @property
    def equations(self) -> CellEquations:
        return LAYERNORM_GRU

    def cell_weights(self) -> LayerNormGRUWeights:
        return LayerNormGRUWeights(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                                   self.gamma_ih, self.gamma_hh)
