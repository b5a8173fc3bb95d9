"""A user's cell's layer-direction as one opaque operator of torch's dispatcher, for torch.compile.

kernels/opaque.py does this for rnnkit's own cells, which the operator names by their equations.  A
user's cell has no name the schema could carry, so the operator ``rnnkit::cell_layer`` takes a number,
``cell_key(cell)``: the cell's entry in this process's registry of cells seen by torch.compile.  dynamo
evaluates ``cell_key`` while it traces (as ``torch.compiler.assume_constant_result`` marks it) and records the number
in the graph, with a guard on the cell module's identity: a cell replaced in the model is traced again
under its own number.  The cell's parameters (``named_parameters()`` order) are the operator's inputs, so
autograd reaches them; its buffers and plain attributes are read from the cell when it runs.

At run time the operator runs the layer-direction as Recurrent runs it eagerly: on the kernel generated
from the cell's step (kernels/generator/), or on the reference loop where ``backend`` and the cell allow
(``user_cell_layer``).  The backward is a second operator that runs the layer again with autograd on and
takes its gradients (as rnnkit::fused_layer_backward), from the random number state the forward started
with, so a cell that draws random numbers (dropout in training) draws the same ones again.  A gradient of
that gradient inside a compiled graph is refused with a clear error, as for rnnkit's cells.  The graph
holds the number, not the cell: a compiled model runs in the process that compiled it (what torch.compile
is), not from a saved graph (torch.export handles a user's cell with a scan: rnnkit/export/scan.py).
"""
from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

from ..errors import UnsupportedBackendError
from ._torch_internals import autograd_inside_operator, constant_for_dynamo
from .opaque import _refuse_double_backward, _unaliased

_CELLS: "dict[int, weakref.ref]" = {}  # number -> the cell (weakly: the registry keeps no model alive)
_NUMBERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # cell -> its number


@constant_for_dynamo  # (torch.compiler.assume_constant_result: _torch_internals.py)
def cell_key(cell: nn.Module) -> int:
    """``cell``'s number in this process's registry (given on first sight)."""
    number = _NUMBERS.get(cell)
    if number is None:
        number = _NUMBERS[cell] = len(_CELLS) + 1
        _CELLS[number] = weakref.ref(cell)
    return number


def _cell(number: int) -> nn.Module:
    found = _CELLS.get(number)
    cell = None if found is None else found()
    if cell is None:
        raise RuntimeError(f"rnnkit::cell_layer: the cell this compiled graph was traced with (number {number}) no "
                           "longer exists in this process; compile the model again")
    return cell


def user_cell_layer(cell: nn.Module, backend: str, x: Tensor, batch_sizes, state0: tuple, params: list,
                    reverse: bool) -> tuple:
    """(outputs (N, H), final states) of ``cell`` over packed ``x`` with its parameters ``params``
    (``named_parameters()`` order), as Recurrent runs a user's cell eagerly: the generated kernel, else (with
    ``backend="auto"`` or ``"reference"``) the reference loop."""
    from ..recurrent import scan
    from .generator.layer import for_cell

    if backend in ("auto", "fused", "generated"):
        try:
            step, _ = for_cell(cell, x, x.shape[1])
        except UnsupportedBackendError as e:
            if backend != "auto":
                raise UnsupportedBackendError(f"backend {backend!r} cannot run {type(cell).__name__}: {e}; use "
                                              "backend='auto' or 'reference'") from e
        else:
            return step.run(x, batch_sizes, tuple(state0), params, reverse)
    elif backend != "reference":
        raise UnsupportedBackendError(f"backend {backend!r} cannot run {type(cell).__name__} (a user cell runs on a "
                                      "generated kernel or the reference loop); use backend='auto' or 'reference'")
    named = list(cell.named_parameters())
    own = len(named) == len(params) and all(p is q for (_, p), q in zip(named, params))
    given = {name: p for (name, _), p in zip(named, params)}

    def step_of(x_t, state):
        hx = state if len(state) > 1 else state[0]
        # (functional_call costs tens of us a step: only where the parameters are not the cell's own)
        result = cell(x_t, hx) if own else torch.func.functional_call(cell, given, (x_t, hx))
        return (result,) if isinstance(result, Tensor) else tuple(result)

    return scan(step_of, x, batch_sizes, tuple(state0), reverse)


@torch.library.custom_op("rnnkit::cell_layer", mutates_args=())
def cell_layer(cell: int, backend: str, x: Tensor, batch_sizes: list[int], state0: list[Tensor],
               params: list[Tensor], reverse: bool) -> list[Tensor]:
    """[output (N, H), *final state, the random number state it started from]: one layer-direction of the user's
    cell numbered ``cell`` (``cell_key``), with the parameters ``params``."""
    rng_state = torch.get_rng_state()
    with torch.no_grad():  # an operator's outputs carry no graph: the backward is the operator below
        out, state = user_cell_layer(_cell(cell), backend, x, batch_sizes, state0, params, reverse)
    return _unaliased([out, *state], (x, *state0, *params)) + [rng_state]


@cell_layer.register_fake
def _(cell, backend, x, batch_sizes, state0, params, reverse):
    # each step outputs its h, state0[0]'s width; the random number state is the CPU generator's bytes
    return ([x.new_empty(x.shape[0], state0[0].shape[1])] + [s.new_empty(s.shape) for s in state0]
            + [torch.empty(torch.default_generator.get_state().shape, dtype=torch.uint8)])


@torch.library.custom_op("rnnkit::cell_layer_backward", mutates_args=())
def cell_layer_backward(cell: int, backend: str, x: Tensor, batch_sizes: list[int], state0: list[Tensor],
                        params: list[Tensor], reverse: bool, rng_state: Tensor, grads: list[Tensor]) -> list[Tensor]:
    """The gradients of cell_layer's tensor arguments (x, then state0's, then params'), given those of its
    outputs: the layer run again with autograd on, from the random number state the forward started with."""
    leaves = [t.detach().requires_grad_() for t in (x, *state0, *params)]
    arity = len(state0)
    with torch.random.fork_rng(devices=[]), autograd_inside_operator(), torch.enable_grad():
        torch.set_rng_state(rng_state)
        out, state = user_cell_layer(_cell(cell), backend, leaves[0], batch_sizes, leaves[1:1 + arity],
                                     leaves[1 + arity:], reverse)
        got = torch.autograd.grad([out, *state], leaves, grads, allow_unused=True)
    return _unaliased([(torch.zeros_like(t) if g is None else g).contiguous() for g, t in zip(got, leaves)],
                      (x, *state0, *params, *grads))


@cell_layer_backward.register_fake
def _(cell, backend, x, batch_sizes, state0, params, reverse, rng_state, grads):
    return [t.new_empty(t.shape) for t in (x, *state0, *params)]


def _setup_context(ctx, inputs, output):
    cell, backend, x, batch_sizes, state0, params, reverse = inputs
    ctx.args = (cell, backend, batch_sizes, reverse, len(state0))
    ctx.output_shapes = [tuple(o.shape) for o in output[:-1]]
    ctx.save_for_backward(x, *state0, *params, output[-1])


def _backward(ctx, grads):
    cell, backend, batch_sizes, reverse, arity = ctx.args
    x, *saved = ctx.saved_tensors
    state0, params, rng_state = saved[:arity], saved[arity:-1], saved[-1]
    grads = [x.new_zeros(shape) if g is None else g for g, shape in zip(grads[:-1], ctx.output_shapes)]
    dx, *rest = cell_layer_backward(cell, backend, x, batch_sizes, state0, params, reverse, rng_state, grads)
    return None, None, dx, None, rest[:arity], rest[arity:], None


cell_layer.register_autograd(_backward, setup_context=_setup_context)


cell_layer_backward.register_autograd(_refuse_double_backward, setup_context=lambda ctx, inputs, output: None)


def compiled_runner(cell: nn.Module, backend: str):
    """Recurrent's runner of ``cell`` while dynamo traces: one rnnkit::cell_layer per layer-direction."""
    key = cell_key(cell)
    params = [p for _, p in cell.named_parameters()]

    def run(x, batch_sizes, state0, reverse, keep):
        out, *rest = cell_layer(key, backend, x, [int(b) for b in batch_sizes], list(state0), params, bool(reverse))
        return out, tuple(rest[:-1])

    return run


__all__ = ["cell_key", "cell_layer", "cell_layer_backward", "compiled_runner", "user_cell_layer"]
