"""Autograd formulas of the forward operators (``torch.library.register_autograd``).

An ordinary backward calls the family's backward operator: the C++ time loop run backwards, and the
products over all steps.  That operator's own code is not differentiable, so a backward that must be
(``create_graph=True``: double backward, gradient penalties, gradgradcheck; or batched output
gradients, ``is_grads_batched=True``) recomputes the layer-direction on the reference loop and
differentiates that instead: ``differentiable.differentiable_backward``, shared with the numba and
Triton kernels.  Both give the same first-order gradients up to rounding; the recompute gives exactly
the reference backend's numbers.
"""
from __future__ import annotations

import torch

from ...cells import CellWeights
from ..differentiable import differentiable_backward, layer_reference, save, saved
from .families import FAMILIES, Family


class RecomputePlan:
    """What ``differentiable.layer_reference`` needs to run the layer-direction again on the reference
    loop: the recurrence and its weights' record, the step sizes and the direction.  The sizes stay a
    tensor until a recompute asks for them (setup_context must not read tensor data: it is traced)."""

    __slots__ = ("eq", "weights_type", "batch_sizes", "reverse")

    def __init__(self, eq, batch_sizes, reverse: bool):
        self.eq, self.weights_type, self.batch_sizes, self.reverse = eq, CellWeights, batch_sizes, reverse

    @property
    def bsz(self) -> list:
        return self.batch_sizes.tolist()


def _setup_context(family: Family):
    def setup_context(ctx, inputs, output):
        positions = family.differentiable_positions
        for_backward = output[1 + family.states:]
        ctx.mark_non_differentiable(*for_backward)
        ctx.set_materialize_grads(False)  # the non-differentiable results get no zero gradients made for them
        save(ctx, RecomputePlan(family.eq, inputs[1], inputs[-1]), tuple(inputs[i] for i in positions),
             (output[0], *for_backward))
    return setup_context


def _fused_backward(family: Family):
    """The backward in the convention of ``differentiable_backward``: slot 0 is the plan, then the
    differentiable arguments ``(input, *state0, w_ih, w_hh, b_ih, b_hh, [w_hr])``."""
    backward_op = getattr(torch.ops.rnnkit, family.backward_name).default

    @differentiable_backward(layer_reference)
    def backward(ctx, *grads):
        plan = ctx.plan
        inputs, intermediates = saved(ctx)
        x, state0 = inputs[0], inputs[1:1 + family.states]
        w_ih, w_hh = inputs[1 + family.states:3 + family.states]
        w_hr = (inputs[-1],) if family.projectable else ()
        needs = ctx.needs_input_grad[1:]
        need_input = needs[0]
        need_states = any(needs[1:1 + family.states])
        need_weights = any(needs[1 + family.states:])
        results = backward_op(*grads, x, plan.batch_sizes, *state0, w_ih, w_hh, *w_hr, *intermediates, plan.reverse,
                              [need_input, need_states, need_weights])
        return (None,) + tuple(g if need and t is not None else None for g, need, t in zip(results, needs, inputs))
    return backward


def _backward(family: Family):
    """The registered backward: maps the operator's arguments onto the slots of ``_fused_backward`` and
    its gradients back; materializes the gradients of unused outputs and final states as zeros."""
    slots_backward = _fused_backward(family)
    positions = family.differentiable_positions
    num_differentiable = 1 + family.states

    def backward(ctx, *grads):
        inputs, intermediates = saved(ctx)
        like = (intermediates[0], *(s for s in inputs[1:1 + family.states]))  # output, then states (their shapes)
        # an unused result's gradient: one zero expanded to its shape (the operator reads it as such,
        # with no (N, P) block of zeros made; e.g. a classifier that reads h_n alone)
        grads = tuple(t.new_zeros(()).expand(t.shape) if g is None else g
                      for g, t in zip(grads[:num_differentiable], like))
        op_needs = ctx.needs_input_grad
        ctx.needs_input_grad = (False,) + tuple(op_needs[i] for i in positions)
        try:
            slot_grads = slots_backward(ctx, *grads)[1:]
        finally:
            ctx.needs_input_grad = op_needs
        result = [None] * len(op_needs)
        for position, g in zip(positions, slot_grads):
            result[position] = g
        return tuple(result)
    return backward


for _family in FAMILIES.values():
    torch.library.register_autograd(f"rnnkit::{_family.name}", _backward(_family),
                                    setup_context=_setup_context(_family))

__all__ = ["RecomputePlan"]
