"""Layer-normalised LSTM (Ba, Kiros & Hinton 2016, "Layer Normalization", section 3.1), as haste's
LayerNormLSTM computes it: layer norm on the input projection, on the recurrent projection and on
the cell state before its tanh (the carried c_t itself is not normalised).  Gate order i, f, g, o.

The input projection's layer norm depends on x_t alone, so it lives in ``project``: all steps
are normalised at once, before the time loop.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from ._base import CellEquations, State
from .lstm import ForgetBiasCell, init_forget_bias

LN_EPS = 1e-5  # layer norm's epsilon, as torch.nn.LayerNorm's and haste's


class LayerNormLSTMWeights(NamedTuple):
    """The parameters LAYERNORM_LSTM reads (the shifts are None with bias=False)."""

    w_ih: Tensor                  # (4H, I)
    w_hh: Tensor                  # (4H, H)
    b_ih: Optional[Tensor]        # (4H,)  shift of LN(W_ih x)
    b_hh: Optional[Tensor]        # (4H,)  shift of LN(W_hh h)
    gamma_ih: Tensor              # (4H,)  gain of LN(W_ih x)
    gamma_hh: Tensor              # (4H,)  gain of LN(W_hh h)
    gamma_c: Tensor               # (H,)   gain of LN(c)
    beta_c: Optional[Tensor]      # (H,)   shift of LN(c)


def layernorm_lstm_project(x: Tensor, w: LayerNormLSTMWeights) -> Tensor:
    wx = F.linear(x, w.w_ih)  # (N, 4H)
    return F.layer_norm(wx, (wx.size(-1),), w.gamma_ih, w.b_ih, LN_EPS)  # (N, 4H): over all 4H of a row


def layernorm_lstm_recur(gx: Tensor, state: State, w: LayerNormLSTMWeights) -> State:
    h, c = state
    wh = F.linear(h, w.w_hh)  # (B, 4H)
    gates = gx + F.layer_norm(wh, (wh.size(-1),), w.gamma_hh, w.b_hh, LN_EPS)  # (B, 4H)
    i, f, g, o = gates.chunk(4, 1)  # each (B, H)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    c = f * c + i * g  # (B, H)
    h = o * F.layer_norm(c, (c.size(-1),), w.gamma_c, w.beta_c, LN_EPS).tanh()  # (B, H)
    return h, c


LAYERNORM_LSTM = CellEquations(
    name="layernorm_lstm",
    weights_type=LayerNormLSTMWeights,
    gates=("i", "f", "g", "o"),
    state_names=("h", "c"),
    recur=layernorm_lstm_recur,
    project=layernorm_lstm_project,
    math="\n".join([
        "LN(v; gamma, beta) = gamma * (v - mean(v)) / sqrt(var(v) + 1e-5) + beta   (over all features of v)",
        "a_t = LN(W_ih x_t; gamma_ih, b_ih) + LN(W_hh h_{t-1}; gamma_hh, b_hh)   (4H: rows i, f, g, o)",
        "i_t = sigmoid(a_t[i])",
        "f_t = sigmoid(a_t[f])",
        "g_t = tanh(a_t[g])",
        "o_t = sigmoid(a_t[o])",
        "c_t = f_t * c_{t-1} + i_t * g_t",
        "h_t = o_t * tanh(LN(c_t; gamma_c, beta_c))",
    ]),
)


class LayerNormLSTMCell(ForgetBiasCell):
    r"""An LSTM cell with layer normalisation (Ba et al. 2016), as haste's ``LayerNormLSTM``.

    .. math::
        a = \mathrm{LN}(W_{ih} x;\, \gamma_{ih}, b_{ih}) + \mathrm{LN}(W_{hh} h;\, \gamma_{hh}, b_{hh}),\;
        i, f, g, o = \sigma(a_i), \sigma(a_f), \tanh(a_g), \sigma(a_o),\;
        c' = f c + i g,\; h' = o \tanh(\mathrm{LN}(c';\, \gamma_c, \beta_c))

    where ``LN(v; gamma, beta) = gamma * (v - mean(v)) / sqrt(var(v) + 1e-5) + beta`` over
    all features of v (the 4H gate pre-activations together, as in the paper and haste;
    ``F.layer_norm``).  The carried cell state c' is not normalised, only the copy read by h'.
    The layer norms' shifts are the usual LSTM biases: ``bias_ih`` and ``bias_hh`` are added
    after normalising (haste has one bias b; here it is b_ih + b_hh, as in torch.nn).

    Gate order i, f, g, o (torch.nn's): ``weight_ih`` is (4H, H_in), ``weight_hh`` (4H, H),
    their rows W_i*, W_f*, W_g*, W_o*.

    ============  ========================================================
    input         (N, H_in) or (H_in)
    hx            (h_0, c_0), each (N, H) or (H); zeros when omitted
    returns       (h_1, c_1), each (N, H) or (H)
    weight_ih     (4H, H_in)    U(-1/sqrt(H), 1/sqrt(H))
    weight_hh     (4H, H)       U(-1/sqrt(H), 1/sqrt(H))
    bias_ih       (4H)          U(-1/sqrt(H), 1/sqrt(H))  (bias=True)
    bias_hh       (4H)          U(-1/sqrt(H), 1/sqrt(H))  (bias=True)
    gamma_ih      (4H)          ones   (the paper's gain initialisation)
    gamma_hh      (4H)          ones
    gamma_c       (H)           ones
    beta_c        (H)           zeros  (bias=True)
    ============  ========================================================

    The four torch.nn-named parameters are drawn in torch.nn's order, so one seed gives the
    same ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` as ``LSTMCell``.  With
    ``bias=False`` there are no shifts at all (no bias_ih, bias_hh, beta_c).
    ``forget_bias`` (keyword-only): as ``LSTMCell``'s, bias_ih's f rows = forget_bias and
    bias_hh's f rows = 0, added after the layer norm.

    Equivalent to, over a sequence x (T, N, H_in) from h = c = zeros (N, H)::

        ln = lambda v, g, b: F.layer_norm(v, (v.size(-1),), g, b, 1e-5)
        for x_t in x:
            a = ln(x_t @ weight_ih.T, gamma_ih, bias_ih) + ln(h @ weight_hh.T, gamma_hh, bias_hh)
            i, f, g, o = a.chunk(4, 1)
            c = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * ln(c, gamma_c, beta_c).tanh()
    """

    def _parameter_shapes(self, input_size: int, hidden_size: int, bias: bool) -> dict:
        G = 4 * hidden_size
        return {
            **super()._parameter_shapes(input_size, hidden_size, bias),
            "gamma_ih": (G,),
            "gamma_hh": (G,),
            "gamma_c": (hidden_size,),
            "beta_c": (hidden_size,) if bias else None,
        }

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            if p is not None:
                nn.init.uniform_(p, -stdv, stdv)
        for p in (self.gamma_ih, self.gamma_hh, self.gamma_c):
            nn.init.ones_(p)
        if self.beta_c is not None:
            nn.init.zeros_(self.beta_c)
        init_forget_bias(self)

    @property
    def equations(self) -> CellEquations:
        return LAYERNORM_LSTM

    def cell_weights(self) -> LayerNormLSTMWeights:
        return LayerNormLSTMWeights(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                                    self.gamma_ih, self.gamma_hh, self.gamma_c, self.beta_c)
