"""Fake kernels of the recurrence operators: their results' shapes and dtypes from their arguments'
(what torch.compile, torch.export and FakeTensor run instead of the CPU kernels).  The C++ library
names this module (``set_python_module``), so torch imports it when it needs them.

Shapes, with N rows of packed input, B sequences, hidden size H, h of width P:
forward ``output (N, P)``, the final states like the initial ones, ``gates (N, saved_blocks*H)``,
``cells (N, H)`` (these two in float32 for a bfloat16/float16 layer, whose loop runs in float32); backward: each gradient like its argument, ``(0,)`` where output_mask turns it off
(and ``grad_w_hr`` without a projection).
"""
from __future__ import annotations

import torch

from .families import BY_NAME, Family


def _forward_results(family: Family, input, state0, w_hh) -> tuple:
    N, H = input.shape[0], w_hh.shape[0] // family.gates
    results = [input.new_empty(N, state0[0].shape[1])] + [s.new_empty(s.shape) for s in state0]
    # what the backward reads is in the loop's dtype: float32 for a bfloat16/float16 layer
    loop_dtype = torch.float32 if input.dtype in (torch.bfloat16, torch.float16) else input.dtype
    if family.saved_blocks:
        results.append(input.new_empty(N, family.saved_blocks * H, dtype=loop_dtype))
    if family.states == 2:
        results.append(input.new_empty(N, H, dtype=loop_dtype))
    return tuple(results)


def _backward_results(family: Family, input, state0, w_ih, w_hh, w_hr, output_mask) -> tuple:
    need_input, need_states, need_weights = output_mask
    grads = [input.new_empty(input.shape) if need_input else input.new_empty(0)]
    grads += [s.new_empty(s.shape) if need_states else input.new_empty(0) for s in state0]
    rows = w_hh.shape[0]
    weights = [w_ih.new_empty(w_ih.shape), w_hh.new_empty(w_hh.shape), input.new_empty(rows), input.new_empty(rows)]
    grads += weights if need_weights else [input.new_empty(0) for _ in weights]
    if family.projectable:
        grads.append(w_hr.new_empty(w_hr.shape) if need_weights and w_hr is not None else input.new_empty(0))
    return tuple(grads)


LSTM, GRU, RNN_TANH, RNN_RELU = (BY_NAME[name] for name in ("lstm", "gru", "rnn_tanh", "rnn_relu"))


@torch.library.register_fake("rnnkit::lstm")
def _lstm(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse):
    return _forward_results(LSTM, input, (h0, c0), w_hh)


@torch.library.register_fake("rnnkit::lstm_backward")
def _lstm_backward(grad_output, grad_h_n, grad_c_n, input, batch_sizes, h0, c0, w_ih, w_hh, w_hr, output, gates,
                   cells, reverse, output_mask):
    return _backward_results(LSTM, input, (h0, c0), w_ih, w_hh, w_hr, output_mask)


@torch.library.register_fake("rnnkit::gru")
def _gru(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse):
    return _forward_results(GRU, input, (h0,), w_hh)


@torch.library.register_fake("rnnkit::gru_backward")
def _gru_backward(grad_output, grad_h_n, input, batch_sizes, h0, w_ih, w_hh, output, gates, reverse, output_mask):
    return _backward_results(GRU, input, (h0,), w_ih, w_hh, None, output_mask)


def _elman(family: Family):
    def forward(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse):
        return _forward_results(family, input, (h0,), w_hh)

    def backward(grad_output, grad_h_n, input, batch_sizes, h0, w_ih, w_hh, output, reverse, output_mask):
        return _backward_results(family, input, (h0,), w_ih, w_hh, None, output_mask)

    return forward, backward


for _family in (RNN_TANH, RNN_RELU):
    _forward, _backward = _elman(_family)
    torch.library.register_fake(f"rnnkit::{_family.name}", _forward)
    torch.library.register_fake(f"rnnkit::{_family.backward_name}", _backward)

__all__: list = []
