"""The dynamically quantized LSTM: int8 weights, the recurrence computed by rnnkit (lstm_loop.py)."""
from __future__ import annotations

import torch

from ..layers import LSTM
from .layer_base import DynamicQuantizedRNNBase, npy, row_plan, step_layout


class DynamicQuantizedLSTM(DynamicQuantizedRNNBase):
    r"""``rnnkit.LSTM`` with int8 weights, for CPU inference; built by ``rnnkit.quantize_dynamic``.

    .. math::
        G = \mathrm{fbgemm}(x, W_{ih}^{q}) + b_{ih} + b_{hh}            \quad\text{(all steps at once)}\\
        i, f, g, o = \sigma, \sigma, \tanh, \sigma\;(G_t + s_{hh} \odot (h_{t-1} Q_{hh}^T))\\
        c_t = f c_{t-1} + i g,\quad h_t = o \tanh(c_t)
        \quad(\text{proj\_size } P > 0:\; h_t = s_{hr} \odot ((o \tanh c_t) Q_{hr}^T))

    where ``Q`` are the int8 weights and ``s`` their per-row scales.  Called as the float layer:
    ``lstm(input, (h_0, c_0))`` -> ``output, (h_n, c_n)``, with its shapes:

    ==========  =======================================================
    input       (L, N, H_in), (N, L, H_in) if batch_first, (L, H_in), or a PackedSequence
    h_0, c_0    (D * num_layers, N, H_out), (D * num_layers, N, H); zeros when omitted
    output      (L, N, D * H_out) (batch_first: (N, L, D * H_out))
    h_n, c_n    like h_0, c_0
    ==========  =======================================================

    (D = 2 if bidirectional else 1, H_out = proj_size or hidden_size.)
    """

    _float_class = LSTM
    _num_gates = 4
    _state_names = ("h", "c")

    @classmethod
    def _extra_args(cls, mod) -> dict:
        return {"proj_size": mod.proj_size}

    def _state_sizes(self) -> tuple:
        return (self.proj_size or self.hidden_size, self.hidden_size)

    def _fold_input_bias(self, suffix: str):
        if not self.bias:
            return None
        return getattr(self, f"bias_ih{suffix}") + getattr(self, f"bias_hh{suffix}")

    def _layer(self, idx, suffix, x, batch_sizes, state0, reverse):
        from ..kernels.cpu.split import run_rows  # numba: imported on first use
        from .lstm_loop import lstm_int8_forward, lstm_vnni_forward

        offsets, bsz = step_layout(tuple(batch_sizes))
        on_fbgemm, vnni = self._products()
        G = self._input_projection(idx, suffix, x, on_fbgemm)  # (N, 4H)
        h = state0[0].contiguous().clone()  # (B, P): h_0 in, h_n out
        c = state0[1].contiguous().clone()  # (B, H)
        out = x.new_empty(x.shape[0], h.shape[1])  # (N, P)
        proj = self.proj_size > 0
        m = x.new_empty(h.shape[0], self.hidden_size) if proj else h  # o tanh(c), before the projection
        if vnni:
            hh = self._vnni_weight(idx, "weight_hh", suffix)
            hr = self._vnni_weight(idx, "weight_hr", suffix) if proj else hh  # a stand-in the loop does not read
            B = h.shape[0]
            hq = torch.empty(B, hh.values.shape[1], dtype=torch.uint8)  # h quantized, per row
            mq = torch.empty(B, hr.values.shape[1], dtype=torch.uint8) if proj else hq  # o tanh(c) quantized
            sx = torch.empty(B)  # their scales
            acc = torch.empty(B, hh.values.shape[0], dtype=torch.int32)
            acc_r = torch.empty(B, hr.values.shape[0], dtype=torch.int32) if proj else acc
            lstm_vnni_forward(offsets, bsz, npy(G), *map(npy, hh), *map(npy, hr), npy(h), npy(c), npy(m),
                              npy(_UNUSED), npy(out), npy(hq), npy(mq), npy(sx), npy(acc), npy(acc_r), reverse, proj)
            return out, (h, c)
        hh = self._int8(f"weight_hh{suffix}")
        hr = self._int8(f"weight_hr{suffix}") if proj else hh  # a stand-in the loop does not read
        run_rows(lstm_int8_forward, row_plan(batch_sizes, offsets, bsz), npy(G), npy(hh.values), npy(hh.scale),
                 npy(hr.values), npy(hr.scale), npy(h), npy(c), npy(m), npy(_UNUSED), npy(out), reverse, proj)
        return out, (h, c)


_UNUSED = torch.zeros(1, 1)  # the float kernel's saved-state array, not written at inference

__all__ = ["DynamicQuantizedLSTM"]
