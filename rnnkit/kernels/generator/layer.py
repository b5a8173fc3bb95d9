"""A cell's layer-direction on its generated kernel: trace (trace.py), lay out (stages.py), emit C++
(emit_cpp.py), compile (build.py), run in the generic loop (rnnkit::generated_forward/backward,
csrc/cpu/generated_loop.cpp).

Per call: the step's constants (parameters alone) and its hoisted part (x_t's, for all rows at once)
run as torch ops, recorded by autograd as usual; the recurrence runs in ``GeneratedRecurrence``, an
autograd.Function whose backward is the generated reverse-mode step in the same loop.  The products'
weight gradients are one product each over all rows, the pointwise constants' gradients a sum over
the rows of their per-row gradients.  The backward is not itself differentiable: a double backward
raises (torch's once_differentiable error); ``backend="reference"`` runs the cell's own torch ops,
which differentiate at every order.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ...errors import UnsupportedBackendError
from .._torch_internals import forward_ad_active, in_functorch_transform
from ..ops import extension
from .build import step_addresses
from .emit_cpp import emit
from .stages import Layout, lay_out
from .trace import StepPlan, _as_tuple, trace_cell


@dataclass
class GeneratedStep:
    """A cell's step compiled for one dtype: the plan, the loop's layout, the generated functions."""

    plan: StepPlan
    layout: Layout
    forward_address: int
    backward_address: int
    source: str

    def run(self, x: Tensor, batch_sizes: Sequence[int], state0: tuple, params: Sequence[Tensor],
            reverse: bool) -> tuple[Tensor, tuple]:
        """(outputs (N, H), final states) over packed x (N, I), differentiable in x, state0 and params."""
        constants = _as_tuple(self.plan.constants(*params))
        hoisted = tuple(h.contiguous() for h in _as_tuple(self.plan.hoisted(x, *constants)))
        sizes = torch.as_tensor(batch_sizes, dtype=torch.int64)
        states = tuple(s.contiguous() for s in state0)
        results = GeneratedRecurrence.apply(self, sizes, bool(reverse), len(hoisted), len(states), x.shape[0],
                                            *hoisted, *states, *constants)
        n = len(self.layout.history)
        return results[0], tuple(results[n:])


_STEPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # cell -> {dtype: GeneratedStep}


def for_cell(cell: nn.Module, x: Tensor) -> GeneratedStep:
    """``cell``'s generated step for ``x``'s dtype (traced and compiled on first use, the library cached
    on disk), or UnsupportedBackendError saying why there is none."""
    if x.device.type != "cpu":
        raise UnsupportedBackendError(f"generated kernels run on the CPU, got input on {x.device}")
    if x.dtype not in (torch.float32, torch.float64):
        raise UnsupportedBackendError(f"generated kernels run in float32 or float64, got {x.dtype}")
    if in_functorch_transform() or forward_ad_active():
        raise UnsupportedBackendError("generated kernels do not run under torch.func transforms or forward-mode AD")
    if any(p.dtype != x.dtype or p.device != x.device for p in cell.parameters()):
        raise UnsupportedBackendError("generated kernels need the cell's parameters in the input's dtype, on its device")
    extension.load()  # the loop: rnnkit._C (UnsupportedBackendError where it is not built)
    per_dtype = _STEPS.setdefault(cell, {})
    if x.dtype not in per_dtype:
        per_dtype[x.dtype] = _compile(cell, x.dtype)
    return per_dtype[x.dtype]


def _compile(cell: nn.Module, dtype: torch.dtype) -> GeneratedStep:
    try:
        plan, params = trace_cell(cell, dtype)
    except UnsupportedBackendError:
        raise
    except Exception as e:  # a step make_fx cannot trace (data-dependent Python control flow, say)
        raise UnsupportedBackendError(f"the cell's step could not be traced for a generated kernel: {e}") from e
    x = torch.zeros(2, cell.input_size, dtype=dtype)
    constants = _as_tuple(plan.constants(*params))
    hoisted = _as_tuple(plan.hoisted(x, *constants))
    with torch.no_grad():
        probe = _as_tuple(cell(x, None))
    if any(s.dim() != 2 for s in probe):
        raise UnsupportedBackendError("generated kernels need each state to be (batch, features)")
    layout = lay_out(plan, [h.shape[1] for h in hoisted], [s.shape[1] for s in probe], list(constants))
    for k in layout.pointwise_constants:
        if len(layout.constant_shapes[k]) > 1 and layout.constant_shapes[k][0] != 1:
            raise UnsupportedBackendError(f"the step reads a constant of shape {layout.constant_shapes[k]} pointwise; "
                                          "generated kernels broadcast vectors and numbers only")
    source = emit(layout, dtype)
    forward_address, backward_address = step_addresses(source)
    return GeneratedStep(plan, layout, forward_address, backward_address, source)


def _product_lists(layout: Layout) -> tuple[list, list, list]:
    return ([p.left for p in layout.products], [p.out for p in layout.products],
            [p.stage for p in layout.products])


def _loop_constants(layout: Layout, constants: Sequence[Tensor]) -> list:
    """What the generated code reads as constants[k]: the pointwise ones contiguous, the others unused."""
    pointwise = set(layout.pointwise_constants)
    empty = constants[0].new_empty(0) if constants else torch.empty(0)
    return [c.contiguous() if k in pointwise else empty for k, c in enumerate(constants)]


class GeneratedRecurrence(torch.autograd.Function):
    """(hoisted rows, initial states, constants) -> (each state's history (N, w), each final state)."""

    @staticmethod
    def forward(ctx, step: GeneratedStep, batch_sizes: Tensor, reverse: bool, n_hoisted: int, n_states: int,
                rows: int, *tensors):
        layout = step.layout
        hoisted, state0, constants = (tensors[:n_hoisted], tensors[n_hoisted:n_hoisted + n_states],
                                      tensors[n_hoisted + n_states:])
        like = state0[0]
        slots = [like.new_empty(rows, slot.width) for slot in layout.slots]
        for slot, value in zip(layout.hoisted, hoisted):
            slots[slot] = value
        left, out, stage = _product_lists(layout)
        weights = [constants[p.weight] for p in layout.products]
        loop_constants = _loop_constants(layout, constants)
        finals = torch.ops.rnnkit.generated_forward(
            step.forward_address, slots, [s.width for s in layout.slots], layout.previous, layout.history,
            list(state0), loop_constants, left, out, stage, weights, len(layout.stages), batch_sizes, reverse)
        ctx.step, ctx.reverse, ctx.n_hoisted, ctx.n_states = step, reverse, n_hoisted, n_states
        ctx.constant_shapes = [c.shape for c in constants]
        ctx.save_for_backward(batch_sizes, *slots, *loop_constants, *weights)
        return (*[slots[s] for s in layout.history], *finals)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grad_results):
        step, layout = ctx.step, ctx.step.layout
        saved = ctx.saved_tensors
        n_slots, n_constants = len(layout.slots), len(ctx.constant_shapes)
        batch_sizes, slots = saved[0], list(saved[1:1 + n_slots])
        loop_constants = list(saved[1 + n_slots:1 + n_slots + n_constants])
        weights = list(saved[1 + n_slots + n_constants:])
        rows = slots[0].shape[0]
        n_history = len(layout.history)
        grad_histories, grad_finals = grad_results[:n_history], grad_results[n_history:]
        like = slots[0]
        grads = [like.new_zeros(rows, slot.width) for slot in layout.slots]
        for slot, g in zip(layout.history, grad_histories):
            if g is not None:
                grads[slot].copy_(g)
        constant_widths = [max(1, int(torch.Size(ctx.constant_shapes[k]).numel())) for k in layout.pointwise_constants]
        grads += [like.new_zeros(rows, w) for w in constant_widths]
        batch = int(batch_sizes[0])
        finals = [g.contiguous() if g is not None else like.new_zeros(batch, layout.slots[s].width)
                  for g, s in zip(grad_finals, layout.history)]
        left, out, stage = _product_lists(layout)
        grad_state0 = torch.ops.rnnkit.generated_backward(
            step.backward_address, slots, grads, [s.width for s in layout.slots], layout.previous, layout.history,
            finals, loop_constants, left, out, stage, weights, len(layout.stages), batch_sizes, ctx.reverse)
        grad_constants: list = [None] * n_constants
        for p, weight in zip(layout.products, weights):  # out = left @ weight
            g = slots[p.left].t() @ grads[p.out]
            grad_constants[p.weight] = g if grad_constants[p.weight] is None else grad_constants[p.weight] + g
        for k, c in enumerate(layout.pointwise_constants):
            g = grads[n_slots + k].sum(0).reshape(ctx.constant_shapes[c])
            grad_constants[c] = g if grad_constants[c] is None else grad_constants[c] + g
        grad_hoisted = [grads[s] for s in layout.hoisted]
        return (None,) * 6 + (*grad_hoisted, *grad_state0, *grad_constants)


__all__ = ["GeneratedStep", "GeneratedRecurrence", "for_cell"]
