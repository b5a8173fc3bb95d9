"""A cell's layer-direction on its generated kernel: trace (trace.py), lay out (stages.py), emit C++
(emit_cpp.py), compile (build.py), run in the generic loop (rnnkit::generated_forward/backward,
csrc/cpu/generated_loop.cpp).

Per call: the step's constants (parameters alone) and its hoisted part (x_t's, for all rows at once)
run as torch ops, recorded by autograd as usual; the recurrence runs in ``GeneratedRecurrence``, an
autograd.Function whose backward is the generated reverse-mode step in the same loop.  The products'
weight gradients are one product each over all rows, the pointwise constants' gradients a sum over
the rows of their per-row gradients.  A backward that builds a graph (double backward, gradgradcheck)
runs the recurrent part again in torch ops and differentiates it (``_differentiable_gradients``), so
higher orders get every term.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from ...errors import UnsupportedBackendError
from .._torch_internals import forward_ad_active, in_functorch_transform
from ..ops import extension
from ..._memo import memoized
from .build import step_addresses
from .emit_cpp import emit
from .stages import Layout, lay_out
from ..base import Kernel
from .trace import StepPlan, as_tuple, trace_cell, trace_equations


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
        # (the graphs' forward called directly: nn.Module's call machinery cost as much as a small step)
        constants = as_tuple(self.plan.constants.forward(*params))
        hoisted = tuple(h.contiguous() for h in as_tuple(self.plan.hoisted.forward(x, *constants)))
        sizes = _sizes_tensor(tuple(batch_sizes))
        states = tuple(s.contiguous() for s in state0)
        n = len(self.layout.history)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (*hoisted, *states, *constants)):
            results = GeneratedRecurrence.apply(self, sizes, bool(reverse), len(hoisted), len(states), x.shape[0],
                                                *hoisted, *states, *constants)
        else:  # nothing to differentiate: the loop alone
            results = _forward(self, sizes, bool(reverse), x.shape[0], hoisted, states, constants,
                               step_rows=int(batch_sizes[0]))[0]
        return results[0], tuple(results[n:])


_STEPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # cell -> {(dtype, I, state): GeneratedStep}


def check_call(x: Tensor, params: Sequence[Tensor]) -> None:
    """UnsupportedBackendError where a generated kernel cannot run this call."""
    if x.device.type != "cpu":
        raise UnsupportedBackendError(f"generated kernels run on the CPU, got input on {x.device}")
    if x.dtype not in (torch.float32, torch.float64):
        raise UnsupportedBackendError(f"generated kernels run in float32 or float64, got {x.dtype}")
    if in_functorch_transform() or forward_ad_active():
        raise UnsupportedBackendError("generated kernels do not run under torch.func transforms or forward-mode AD "
                                      "(no vmap or jvp rule); use backend='auto' or 'reference'")
    if any(p.dtype != x.dtype or p.device != x.device for p in params):
        raise UnsupportedBackendError("generated kernels need the cell's parameters in the input's dtype, on its device")
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing():
        # the loop calls the generated code by its address in this process: a traced or exported graph
        # would carry that address to another process
        raise UnsupportedBackendError("generated kernels run eagerly, not while torch.compile, torch.export or "
                                      "torch.jit.trace record a graph; use backend='auto' or 'reference'")
    if torch.is_autocast_enabled(x.device.type):
        raise UnsupportedBackendError("generated kernels run in one dtype, not under autocast; use backend='auto' "
                                      "or 'reference'")
    extension.load()  # the loop: rnnkit._C (UnsupportedBackendError where it is not built)


def for_cell(cell: nn.Module, x: Tensor, input_size: int, params: Sequence[Tensor]) -> GeneratedStep:
    """``cell``'s generated step for ``x``'s dtype (traced and compiled on first use, the library cached
    on disk), or UnsupportedBackendError saying why there is none."""
    check_call(x, params)
    known = _STEPS.setdefault(cell, {})
    key = (x.dtype, input_size, _python_state(cell))
    if key not in known:
        if any(True for _ in cell.buffers()):
            raise UnsupportedBackendError("the cell holds buffers, which a generated kernel would freeze at their "
                                          "values of its first call; use backend='auto' or 'reference'")
        known[key] = _compile(cell, x.dtype, input_size)
    return known[key]


_PLAIN = (bool, int, float, str, type(None))


def _python_state(cell: nn.Module) -> tuple:
    """What a traced step may have read from the cell besides its parameters, each module's training flag
    and its plain attributes (numbers, strings, flags: ``self.scale``, LayerNorm's eps), which tracing
    freezes into the step: a step is generated again when they change, never run stale."""
    return tuple((module.training, tuple((k, v) for k, v in vars(module).items()
                                         if isinstance(v, _PLAIN) or (isinstance(v, tuple) and
                                                                      all(isinstance(e, _PLAIN) for e in v))))
                 for module in cell.modules())


def _compile(cell: nn.Module, dtype: torch.dtype, input_size: int) -> GeneratedStep:
    try:
        plan, params = trace_cell(cell, dtype, input_size)
    except UnsupportedBackendError:
        raise
    except Exception as e:  # a step record cannot trace (data-dependent Python control flow, say)
        raise UnsupportedBackendError(f"the cell's step could not be traced for a generated kernel: {e}") from e
    with torch.no_grad():
        probe = as_tuple(cell(torch.zeros(2, input_size, dtype=dtype), None))
    if any(s.dim() != 2 for s in probe):
        raise UnsupportedBackendError("generated kernels need each state to be (batch, features)")
    return build_step(plan, params, input_size, [s.shape[1] for s in probe], dtype)


def build_step(plan: StepPlan, params: Sequence[Tensor], input_size: int, state_widths: Sequence[int],
               dtype: torch.dtype) -> GeneratedStep:
    """The generated step of a traced plan (its parameters as examples)."""
    constants = as_tuple(plan.constants(*params))
    hoisted = as_tuple(plan.hoisted(torch.zeros(2, input_size, dtype=dtype), *constants))
    layout = lay_out(plan, [h.shape[1] for h in hoisted], list(state_widths), list(constants))
    for k in layout.pointwise_constants:
        if len(layout.constant_shapes[k]) > 1 and layout.constant_shapes[k][0] != 1:
            raise UnsupportedBackendError(f"the step reads a constant of shape {layout.constant_shapes[k]} pointwise; "
                                          "generated kernels broadcast vectors and numbers only")
    source = emit(layout, dtype)
    forward_address, backward_address = step_addresses(source)
    return GeneratedStep(plan, layout, forward_address, backward_address, source)


def _loop_constants(layout: Layout, constants: Sequence[Tensor]) -> list:
    """What the generated code reads as constants[k]: the pointwise ones contiguous, the others unused."""
    pointwise = set(layout.pointwise_constants)
    empty = constants[0].new_empty(0) if constants else torch.empty(0)
    return [c.contiguous() if k in pointwise else empty for k, c in enumerate(constants)]


@memoized(maxsize=64)
def _sizes_tensor(batch_sizes: tuple) -> Tensor:
    return torch.tensor(batch_sizes, dtype=torch.int64)


def _forward(step: GeneratedStep, batch_sizes: Tensor, reverse: bool, rows: int, hoisted, state0, constants,
             step_rows: int | None = None):
    """The loop: ((each state's history (N, w), each final state), the slots).  With ``step_rows`` (B: nothing kept for a backward) the values
    handed within a step live in buffers of one step's rows (generated_loop.cpp), not of all N."""
    layout = step.layout
    like = state0[0]
    slots = [None if slot.kind == "hoisted" else
             like.new_empty(rows if step_rows is None or slot.kind == "history" else step_rows, slot.width)
             for slot in layout.slots]
    for slot, value in zip(layout.hoisted, hoisted):
        slots[slot] = value
    left, out, stage = layout.product_lists
    weights = [constants[p.weight] for p in layout.products]
    loop_constants = _loop_constants(layout, constants)
    finals = torch.ops.rnnkit.generated_forward(
        step.forward_address, slots, layout.slot_widths, layout.previous, layout.history, list(state0),
        loop_constants, left, out, stage, weights, len(layout.stages), batch_sizes, reverse)
    return (*[slots[s] for s in layout.history], *finals), slots


class GeneratedRecurrence(torch.autograd.Function):
    """(hoisted rows, initial states, constants) -> (each state's history (N, w), each final state)."""

    @staticmethod
    def forward(ctx, step: GeneratedStep, batch_sizes: Tensor, reverse: bool, n_hoisted: int, n_states: int,
                rows: int, *tensors):
        hoisted, state0, constants = (tensors[:n_hoisted], tensors[n_hoisted:n_hoisted + n_states],
                                      tensors[n_hoisted + n_states:])
        results, slots = _forward(step, batch_sizes, reverse, rows, hoisted, state0, constants)
        ctx.step, ctx.reverse, ctx.n_states = step, reverse, n_states
        ctx.save_for_backward(batch_sizes, *slots, *state0, *constants)
        return results

    @staticmethod
    def backward(ctx, *grad_results):
        step, layout = ctx.step, ctx.step.layout
        n_slots = len(layout.slots)
        batch_sizes, *saved = ctx.saved_tensors
        slots, state0, constants = saved[:n_slots], saved[n_slots:n_slots + ctx.n_states], saved[n_slots + ctx.n_states:]
        if torch.is_grad_enabled():  # a backward that builds a graph (double backward): torch ops
            hoisted = [slots[s] for s in layout.hoisted]
            return (None,) * 6 + _differentiable_gradients(step, batch_sizes, ctx.reverse, hoisted, state0, constants,
                                                           grad_results)
        weights = [constants[p.weight] for p in layout.products]
        rows = slots[0].shape[0]
        n_history = len(layout.history)
        grad_histories, grad_finals = grad_results[:n_history], grad_results[n_history:]
        like = slots[0]
        constant_widths = [max(1, constants[k].numel()) for k in layout.pointwise_constants]
        widths = layout.slot_widths + constant_widths
        # the buffers the backward stores into first start unwritten (Layout.zeroed)
        grads = [None if b in layout.grad_alias else like.new_zeros(rows, w) if zeroed else like.new_empty(rows, w)
                 for b, (w, zeroed) in enumerate(zip(widths, layout.zeroed))]
        for b, shared in layout.grad_alias.items():  # one buffer for gradients one stage writes with one value
            grads[b] = grads[shared]
        for slot, g in zip(layout.history, grad_histories):
            if g is not None:
                grads[slot].copy_(g)
        batch = int(batch_sizes[0])
        finals = [g.contiguous() if g is not None else like.new_zeros(batch, layout.slots[s].width)
                  for g, s in zip(grad_finals, layout.history)]
        left, out, stage = layout.product_lists
        grad_state0 = torch.ops.rnnkit.generated_backward(
            step.backward_address, slots, grads, layout.slot_widths, layout.previous, layout.history,
            finals, _loop_constants(layout, constants), left, out, stage, weights, len(layout.stages), batch_sizes,
            ctx.reverse)
        grad_constants: list = [None] * len(constants)
        for p, weight in zip(layout.products, weights):  # out = left @ weight
            g = slots[p.left].t() @ grads[p.out]
            grad_constants[p.weight] = g if grad_constants[p.weight] is None else grad_constants[p.weight] + g
        for k, c in enumerate(layout.pointwise_constants):
            g = grads[n_slots + k].sum(0).reshape(constants[c].shape)
            grad_constants[c] = g if grad_constants[c] is None else grad_constants[c] + g
        grad_hoisted = [grads[s] for s in layout.hoisted]
        return (None,) * 6 + (*grad_hoisted, *grad_state0, *grad_constants)


def _differentiable_gradients(step: GeneratedStep, batch_sizes: Tensor, reverse: bool, hoisted, state0, constants,
                              grad_results) -> tuple:
    """The backward as a differentiable computation: the recurrent part run again in torch ops (the
    reference recurrence of the traced step) and differentiated with create_graph, so that a double
    backward, gradgradcheck or a Hessian-vector product gets every term."""
    inputs = [*hoisted, *state0, *constants]
    out, final = step.plan.run_recurrent(hoisted, batch_sizes.tolist(), tuple(state0), constants, reverse)
    # every state's history: the recurrent part returns h's; the others' gradients come only through finals
    n_history = len(step.layout.history)
    results, grads = [out, *final], [grad_results[0], *grad_results[n_history:]]
    pairs = [(r, g) for r, g in zip(results, grads) if g is not None and r.requires_grad]
    wanted = [i for i, t in enumerate(inputs) if t.requires_grad]
    found = torch.autograd.grad([r for r, _ in pairs], [inputs[i] for i in wanted], [g for _, g in pairs],
                                create_graph=True, allow_unused=True) if pairs and wanted else []
    gradients: list = [None] * len(inputs)
    for i, g in zip(wanted, found):
        gradients[i] = g
    return tuple(gradients)


class GeneratedKernel(Kernel):
    """``backend="generated"``: any rnnkit cell's CellEquations on its generated kernel (traced from
    ``eq.step`` with the call's weights, compiled once per cell, weight layout and dtype)."""

    name = "generated"

    def __init__(self):
        self._steps: dict = {}

    def check(self, eq, x, weights) -> None:
        check_call(x, [w for w in weights if w is not None])

    def layer(self, eq, x, batch_sizes, state0, weights, reverse):
        present = tuple(None if w is None else tuple(w.shape) for w in weights)
        key = (eq, x.dtype, x.shape[1], tuple(s.shape[1] for s in state0), present)
        if key not in self._steps:
            try:
                plan, positions = trace_equations(eq, weights, x.shape[1], [s.shape[1] for s in state0], x.dtype)
            except UnsupportedBackendError:
                raise
            except Exception as e:
                raise UnsupportedBackendError(f"{eq.name}'s step could not be traced for a generated kernel: {e}") from e
            self._steps[key] = (build_step(plan, [weights[i] for i in positions], x.shape[1],
                                           [s.shape[1] for s in state0], x.dtype), positions)
        step, positions = self._steps[key]
        return step.run(x, batch_sizes, tuple(state0), [weights[i] for i in positions], reverse)


__all__ = ["GeneratedStep", "GeneratedRecurrence", "GeneratedKernel", "for_cell", "check_call", "build_step"]
