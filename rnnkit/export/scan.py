"""The recurrence as one ``torch._higher_order_ops.scan`` per layer-direction: a graph that
torch.export, torch.onnx.export (as ONNX ``Scan``) and torch.compile keep dynamic in time.

The scan's body is the cell's own ``CellEquations.recur``, the same function the reference
backend loops over, so the numbers are the reference backend's (up to the rounding of the
input projection done for all steps at once, as every backend does).  Padded input only: a
PackedSequence's batch sizes are data, not shapes, and cannot be captured as a dynamic graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _scan():
    from torch._higher_order_ops.scan import scan
    return scan


def scan_direction(eq, weights, x: Tensor, state0: tuple, reverse: bool = False):
    """One layer-direction over padded ``x`` (T, B, I) from ``state0`` (each (B, *)).

    Returns (outputs (T, B, H_out) in input order, final state tuple).  In reverse the scan
    starts at the last step, so the final state is the one after reading step 0, as torch.nn.
    """
    steps, batch = x.shape[0], x.shape[1]
    gx = eq.project(x.reshape(steps * batch, x.shape[2]), weights)  # (T*B, G): all steps at once
    gx = gx.reshape(steps, batch, gx.shape[-1])

    def body(state, g):
        new = tuple(eq.recur(g, state, weights))
        return new, new[0].clone()  # the scan output may not alias the carried state

    final, out = _scan()(body, tuple(state0), gx, dim=0, reverse=reverse)
    return out, tuple(final)


def scan_forward(layer, input: Tensor, hx=None):
    """``layer(input, hx)`` for an rnnkit RNN/LSTM/GRU and a padded (or unbatched) tensor input.

    The same checks, shapes, state layout and dropout as ``RNNBase.forward``; only the time
    loop differs (a scan in place of the kernel's loop).
    """
    num_directions = 2 if layer.bidirectional else 1
    state = layer._as_state(hx)
    if input.dim() not in (2, 3):
        raise layer._input_dim_error(input.dim())
    is_batched = input.dim() == 3
    batch_dim = 0 if layer.batch_first else 1
    layer._check_state_dims(state, 3 if is_batched else 2)
    if not is_batched:
        input = input.unsqueeze(batch_dim)
        state = None if state is None else tuple(s.unsqueeze(1) for s in state)
    layer._check_input(input, expected_dim=3)
    x = input.transpose(0, 1) if layer.batch_first else input  # (T, B, I)
    batch = x.shape[1]
    if state is None:
        state = tuple(x.new_zeros(layer.num_layers * num_directions, batch, size)
                      for size in layer._state_sizes())
    else:
        layer._check_state(state, batch, x.dtype)

    eq = layer.equations
    finals: list = [[] for _ in state]
    for k in range(layer.num_layers):
        outs = []
        for d in range(num_directions):
            idx = k * num_directions + d
            out, final = scan_direction(eq, layer.layer_weights(k, d), x, tuple(s[idx] for s in state),
                                        reverse=d == 1)
            outs.append(out)
            for j, s in enumerate(final):
                finals[j].append(s)
        x = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        if layer.dropout > 0 and layer.training and k < layer.num_layers - 1:
            x = F.dropout(x, layer.dropout, training=True)
    state = tuple(torch.stack(f) for f in finals)

    output = x.transpose(0, 1) if layer.batch_first else x
    if not is_batched:
        output = output.squeeze(batch_dim)
        state = tuple(s.squeeze(1) for s in state)
    return output, layer._as_hx(state)


__all__ = ["scan_direction", "scan_forward"]
