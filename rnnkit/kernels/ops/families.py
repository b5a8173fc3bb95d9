"""The operator families: which ``torch.ops.rnnkit`` operators run which recurrence, and how their
arguments line up (the schemas are in csrc/recurrence.cpp).

Every forward operator takes ``(input, batch_sizes, *state0, w_ih, w_hh, b_ih, b_hh, [w_hr], reverse)``
and returns ``(output, *final_state, *for_backward)``; its backward operator takes
``(*grads of output and final state, input, batch_sizes, *state0, w_ih, w_hh, [w_hr], output,
*for_backward, reverse, output_mask)`` and returns the gradients of
``(input, *state0, w_ih, w_hh, b_ih, b_hh, [w_hr])``, the order of the differentiable arguments.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...cells import ELMAN_RELU, ELMAN_TANH, GRU_EQUATIONS, LSTM_EQUATIONS, CellEquations


@dataclass(frozen=True)
class Family:
    """One recurrence's pair of operators.

    ``gates``: G, the blocks of H rows in the weights; ``saved_blocks``: the H-wide blocks per row of
    the ``gates`` result (0: none); ``states``: 1 (h) or 2 (h, c); ``projectable``: takes ``w_hr``.
    """

    eq: CellEquations
    name: str
    gates: int
    saved_blocks: int
    states: int
    projectable: bool

    @property
    def backward_name(self) -> str:
        return self.name + "_backward"

    @property
    def num_for_backward(self) -> int:
        """How many results after the final state only the backward reads (gates, cells)."""
        return (1 if self.saved_blocks else 0) + (1 if self.states == 2 else 0)

    @property
    def num_arguments(self) -> int:
        return 2 + self.states + 4 + (1 if self.projectable else 0) + 1

    @property
    def differentiable_positions(self) -> tuple:
        """The forward operator's argument positions that take gradients: all but batch_sizes (1) and
        reverse (the last), in the order the backward operator returns them."""
        return (0,) + tuple(range(2, self.num_arguments - 1))


FAMILIES = {
    LSTM_EQUATIONS: Family(LSTM_EQUATIONS, "lstm", gates=4, saved_blocks=4, states=2, projectable=True),
    GRU_EQUATIONS: Family(GRU_EQUATIONS, "gru", gates=3, saved_blocks=4, states=1, projectable=False),
    ELMAN_TANH: Family(ELMAN_TANH, "rnn_tanh", gates=1, saved_blocks=0, states=1, projectable=False),
    ELMAN_RELU: Family(ELMAN_RELU, "rnn_relu", gates=1, saved_blocks=0, states=1, projectable=False),
}
BY_NAME = {family.name: family for family in FAMILIES.values()}

__all__ = ["Family", "FAMILIES", "BY_NAME"]
