"""The reference backend: the cell's own equations in plain torch, autograd for the backward."""
from __future__ import annotations

from .. import recurrent
from .base import Kernel


class ReferenceKernel(Kernel):
    """Runs every configuration, on every device and dtype."""

    name = "reference"

    def layer(self, eq, x, batch_sizes, state0, weights, reverse):
        gx = eq.project(x, weights)  # (N, G*H): all steps' input projections at once
        return recurrent.scan(lambda g, s: eq.recur(g, s, weights), gx, batch_sizes, state0, reverse)
