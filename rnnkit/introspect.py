"""Looking inside a layer: the gate activations of every step, for learning what the gates do."""
from __future__ import annotations

import torch
from torch import Tensor

from .recurrent import run_stack, scan


@torch.no_grad()
def trace_gates(layer, input: Tensor) -> dict:
    """Run ``layer`` (rnnkit.RNN/LSTM/GRU) on padded ``input`` and record every gate at every step.

    Returns {(layer_index, direction): {gate name: (T, B, H) activations}}, gates named as in
    the layer's equations (i, f, g, o; r, z, n; h for the Elman RNN).
    """
    eq = layer.equations
    if eq.gate_values is None:
        raise ValueError(f"the {eq.name} equations do not expose their gates")
    x = input.transpose(0, 1) if layer.batch_first else input  # (T, B, I)
    steps, batch = x.shape[:2]
    directions = 2 if layer.bidirectional else 1
    traces = {}

    def layer_fn(k, d, x_flat, batch_sizes, state0):
        weights = layer.layer_weights(k, d)
        visited = []  # gate values in the order the steps ran: backwards in time for d == 1

        def step(gx, state):
            visited.append(eq.gate_values(gx, state, weights))
            return eq.recur(gx, state, weights)

        out = scan(step, eq.project(x_flat, weights), batch_sizes, state0, reverse=d == 1)
        in_time_order = visited[::-1] if d == 1 else visited
        traces[(k, d)] = {name: torch.stack([g[j] for g in in_time_order]) for j, name in enumerate(eq.gates)}
        return out

    state0 = tuple(x.new_zeros(layer.num_layers * directions, batch, size) for size in layer._state_sizes())
    run_stack(x.reshape(steps * batch, -1), [batch] * steps, state0, layer_fn,
              num_layers=layer.num_layers, num_directions=directions)
    return traces
