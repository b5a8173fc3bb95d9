"""The dynamically quantized GRU: int8 weights, the recurrence computed by rnnkit (gru_loop.py)."""
from __future__ import annotations

import torch

from ..layers import GRU
from .layer_base import DynamicQuantizedRNNBase, npy, row_plan, step_layout


class DynamicQuantizedGRU(DynamicQuantizedRNNBase):
    r"""``rnnkit.GRU`` with int8 weights, for CPU inference; built by ``rnnkit.quantize_dynamic``.

    .. math::
        G = \mathrm{fbgemm}(x, W_{ih}^{q}) + b_{ih} + (b_{hr}, b_{hz}, 0)   \quad\text{(all steps at once)}\\
        A_t = s_{hh} \odot (h_{t-1} Q_{hh}^T) + (0, 0, b_{hn})\\
        r = \sigma(G_r + A_r),\; z = \sigma(G_z + A_z),\; n = \tanh(G_n + r A_n),\;
        h_t = (1 - z) n + z h_{t-1}

    where ``Q`` are the int8 weights and ``s`` their per-row scales.  Called as the float layer:
    ``gru(input, h_0)`` -> ``output, h_n``, with its shapes:

    ==========  =======================================================
    input       (L, N, H_in), (N, L, H_in) if batch_first, (L, H_in), or a PackedSequence
    h_0         (D * num_layers, N, H); zeros when omitted
    output      (L, N, D * H) (batch_first: (N, L, D * H))
    h_n         like h_0
    ==========  =======================================================
    """

    _float_class = GRU
    _num_gates = 3

    def _fold_input_bias(self, suffix: str):
        if not self.bias:
            return None
        H = self.hidden_size
        folded = getattr(self, f"bias_ih{suffix}").clone()
        folded[:2 * H] += getattr(self, f"bias_hh{suffix}")[:2 * H]  # b_hr, b_hz; b_hn stays inside r * (.)
        return folded

    def _layer(self, idx, suffix, x, batch_sizes, state0, reverse):
        from ..kernels.cpu.split import run_rows  # numba: imported on first use
        from .gru_loop import gru_int8_forward, gru_vnni_forward

        offsets, bsz = step_layout(tuple(batch_sizes))
        H = self.hidden_size
        on_fbgemm, vnni = self._products()
        G = self._input_projection(idx, suffix, x, on_fbgemm)  # (N, 3H)
        h = state0[0].contiguous().clone()  # (B, H): h_0 in, h_n out
        out = x.new_empty(x.shape[0], H)  # (N, H)
        A = x.new_empty(h.shape[0], 3 * H)  # one step's recurrent side
        b_hn = getattr(self, f"bias_hh{suffix}")[2 * H:] if self.bias else _UNUSED[0]
        if vnni:
            hh = self._vnni_weight(idx, "weight_hh", suffix)
            B = h.shape[0]
            hq = torch.empty(B, hh.values.shape[1], dtype=torch.uint8)  # h quantized, per row
            sx = torch.empty(B)  # its scales
            acc = torch.empty(B, hh.values.shape[0], dtype=torch.int32)
            gru_vnni_forward(offsets, bsz, npy(G), *map(npy, hh), npy(b_hn), npy(A), npy(_UNUSED), npy(h), npy(out),
                             npy(hq), npy(sx), npy(acc), reverse, self.bias)
            return out, (h,)
        hh = self._int8(f"weight_hh{suffix}")
        run_rows(gru_int8_forward, row_plan(batch_sizes, offsets, bsz), npy(G), npy(hh.values), npy(hh.scale),
                 npy(b_hn), npy(A), npy(_UNUSED), npy(h), npy(out), reverse, self.bias)
        return out, (h,)


_UNUSED = torch.zeros(1, 1)  # the float kernel's saved-state array, not written at inference

__all__ = ["DynamicQuantizedGRU"]
