"""A cell's layer-direction on its generated kernel: trace (trace.py), lay out (stages.py), emit C++
(emit_cpp.py), compile (build.py), run in the generic loop (rnnkit::generated_recurrence,
csrc/cpu/generated_loop.cpp), registered once as a plan (rnnkit::generated_plan: the functions' addresses
and the layout, so that a call passes tensors and a number).

Per call: the step's constants (parameters alone) and its hoisted part (x_t's, for all rows at once)
run as torch ops, recorded by autograd as usual; the recurrence is one operator whose autograd kernel
(C++, csrc/autograd.cpp: a Python autograd.Function cost about 150 us per call, most of a short layer's
time) runs the generated reverse-mode step in the same loop.  The products' weight gradients are one
product each over all rows, the pointwise constants' gradients a sum over the rows of their per-row
gradients.  A backward that builds a graph (double backward, gradgradcheck) calls
rnnkit::generated_gradients, here: the recurrent part run again in torch ops and differentiated
(``generated_gradients``), so higher orders get every term.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from ...errors import UnsupportedBackendError
from .._torch_internals import forward_ad_active, has_hooks, in_functorch_transform
from ..ops import extension
from ..differentiable import recomputed_grads
from .build import step_addresses
from .emit_cpp import emit
from .snapshot import snapshot
from .stages import Layout, lay_out
from ..base import Kernel, batch_sizes_tensor
from .trace import StepPlan, as_tuple, trace_cell, trace_equations


@dataclass
class GeneratedStep:
    """A cell's step compiled for one dtype: the plan, the loop's layout, the generated functions."""

    plan: StepPlan
    layout: Layout
    forward_address: int
    backward_address: int
    source: str
    plan_id: int  # its number in the C++ loop's registry (rnnkit::generated_plan)

    def run(self, x: Tensor, batch_sizes: Sequence[int], state0: tuple, params: Sequence[Tensor],
            reverse: bool) -> tuple[Tensor, tuple]:
        """(outputs (N, H), final states) over packed x (N, I), differentiable in x, state0 and params."""
        # (the graphs' forward called directly: nn.Module's call machinery cost as much as a small step)
        constants = as_tuple(self.plan.constants.forward(*params))
        # contiguous here, recorded by autograd: the loop's slots are these very tensors, which a double
        # backward differentiates again (a copy made inside the loop's operator would have no history)
        hoisted = tuple(h.contiguous() for h in as_tuple(self.plan.hoisted.forward(x, *constants)))
        sizes = batch_sizes_tensor(tuple(batch_sizes))
        n = len(self.layout.history)
        # one operator: its autograd kernel (csrc/autograd.cpp) keeps the slots for the backward only when
        # something needs a gradient
        results = torch.ops.rnnkit.generated_recurrence(self.plan_id, hoisted, list(state0), list(constants),
                                                        x.shape[0], sizes, bool(reverse))
        return results[0], tuple(results[n:])


_STEPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # cell -> {(dtype, I, state): GeneratedStep or why not}


def check_call(x: Tensor, params: Sequence[Tensor], compiled_as_operator: bool = False) -> None:
    """UnsupportedBackendError where a generated kernel cannot run this call.  ``compiled_as_operator``:
    under torch.compile the call is one rnnkit::fused_layer (kernels/opaque.py), which finds the step when
    it runs: rnnkit's cells.  (Read on every call: the tests ask ``is_cpu`` and compare dtypes by identity,
    as a ``device`` object per tensor cost more here than the rest of the checks.)"""
    if not x.is_cpu:
        raise UnsupportedBackendError(f"generated kernels run on the CPU, got input on {x.device}")
    dtype = x.dtype
    if dtype is not torch.float32 and dtype is not torch.float64:
        raise UnsupportedBackendError(f"generated kernels run in float32 or float64, got {dtype}")
    if in_functorch_transform() or forward_ad_active():
        raise UnsupportedBackendError("generated kernels do not run under torch.func transforms or forward-mode AD "
                                      "(no vmap or jvp rule); use backend='auto' or 'reference'")
    for p in params:
        if p.dtype is not dtype or not p.is_cpu:
            raise UnsupportedBackendError("generated kernels need the cell's parameters in the input's dtype, on its "
                                          "device")
    if (torch.compiler.is_compiling() and not compiled_as_operator) or torch.compiler.is_exporting() \
            or torch.jit.is_tracing():
        # the loop calls the generated code by its address in this process: a traced or exported graph
        # would carry that address to another process
        raise UnsupportedBackendError("generated kernels run eagerly, not while torch.compile, torch.export or "
                                      "torch.jit.trace record a graph; use backend='auto' or 'reference'")
    if torch.is_autocast_enabled("cpu"):
        raise UnsupportedBackendError("generated kernels run in one dtype, not under autocast; use backend='auto' "
                                      "or 'reference'")
    extension.load()  # the loop: rnnkit._C (UnsupportedBackendError where it is not built)


def for_cell(cell: nn.Module, x: Tensor, input_size: int) -> tuple[GeneratedStep, list]:
    """``cell``'s generated step for ``x``'s dtype (traced and compiled on first use, the library cached
    on disk) and the parameters it takes, or UnsupportedBackendError saying why there is none."""
    now = snapshot(cell)
    check_call(x, now.parameters)
    known = _STEPS.setdefault(cell, {})
    key = (x.dtype, input_size, now.key)  # the step's frozen Python state: snapshot.py
    if key not in known:
        if now.has_buffers:
            raise UnsupportedBackendError("the cell holds buffers, which a generated kernel would freeze at their "
                                          "values of its first call; use backend='auto' or 'reference'")
        if has_hooks(cell):  # (not kept: the hooks may go.  Recurrent runs a hooked cell on its loop first)
            raise UnsupportedBackendError("the cell (or a module inside it) has hooks, or global module hooks are "
                                          "registered: a step traced from it would run them once, while tracing, "
                                          "not at every step")
        try:
            known[key] = _compile(cell, x.dtype, input_size)
        except UnsupportedBackendError as e:  # kept: tracing again at every call cost ~1.5 ms a call
            known[key] = str(e)
    step = known[key]
    if isinstance(step, str):  # the reason this cell, as it is, has no generated kernel
        raise UnsupportedBackendError(step)
    return step, now.parameters


def _compile(cell: nn.Module, dtype: torch.dtype, input_size: int) -> GeneratedStep:
    # Tracing runs the cell: a cell that draws random numbers (dropout in training) must not draw the
    # caller's, or one seed would give the calls that generate (or fail to) other numbers than the rest.
    with torch.random.fork_rng(devices=[]):
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
    """The generated step of a traced plan (its parameters as examples).  Built outside inference mode
    whatever the call's: the backward is recorded through autograd, which inference mode turns off (a
    step first built under ``torch.inference_mode()`` had a backward that lost most of its terms, and
    kept it for the later calls that train)."""
    with torch.inference_mode(False), torch.enable_grad():
        constants = as_tuple(plan.constants(*params))
        hoisted = as_tuple(plan.hoisted(torch.zeros(2, input_size, dtype=dtype), *constants))
        layout = lay_out(plan, [h.shape[1] for h in hoisted], list(state_widths), list(constants))
        for k in layout.pointwise_constants:
            if len(layout.constant_shapes[k]) > 1 and layout.constant_shapes[k][0] != 1:
                raise UnsupportedBackendError(f"the step reads a constant of shape {layout.constant_shapes[k]} "
                                              "pointwise; generated kernels broadcast vectors and numbers only")
        source = emit(layout, dtype)
        forward_address, backward_address = step_addresses(source)
        left, out, stage, weight = layout.product_lists
        plan_id = torch.ops.rnnkit.generated_plan(
            forward_address, backward_address, layout.hoisted, layout.slot_widths, layout.previous, layout.history,
            layout.pointwise_constants, layout.gradient_starts, layout.grad_alias_list, left, out, stage,
            weight, len(layout.stages) - layout.prologue, layout.prologue)
        step = GeneratedStep(plan, layout, forward_address, backward_address, source, plan_id)
        _BY_PLAN.setdefault(plan_id, step)
        return step


# plan number -> a step of that plan (equal plans share a number: the same generated code and layout), for
# the differentiable backward (rnnkit::generated_gradients).  Held for the process's life, as the C++
# registry holds the plans: an autograd graph may outlive the cell whose step made it.
_BY_PLAN: dict = {}


def generated_gradients(plan: int, grad_results, hoisted, state0, constants, batch_sizes: Tensor, reverse: bool):
    """rnnkit::generated_gradients (CompositeImplicitAutograd): the loop's gradients as a differentiable
    computation, zeros where an input has none: the recurrent part run again in torch ops (the reference
    recurrence of the traced step) and differentiated (differentiable.recomputed_grads), so that a double
    backward, gradgradcheck or a Hessian-vector product gets every term."""
    step = _BY_PLAN[plan]
    n_hoisted, n_states = len(hoisted), len(state0)

    def recurrence(_, *inputs):
        out, final = step.plan.run_recurrent(inputs[:n_hoisted], batch_sizes.tolist(),
                                             tuple(inputs[n_hoisted:n_hoisted + n_states]),
                                             inputs[n_hoisted + n_states:], reverse)
        return (out, *final)

    inputs = (*hoisted, *state0, *constants)
    # every state's history: the recurrent part returns h's; the others' gradients come only through finals
    n_history = len(step.layout.history)
    grads = (grad_results[0], *grad_results[n_history:])
    found = recomputed_grads(recurrence, None, inputs, [t.requires_grad for t in inputs], grads)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, found)]


class GeneratedKernel(Kernel):
    """``backend="generated"``: any rnnkit cell's CellEquations on its generated kernel (traced from
    ``eq.step`` with the call's weights, compiled once per cell, weight layout and dtype)."""

    name = "generated"
    fresh_states = True  # the loop operator's own results; its autograd saves its inputs and slots, never them
    # What backend="auto" and "fused" run on it: every rnnkit cell besides torch.nn's families (which the C++
    # operators run).  Measured against the hand-written numba kernels, forward and forward+backward, on the
    # bench grid's four sizes ((100,1,32,32) to (50,64,512,512), 2 threads, AVX2 EPYC Zen 3, 2026-12-07,
    # benchmarks/generated_vs_hand.py, benchmarks/results/generated-vs-hand-avx2.json; generated/numba
    # time): layernorm_lstm 0.76-0.99, layernorm_gru 0.76-0.85, indrnn_relu 0.91-1.01, indrnn_tanh
    # 0.93-1.08, min_gru 0.89-1.09, min_lstm 0.22-0.65, peephole_lstm 0.37-0.91, gru_reset_before 0.50-1.05:
    # within the 10% everywhere (an earlier run of the same code but for min_lstm's log: the same ranges
    # within 0.04, layernorm_lstm's highest 1.03).  On the AVX-512 EPYC Zen 4 (session 12,
    # generated-vs-hand-avx512.json, the numba kernels' last tree with this session's generator and loop):
    # layernorm_lstm 0.72-1.03, layernorm_gru 0.59-0.86, peephole_lstm 0.29-0.87, gru_reset_before
    # 0.48-0.95, min_lstm 0.13-0.62, min_gru 0.97-1.06, indrnn 0.91-1.05 but the forward at (200,16,64,64),
    # 1.11-1.26 over four runs (a 0.4 ms call, mostly its hoisted product and fixed costs; forward+backward
    # there 0.90-1.10).
    auto_cells = frozenset({"min_lstm", "min_gru", "peephole_lstm", "gru_reset_before", "layernorm_lstm",
                            "layernorm_gru", "indrnn_relu", "indrnn_tanh"})

    def __init__(self):
        self._steps: dict = {}

    def check(self, eq, x, weights) -> None:
        check_call(x, [w for w in weights if w is not None], compiled_as_operator=True)

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


__all__ = ["GeneratedStep", "GeneratedKernel", "for_cell", "check_call", "build_step", "generated_gradients"]
