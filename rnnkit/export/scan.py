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


def scan_recurrent(module, input, hx=None):
    """``module(input, hx)`` for an ``rnnkit.Recurrent`` of rnnkit's own cells and a padded (or unbatched)
    tensor input: one scan per layer-direction over the cell's equations, the directions merged as
    ``module.merge`` says.  What a scan cannot hold is refused with a clear error: a PackedSequence or
    ``lengths`` (data, not shapes), a user's cell (no equations to scan), and the options that act
    inside the step or across calls (return_states, zoneout, recurrent and input dropout in training,
    stateful)."""
    from torch.nn.utils.rnn import PackedSequence

    from ..cells._base import CellBase
    from ..recurrent import MERGES

    who = f"Recurrent({module.cell_name})"
    if isinstance(input, PackedSequence):
        raise RuntimeError(f"{who}: a PackedSequence cannot be exported (its batch sizes are data, not shapes); "
                           "export on a padded tensor (L, N, H_in)")
    if not all(isinstance(cell, CellBase) for cell in module.cells):
        raise RuntimeError(f"{who}: only rnnkit's own cells (rnnkit.cells, whose step is a CellEquations) export "
                           "as a scan; a user's cell runs eagerly only")
    acting = [name for name, on in (("return_states", module.return_states), ("stateful", module.stateful),
                                    ("zoneout", module.zoneout > 0),
                                    ("recurrent_dropout", module.training and module.recurrent_dropout > 0),
                                    ("input_dropout", module.training and module.input_dropout > 0)) if on]
    if acting:
        raise RuntimeError(f"{who}: {', '.join(acting)} cannot be exported (they act inside the step or across "
                           "calls); export the module in eval mode without them")
    if not isinstance(input, Tensor) or input.dim() not in (2, 3):
        raise ValueError(f"{who}: Expected input to be 2D or 3D, got "
                         f"{f'{input.dim()}D tensor' if isinstance(input, Tensor) else type(input).__name__} instead")
    is_batched = input.dim() == 3
    if not is_batched:
        input = input.unsqueeze(0 if module.batch_first else 1)
    if input.size(-1) != module.input_size:
        raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {module.input_size}, "
                           f"got {input.size(-1)}")
    x = input.transpose(0, 1) if module.batch_first else input  # (T, B, I)
    structure = [module._probe(cell, size, x) for cell, size in zip(module.cells, module._cell_input_sizes)]
    state = module._initial_state(hx, is_batched, x.shape[1], x, structure)
    directions = 2 if module.bidirectional else 1
    finals: list = [[] for _ in state]
    for k in range(module.num_layers):
        outs = []
        for d in range(directions):
            idx = k * directions + d
            cell = module.cells[idx]
            out, final = scan_direction(cell.equations, cell.cell_weights(), x, tuple(s[idx] for s in state),
                                        reverse=d == 1)
            outs.append(out)
            for j, s in enumerate(final):
                finals[j].append(s)
        x = MERGES[module.merge](outs)
        if module.dropout > 0 and module.training and k < module.num_layers - 1:
            x = F.dropout(x, module.dropout, training=True)
    final = tuple(torch.stack(f) for f in finals)
    output = x.transpose(0, 1) if module.batch_first else x
    if not is_batched:
        output = output.squeeze(0 if module.batch_first else 1)
        final = tuple(s.squeeze(1) for s in final)
    return output, (final[0] if len(final) == 1 else final)


__all__ = ["scan_direction", "scan_forward", "scan_recurrent"]
