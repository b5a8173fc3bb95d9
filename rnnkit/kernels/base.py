"""The interface every backend implements."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from ..cells._base import CellEquations, CellWeights, State


class Kernel:
    """Runs one layer-direction of a recurrence over packed input.

    ``layer(eq, x, batch_sizes, state0, weights, reverse)`` takes x (N, I) in packed
    layout (see rnnkit.recurrent), the initial state (one row per sequence), the
    cell's own parameters, and returns (outputs (N, H), final state), differentiable
    with respect to x, state0 and weights.

    ``check(eq, x, weights)`` raises UnsupportedBackendError, naming what is
    unsupported, when the kernel cannot run that configuration.
    """

    name = "abstract"

    def check(self, eq: CellEquations, x: Tensor, weights: CellWeights) -> None:
        return None

    def layer(self, eq: CellEquations, x: Tensor, batch_sizes: Sequence[int], state0: State,
              weights: CellWeights, reverse: bool) -> tuple[Tensor, State]:
        raise NotImplementedError


def named_tensors(x: Tensor, weights: CellWeights) -> list:
    """[(name, tensor)] of a call's input and its present weights: what a backend's ``check`` inspects."""
    return [("input", x)] + [(name, t) for name, t in zip(weights._fields, weights) if t is not None]
