"""The fused kernels' backward, differentiable at every order.

A fused kernel's autograd Function (numba on the CPU, Triton on CUDA) computes the first-order
gradient by hand, in code autograd cannot see through: differentiated again it would give nothing
(with ``once_differentiable`` the gradient comes back detached, so a gradient penalty silently
contributes zero).  Its backward is therefore decorated with ``differentiable_backward``:

- an ordinary backward runs the kernel's fused backward, as fast as before, also a second time
  through a retained graph (``retain_graph=True``), with bitwise the same result;
- a backward that **builds a graph** (``create_graph=True``: double backward, gradient penalties,
  ``gradgradcheck``; grad mode is on inside a backward exactly then), or one whose output
  gradients are **batched** (``autograd.grad(..., is_grads_batched=True)`` runs the backward under
  vmap, and a kernel that reads memory directly cannot take vmap's batched tensors) recomputes
  the Function's outputs in torch ops from its saved inputs (the cell's own equations on the
  reference loop) and differentiates that: slower, and exactly the reference backend's numbers,
  which are torch.nn's.

A Function saves its inputs with ``save`` (all of them, each checked for in-place changes by
autograd like any saved tensor; parameters cost no memory) and reads them back with ``saved``.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch

from . import _torch_internals


def save(ctx, plan, inputs: tuple, intermediates: tuple) -> None:
    """Save a fused Function's tensor inputs (in its argument order, after ``plan``) and the
    intermediates its fused backward reads."""
    ctx.plan = plan
    ctx.num_inputs = len(inputs)
    ctx.save_for_backward(*inputs, *intermediates)


def saved(ctx) -> tuple:
    """(inputs, intermediates) as ``save`` stored them."""
    tensors = ctx.saved_tensors
    return tensors[:ctx.num_inputs], tensors[ctx.num_inputs:]


class Recomputed(NamedTuple):
    """What a ``reference`` returns when the gradient of some input slot is to be taken at another
    tensor: ``wrt`` holds, per input slot, the tensor to differentiate (None: no gradient there)."""

    outputs: tuple
    wrt: list


def differentiable_backward(reference: Callable) -> Callable:
    """Decorate a fused Function's ``backward(ctx, *grads)`` (see the module docstring).

    ``reference(plan, *inputs)`` computes the Function's outputs (the same tuple, in order) in
    differentiable torch ops; ``inputs`` are the Function's tensor arguments after ``plan``.  It
    returns the outputs, or a ``Recomputed`` naming what to differentiate in each input slot.
    """
    def decorate(fused_backward: Callable) -> Callable:
        @functools.wraps(fused_backward)
        def backward(ctx, *grads):
            if torch.is_grad_enabled() or _torch_internals.any_batched(grads):
                inputs, _ = saved(ctx)
                return (None,) + recomputed_grads(reference, ctx.plan, inputs, ctx.needs_input_grad[1:], grads)
            return fused_backward(ctx, *grads)
        return backward
    return decorate


def independent(inputs) -> tuple:
    """Each tensor that requires grad through a view of its own, for taking partial derivatives.

    A backward's gradients are partial ones: of each input through its own uses in the operator.
    torch.autograd.grad on the inputs themselves gives total derivatives, and where one input depends on
    another (an LSTM's input scaled by its weight_ih, h0 made from a weight, a generated step's W_ih^T
    that its hoisted inputs are made from) the caller would count that path twice: once in the total,
    again when it propagates the other input's gradient.  On views nothing depends on, autograd.grad gives
    the partials, still differentiable in the inputs (the views are)."""
    with torch.enable_grad():  # (a backward runs with grad mode off unless it builds a graph)
        return tuple(t.view_as(t) if isinstance(t, torch.Tensor) and t.requires_grad else t for t in inputs)


def recomputed_grads(reference: Callable, plan, inputs: tuple, needs, grads) -> tuple:
    """The inputs' gradients by autograd through ``reference`` run on the saved inputs, with a graph
    when grad mode is on (create_graph), so that they can be differentiated again."""
    inputs = independent(inputs)
    with torch.enable_grad():
        result = reference(plan, *inputs)
    outputs, wrt = result if isinstance(result, Recomputed) else (result, inputs)
    # outputs that carry no gradient (a Function's placeholder output, say), or were given none, take no part
    pairs = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad and g is not None]
    needs = [need and t is not None for t, need in zip(wrt, needs)]
    wanted = [t for t, need in zip(wrt, needs) if need]
    if not wanted or not pairs:
        return tuple(None for _ in needs)
    # Under is_grads_batched the grads are vmap's batched tensors already: the reference's torch
    # ops batch over them by themselves, so this is an ordinary call.
    found = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                     create_graph=torch.is_grad_enabled(), allow_unused=True))
    return tuple(next(found) if need else None for need in needs)


def layer_reference(plan, x, *rest) -> tuple:
    """(out, *final state) of one layer-direction on the reference loop: what a fused Function taking
    ``(plan, x, *state0, *weights)`` computes.  ``plan`` gives the layout (``bsz``, the step sizes,
    and ``reverse``), the recurrence (``eq``) and its weights' record (``weights_type``)."""
    from .reference import ReferenceKernel
    n = len(plan.eq.state_names)
    out, state = ReferenceKernel().layer(plan.eq, x, [int(b) for b in plan.bsz], tuple(rest[:n]),
                                         plan.weights_type(*rest[n:]), plan.reverse)
    return (out, *state)


def projected_reference(plan, gx, state0: tuple, x, weights) -> Recomputed:
    """For a fused Function that runs the recurrence from its input projection ``gx`` (computed before
    it, by differentiable torch ops) and writes over ``gx``: the outputs recomputed from ``x`` and
    ``weights``, with ``gx``'s gradient taken at the recomputed projection.  That projection equals gx
    as a function of x and the weights, so its gradient is gx's, differentiable again through them.
    ``wrt`` lists the slots (gx, *state0); the caller appends None for the slots its gradient does
    not flow through (x and the projection's weights, which gx's own graph serves)."""
    from ..recurrent import scan
    projected = plan.eq.project(x, weights)
    out, state = scan(lambda g, s: plan.eq.recur(g, s, weights), projected, [int(b) for b in plan.bsz], state0,
                      plan.reverse)
    return Recomputed((out, *state), [projected, *state0])


__all__ = ["save", "saved", "differentiable_backward", "recomputed_grads", "independent", "layer_reference", "projected_reference", "Recomputed"]
