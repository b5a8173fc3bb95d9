"""The differentiable backward of the forward operators: ``rnnkit::layer_gradients``'s implementation.

The operators' autograd kernels are C++ (csrc/autograd.cpp).  An ordinary backward calls the family's
backward operator: the C++ time loop run backwards, and the products over all steps.  That operator's
own code is not differentiable, so a backward that must be (``create_graph=True``: double backward,
gradient penalties, gradgradcheck; or batched output gradients, ``is_grads_batched=True``) calls
``rnnkit::layer_gradients``, implemented here as CompositeImplicitAutograd: it recomputes the
layer-direction on the reference loop and differentiates that (``differentiable.recomputed_grads``,
shared with the numba and Triton kernels).  Being composite, its torch ops are recorded by autograd
like any others; batched output gradients go through vmap's generic fallback, one gradient at a time
(the reason its arguments and results are flat tensors, no lists).  Both paths give the same
first-order gradients up to rounding; the recompute gives exactly the reference backend's numbers.
"""
from __future__ import annotations

import torch

from ...cells import CellWeights
from ..differentiable import layer_reference, recomputed_grads
from ..generator.layer import generated_gradients
from .families import BY_NAME


class RecomputePlan:
    """What ``differentiable.layer_reference`` needs to run the layer-direction again on the reference
    loop: the recurrence and its weights' record, the step sizes and the direction."""

    __slots__ = ("eq", "weights_type", "batch_sizes", "reverse")

    def __init__(self, eq, batch_sizes, reverse: bool):
        self.eq, self.weights_type, self.batch_sizes, self.reverse = eq, CellWeights, batch_sizes, reverse

    @property
    def bsz(self) -> list:
        return self.batch_sizes.tolist()


def layer_gradients(family: str, grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                    batch_sizes, reverse: bool, wanted: int) -> tuple:
    """The gradients of (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr) that bit k of ``wanted`` asks for,
    differentiable again; an empty (0,) tensor for the others (and the absent arguments)."""
    fam = BY_NAME[family]
    states = (h0, c0) if fam.states == 2 else (h0,)
    weights = (w_ih, w_hh, b_ih, b_hh) + ((w_hr,) if fam.projectable else ())
    grads = (grad_output, grad_h_n) + ((grad_c_n,) if fam.states == 2 else ())
    # the reference's slots: input, the states, the weights; and where each sits among the eight
    slots = [0, 1] + ([2] if fam.states == 2 else []) + [3, 4, 5, 6] + ([7] if fam.projectable else [])
    inputs = (input, *states, *weights)
    needs = [bool(wanted >> k & 1) and t is not None for k, t in zip(slots, inputs)]
    got = recomputed_grads(layer_reference, RecomputePlan(fam.eq, batch_sizes, reverse), inputs, needs, grads)
    result = [grad_output.new_empty(0) for _ in range(8)]
    for k, g, need, t in zip(slots, got, needs, inputs):
        if need:
            result[k] = torch.zeros_like(t) if g is None else g
    return tuple(result)


_LIBRARY = torch.library.Library("rnnkit", "IMPL")  # kept: the registration lives as long as it does
_LIBRARY.impl("layer_gradients", layer_gradients, "CompositeImplicitAutograd")
# the same for the loop of a generated step (rnnkit::generated_recurrence): its step run again in torch ops
_LIBRARY.impl("generated_gradients", generated_gradients, "CompositeImplicitAutograd")

__all__ = ["RecomputePlan", "layer_gradients"]
