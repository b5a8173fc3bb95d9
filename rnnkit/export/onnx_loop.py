"""rnnkit.Recurrent under the TorchScript-based ONNX exporter (``torch.onnx.export(..., dynamo=False)``): each
layer-direction's time loop as one ONNX ``Loop``, so the exported model takes any batch size and length.

That exporter traces the model with torch.jit: a Python loop over time would be unrolled, its length baked
into the graph (an input of another length would then be read wrongly, silently).  A loop written in
TorchScript is not unrolled: the tracer records a call of it as its graph, ``prim::Loop`` included, which the
exporter writes as ONNX ``Loop``.  So each layer-direction

- traces one step by itself, as a function of (the step's input, the state, the weights), the weights
  passed in rather than read from the module, so the step's graph holds no parameter of its own
  (``torch.jit.trace``; the tracer does not nest, so the model's trace is paused meanwhile);
- runs it in ``_loop_over_time``, a TorchScript loop compiled around that step, on the layer's input.

The step is the cell's own: ``CellEquations.recur`` for rnnkit's cells (their input projections, which hold
no time dependence, done for all steps at once before the loop, as every backend does), the cell's forward
for a user's cell (its parameters and buffers passed in, swapped into the module while it is traced).  The numbers
are the reference loop's.  A layer norm's ``normalized_shape`` is read from a tensor's size in most cells;
the tracer would record that size as a value, which ONNX's LayerNormalization refuses, so it is made a
constant while the step and the projections are traced (it is one: the norm's gain has that shape).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ..kernels._torch_internals import module_tables, tracing_paused

_EXAMPLE_BATCH = 2  # the traced step's sizes stay symbolic; 2, not 1, so no size-1 broadcast is recorded


class _ConstantNormalizedShape(TorchFunctionMode):
    """Makes each ``F.layer_norm``'s ``normalized_shape`` plain ints while a step is traced (see the module doc)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.layer_norm:
            args = list(args)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)  # (a size made a constant: meant)
                if len(args) > 1:
                    args[1] = tuple(int(size) for size in args[1])
                elif "normalized_shape" in kwargs:
                    kwargs["normalized_shape"] = tuple(int(size) for size in kwargs["normalized_shape"])
        return func(*args, **kwargs)


def _compile_loop(step):
    """A TorchScript function running ``step`` over the first axis of its input (see the module doc)."""

    def loop_over_time(inputs: Tensor, state: List[Tensor], weights: List[Tensor]):
        outputs: List[Tensor] = []
        for t in range(inputs.size(0)):
            state = step(inputs[t], state, weights)  # noqa: F821 (the traced step, from the closure)
            outputs.append(state[0])
        return torch.stack(outputs), state

    return torch.jit.script(loop_over_time)


def _scripted_loop(step_fn, inputs: Tensor, state0: tuple, weights: List[Tensor]):
    """``step_fn(input_t, state list, weights list) -> state list`` traced on examples shaped as the layer's,
    and the TorchScript loop around it."""
    with tracing_paused(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer notes concern rnnkit's code, not the caller's
        examples = (torch.zeros((_EXAMPLE_BATCH,) + tuple(inputs.shape[2:]), dtype=inputs.dtype),
                    [torch.zeros((_EXAMPLE_BATCH,) + tuple(s.shape[1:]), dtype=s.dtype) for s in state0],
                    [torch.zeros(w.shape, dtype=w.dtype) for w in weights])
        with _ConstantNormalizedShape():
            traced = torch.jit.trace(step_fn, examples, strict=False, check_trace=False)
        return _compile_loop(traced)


def _run(loop, inputs: Tensor, state0: tuple, weights: List[Tensor], reverse: bool):
    """The loop over ``inputs`` (T, B, *), read backwards in reverse; (outputs (T, B, H) in input order, final state)."""
    if reverse:
        inputs = inputs.flip(0)
    outputs, final = loop(inputs, list(state0), weights)
    return (outputs.flip(0) if reverse else outputs), tuple(final)


def equations_direction(eq, weights, x: Tensor, state0: tuple, reverse: bool = False):
    """One layer-direction of an rnnkit cell over padded ``x`` (T, B, I): its projections for all steps, then
    the loop over ``eq.recur``.  Returns (outputs (T, B, H), final state), as rnnkit.export.scan's twin."""
    steps, batch = x.shape[0], x.shape[1]
    with _ConstantNormalizedShape():
        gx = eq.project(x.reshape(steps * batch, x.shape[2]), weights)  # (T*B, G): all steps at once
    gx = gx.reshape(steps, batch, gx.shape[-1])  # (T, B, G)
    present = [k for k, w in enumerate(weights) if w is not None]
    weights_type, fields = type(weights), len(weights)

    def step(g: Tensor, state: List[Tensor], given: List[Tensor]) -> List[Tensor]:
        full = [None] * fields
        for k, w in zip(present, given):
            full[k] = w
        return list(eq.recur(g, tuple(state), weights_type(*full)))

    given = [weights[k] for k in present]
    return _run(_scripted_loop(step, gx, state0, given), gx, state0, given, reverse)


@contextlib.contextmanager
def _holding(cell, tensor_of: dict):
    """``cell``'s parameters and buffers replaced, name by name, by ``tensor_of[name]`` (restored after).
    torch.func.functional_call does this, but refuses to run under torch.jit's tracer."""
    swapped = []
    try:
        for name, tensor in tensor_of.items():
            owner_name, _, leaf = name.rpartition(".")
            _, parameters, buffers, _ = module_tables(cell.get_submodule(owner_name))
            table = parameters if leaf in parameters else buffers
            swapped.append((table, leaf, table[leaf]))
            table[leaf] = tensor
        yield
    finally:
        for table, leaf, original in reversed(swapped):
            table[leaf] = original


def cell_direction(cell, x: Tensor, state0: tuple, reverse: bool = False):
    """One layer-direction of a user's cell (``cell(x_t, hx) -> h_t or (h_t, ...)``) over padded ``x`` (T, B, I).
    Its parameters and buffers are the step's inputs: each distinct tensor once, under all its names (tied)."""
    named = list(cell.named_parameters(remove_duplicate=False)) + list(cell.named_buffers(remove_duplicate=False))
    tensors, index_of = [], {}
    for _, tensor in named:
        if id(tensor) not in index_of:
            index_of[id(tensor)] = len(tensors)
            tensors.append(tensor)
    slot_of_name = {name: index_of[id(tensor)] for name, tensor in named}

    def step(x_t: Tensor, state: List[Tensor], given: List[Tensor]) -> List[Tensor]:
        with _holding(cell, {name: given[slot] for name, slot in slot_of_name.items()}):
            result = cell(x_t, tuple(state) if len(state) > 1 else state[0])
        return [result] if isinstance(result, Tensor) else list(result)

    return _run(_scripted_loop(step, x, state0, tensors), x, state0, tensors, reverse)


__all__ = ["equations_direction", "cell_direction"]
