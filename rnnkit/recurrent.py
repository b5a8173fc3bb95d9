"""The one time loop, and the driver of layers and directions around it.

Every sequence is handled in packed form: ``x`` is (N, features) with the rows of
step t forming one block of ``batch_sizes[t]`` rows (sequences sorted longest first,
as in torch's PackedSequence).  Padded input of T steps and batch B is the same
thing with ``batch_sizes = [B] * T``, so padded and packed share all the code.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

State = tuple  # tuple[Tensor, ...]; element 0 is the step's output


def scan(step: Callable[[Tensor, State], State], x: Tensor, batch_sizes: Sequence[int],
         state0: State, reverse: bool = False) -> tuple[Tensor, State]:
    """Run ``state = step(x_t, state)`` over time; return (outputs (N, H), final state).

    ``state0`` holds one row per sequence (batch_sizes[0] rows).  Going forward the
    batch shrinks as sequences end, and each sequence's last state is kept; going in
    reverse each sequence starts at its own last step, so rows join as the batch grows.
    Outputs are written in input order in both directions.
    """
    offsets = [0]
    for b in batch_sizes:
        offsets.append(offsets[-1] + b)
    steps = range(len(batch_sizes) - 1, -1, -1) if reverse else range(len(batch_sizes))
    outputs: list = [None] * len(batch_sizes)
    finished: list = []  # forward: final states of sequences that ended early, in order of ending
    state = state0
    if reverse:
        state = tuple(s[: batch_sizes[-1]] for s in state0)
    for t in steps:
        b = batch_sizes[t]
        rows = state[0].size(0)
        if b < rows:  # forward: the last rows' sequences have ended
            finished.append(tuple(s[b:] for s in state))
            state = tuple(s[:b] for s in state)
        elif b > rows:  # reverse: longer sequences begin here
            state = tuple(torch.cat((s, s0[rows:b])) for s, s0 in zip(state, state0))
        state = step(x[offsets[t]:offsets[t + 1]], state)
        outputs[t] = state[0]
    if finished:
        state = tuple(torch.cat((s,) + tuple(f[k] for f in reversed(finished)))
                      for k, s in enumerate(state))
    return torch.cat(outputs), state


LayerFn = Callable[[int, int, Tensor, Sequence[int], State], tuple]


def run_stack(x: Tensor, batch_sizes: Sequence[int], hx: State, layer_fn: LayerFn, *,
              num_layers: int, num_directions: int, dropout: float = 0.0,
              training: bool = False) -> tuple[Tensor, State]:
    """Run ``num_layers`` x ``num_directions`` recurrences over packed ``x`` (N, I).

    ``hx`` is a tuple of stacked states, each (num_layers * num_directions, B, *),
    indexed ``layer * num_directions + direction`` as in torch.nn.
    ``layer_fn(layer, direction, x, batch_sizes, state0)`` runs one layer-direction
    and returns (outputs (N, H), final state); direction 1 reads the sequence backwards.
    Directions' outputs are concatenated on the feature axis; dropout is applied to
    each layer's output except the last, in training only.
    """
    finals: list = [[] for _ in hx]
    for layer in range(num_layers):
        outs = []
        for direction in range(num_directions):
            idx = layer * num_directions + direction
            out, state = layer_fn(layer, direction, x, batch_sizes, tuple(s[idx] for s in hx))
            outs.append(out)
            for k, s in enumerate(state):
                finals[k].append(s)
        x = outs[0] if num_directions == 1 else torch.cat(outs, dim=-1)  # (N, D*H)
        if dropout > 0 and training and layer < num_layers - 1:
            x = F.dropout(x, dropout, training=True)
    return x, tuple(torch.stack(f) for f in finals)
