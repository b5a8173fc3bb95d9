"""The recurrence as one ``torch._higher_order_ops.scan`` per layer-direction: a graph that
torch.export, torch.onnx.export (as ONNX ``Scan``) and torch.compile keep dynamic in time.

The scan's body is the cell's own ``CellEquations.recur``, the same function the reference
backend loops over, so the numbers are the reference backend's (up to the rounding of the
input projection done for all steps at once, as every backend does); for a user's cell, the
cell's own forward.  Padded input only: a
PackedSequence's batch sizes are data, not shapes, and cannot be captured as a dynamic graph.
"""
from __future__ import annotations

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

    from ..recurrent import run_stack  # (rnnkit.recurrent imports this package)

    eq = layer.equations
    x, state = run_stack(x, None, state,
                         lambda k, d, inputs, _, state0: scan_direction(eq, layer.layer_weights(k, d), inputs, state0,
                                                                        reverse=d == 1),
                         num_layers=layer.num_layers, num_directions=num_directions, dropout=layer.dropout,
                         training=layer.training)

    output = x.transpose(0, 1) if layer.batch_first else x
    if not is_batched:
        output = output.squeeze(batch_dim)
        state = tuple(s.squeeze(1) for s in state)
    return output, layer._as_hx(state)


def scan_cell(cell, x: Tensor, state0: tuple, reverse: bool = False):
    """One layer-direction of a user's cell (``cell(x_t, hx) -> h_t or (h_t, ...)``) over padded ``x`` (T, B, I):
    the scan's body is the cell's own forward (its parameters, read inside, become the graph's inputs)."""

    def body(state, x_t):
        result = cell(x_t, state if len(state) > 1 else state[0])
        new = (result,) if isinstance(result, Tensor) else tuple(result)
        return new, new[0].clone()  # the scan output may not alias the carried state

    final, out = _scan()(body, tuple(state0), x, dim=0, reverse=reverse)
    return out, tuple(final)


def scan_recurrent(module, input, hx=None):
    """``module(input, hx)`` for an ``rnnkit.Recurrent`` and a padded (or unbatched) tensor input: one scan per
    layer-direction, over the cell's equations (rnnkit's cells) or its forward (a user's cell), the directions
    merged as ``module.merge`` says.  What a scan cannot hold is refused with a clear error (``captured_stack``)."""
    from ..cells._base import equations_of

    def direction(cell, inputs, state0, reverse):
        eq = equations_of(cell)
        if eq is None:
            return scan_cell(cell, inputs, state0, reverse=reverse)
        return scan_direction(eq, cell.cell_weights(), inputs, state0, reverse=reverse)

    return captured_stack(module, input, hx, direction)


def captured_stack(module, input, hx, direction):
    """``module(input, hx)`` for an ``rnnkit.Recurrent`` and a padded (or unbatched) tensor input, each
    layer-direction run by ``direction(cell, inputs (T, B, I), state0, reverse) -> (outputs, final state)``
    (a scan, or an ONNX Loop: rnnkit/export/onnx_loop.py), the directions merged as ``module.merge`` says.
    What no captured graph can hold is refused with a clear error: a PackedSequence (its batch sizes are data,
    not shapes), and the options that act inside the step or across calls (return_states, zoneout, recurrent
    and input dropout in training, stateful)."""
    from torch.nn.utils.rnn import PackedSequence

    from ..recurrent import MERGES, run_stack

    who = f"Recurrent({module.cell_name})"
    if isinstance(input, PackedSequence):
        raise RuntimeError(f"{who}: a PackedSequence cannot be exported (its batch sizes are data, not shapes); "
                           "export on a padded tensor (L, N, H_in)")
    acting = [name for name, on in (("return_states", module.return_states), ("stateful", module.stateful),
                                    ("zoneout", module.zoneout > 0),
                                    ("recurrent_dropout", module.training and module.recurrent_dropout > 0),
                                    ("input_dropout", module.training and module.input_dropout > 0)) if on]
    if acting:
        raise RuntimeError(f"{who}: {', '.join(acting)} cannot be exported (they act inside the step or across "
                           "calls); export the module in eval mode without them")
    input, is_batched = module._batched(input)
    x = input.transpose(0, 1) if module.batch_first else input  # (T, B, I)
    structure = [module._probe(cell, size, x) for cell, size in zip(module.cells, module._cell_input_sizes)]
    state = module._initial_state(hx, is_batched, x.shape[1], x, structure)
    directions = 2 if module.bidirectional else 1

    def layer_fn(k, d, inputs, _, state0):
        return direction(module.cells[k * directions + d], inputs, state0, d == 1)

    x, final = run_stack(x, None, state, layer_fn, num_layers=module.num_layers, num_directions=directions,
                         dropout=module.dropout, training=module.training, merge=MERGES[module.merge])
    output = x.transpose(0, 1) if module.batch_first else x
    if not is_batched:
        output = output.squeeze(0 if module.batch_first else 1)
        final = tuple(s.squeeze(1) for s in final)
    return output, (final[0] if len(final) == 1 else final)


__all__ = ["scan_direction", "scan_cell", "scan_forward", "scan_recurrent", "captured_stack"]
