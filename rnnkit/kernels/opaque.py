"""A fused kernel as one opaque operator of torch's dispatcher, for torch.compile (issue 17).

dynamo cannot look into numba code, and without this a layer under ``torch.compile`` is a graph
break (``torch.compile(fullgraph=True)`` refuses it).  While dynamo traces, ``kernels.select`` wraps
the fused kernel it picked in ``OpaqueKernel``, whose ``layer`` is one call of the operator
``rnnkit::fused_layer``: dynamo records it as a node of the graph, shapes come from its fake
implementation, and the compiled graph calls the fused kernel at run time.  The backward is a
second operator, ``rnnkit::fused_layer_backward``, which runs the layer again with autograd on and
takes its gradients: the fused kernel's own backward, at the cost of a second forward (the saved
activations of the first live inside the numba kernel's autograd.Function, which an operator's
outputs cannot carry).  A gradient of that gradient inside a compiled graph is refused with a
clear error (inductor refuses it for every model); eagerly it works (kernels/differentiable.py).

Covers every cell of rnnkit.cells (the operator names its cell; the cell's ``weights_type`` rebuilds
its weights from the list the schema carries): rnnkit.RNN/LSTM/GRU and ``Recurrent`` over rnnkit's
cells.  A user's cell is rnnkit::cell_layer (opaque_cell.py); the options of ``Recurrent`` that act
inside the step run eagerly: a graph break (rnnkit.export.eager_call).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..cells import CellEquations
from ..export import run_eagerly
from ._torch_internals import autograd_inside_operator
from .base import Kernel


def _every_cell() -> dict:
    """name -> CellEquations, for every cell of rnnkit.cells (the names are unique: checked here)."""
    from .. import cells
    found = {}
    for eq in vars(cells).values():
        if isinstance(eq, CellEquations) and found.setdefault(eq.name, eq) is not eq:
            raise RuntimeError(f"rnnkit.cells holds two cells named {eq.name!r}: the operator names a cell by it")
    return found


EQUATIONS = _every_cell()  # the cells the operator runs, by the name its schema carries


def _kernel(backend: str) -> Kernel:
    from . import BACKENDS  # the registry imports this module
    return BACKENDS[backend]


def _run(backend, cell, x, batch_sizes, state0, weights, present, reverse):
    eq = EQUATIONS[cell]
    given = iter(weights)
    cell_weights = eq.weights_type(*[next(given) if p else None for p in present])
    if backend in ("auto", "fused"):  # chosen for this call, as a layer chooses eagerly (the TorchScript twin's)
        from . import select
        kernel = select(backend, eq, x, cell_weights)
    else:
        kernel = _kernel(backend)
    return kernel.layer(eq, x, batch_sizes, tuple(state0), cell_weights, reverse)


# The weights travel as the present tensors plus a mask of the weights_type fields they fill: a list
# holding None would be one opaque argument to the custom op's autograd, which would get no gradient.
@torch.library.custom_op("rnnkit::fused_layer", mutates_args=())
def fused_layer(backend: str, cell: str, x: Tensor, batch_sizes: list[int], state0: list[Tensor],
                weights: list[Tensor], present: list[bool], reverse: bool) -> list[Tensor]:
    """[output (N, H_out), *final state]: one layer-direction of the cell named ``cell`` on the kernel
    named ``backend`` (or the one "auto" or "fused" picks for the call); ``weights`` fill the fields of
    the cell's ``weights_type`` that ``present`` marks."""
    with torch.no_grad():  # an operator's outputs carry no graph: the backward is the operator below
        out, state = _run(backend, cell, x, batch_sizes, state0, weights, present, reverse)
    return _unaliased([out, *state], (x, *state0, *weights))


@fused_layer.register_fake
def _(backend, cell, x, batch_sizes, state0, weights, present, reverse):
    # each step outputs its h, state0[0]'s width (the projection's with proj_size)
    return [x.new_empty(x.shape[0], state0[0].shape[1])] + [s.new_empty(s.shape) for s in state0]


@torch.library.custom_op("rnnkit::fused_layer_backward", mutates_args=())
def fused_layer_backward(backend: str, cell: str, x: Tensor, batch_sizes: list[int], state0: list[Tensor],
                         weights: list[Tensor], present: list[bool], reverse: bool,
                         grads: list[Tensor]) -> list[Tensor]:
    """The gradients of fused_layer's tensor arguments (x, then state0's, then weights'), given those
    of its outputs: the layer run again with autograd on, through the kernel's backward."""
    leaves = [t.detach().requires_grad_() for t in (x, *state0, *weights)]
    arity = len(state0)
    with autograd_inside_operator(), torch.enable_grad():  # the kernel's torch ops recorded too
        out, state = _run(backend, cell, leaves[0], batch_sizes, leaves[1:1 + arity], leaves[1 + arity:], present,
                          reverse)
        got = torch.autograd.grad([out, *state], leaves, grads, allow_unused=True)
    # contiguous, as the fake kernel says: a weight's gradient taken through its transpose (a generated
    # kernel's product reads W^T) comes out transposed
    return _unaliased([(torch.zeros_like(t) if g is None else g).contiguous() for g, t in zip(got, leaves)],
                      (x, *state0, *weights, *grads))


def _unaliased(outputs, inputs):
    """``outputs``, each one sharing memory with an input or an earlier output copied (an operator's
    outputs may alias nothing: a kernel may hand back an incoming gradient or one buffer twice)."""
    taken = {t.untyped_storage().data_ptr() for t in inputs if t is not None}
    result = []
    for t in outputs:
        ptr = t.untyped_storage().data_ptr()
        if ptr in taken:
            t = t.clone()
            ptr = t.untyped_storage().data_ptr()
        taken.add(ptr)
        result.append(t)
    return result


@fused_layer_backward.register_fake
def _(backend, cell, x, batch_sizes, state0, weights, present, reverse, grads):
    return [t.new_empty(t.shape) for t in (x, *state0, *weights)]


def _setup_context(ctx, inputs, output):
    backend, cell, x, batch_sizes, state0, weights, present, reverse = inputs
    ctx.args = (backend, cell, batch_sizes, present, reverse, len(state0))
    ctx.output_shapes = [tuple(o.shape) for o in output]
    ctx.save_for_backward(x, *state0, *weights)


def _backward(ctx, grads):
    backend, cell, batch_sizes, present, reverse, arity = ctx.args
    x, *saved = ctx.saved_tensors
    state0, weights = saved[:arity], saved[arity:]
    grads = [x.new_zeros(shape) if g is None else g for g, shape in zip(grads, ctx.output_shapes)]
    dx, *rest = fused_layer_backward(backend, cell, x, batch_sizes, state0, weights, present, reverse, grads)
    return None, None, dx, None, rest[:arity], rest[arity:], None, None


fused_layer.register_autograd(_backward, setup_context=_setup_context)


def _refuse_double_backward(ctx, *grads):
    raise RuntimeError(
        "rnnkit: a gradient of a gradient through a layer inside torch.compile is not supported (inductor "
        "refuses it for any model); compute it eagerly, where rnnkit's layers differentiate at every order")


fused_layer_backward.register_autograd(_refuse_double_backward, setup_context=lambda ctx, inputs, output: None)


class OpaqueKernel(Kernel):
    """``kernel`` (a fused kernel of one of rnnkit's cells) as the operator rnnkit::fused_layer."""

    def __init__(self, kernel: Kernel):
        self.kernel, self.name = kernel, kernel.name

    def check(self, eq, x, weights) -> None:
        self.kernel.check(eq, x, weights)

    def layer(self, eq, x, batch_sizes, state0, weights, reverse):
        out, *state = fused_layer(self.kernel.name, eq.name, x, [int(b) for b in batch_sizes], list(state0),
                                  [w for w in weights if w is not None], [w is not None for w in weights],
                                  bool(reverse))
        return out, tuple(state)


class EagerKernel(Kernel):
    """``kernel`` run eagerly, a graph break: the reference loop while dynamo traces.  Traced, its
    time loop would be unrolled into the graph, one copy of the cell's ops per step, compiled
    again for every new length (minutes for long sequences)."""

    def __init__(self, kernel: Kernel):
        self.kernel, self.name = kernel, kernel.name

    def check(self, eq, x, weights) -> None:
        self.kernel.check(eq, x, weights)

    def layer(self, eq, x, batch_sizes, state0, weights, reverse):
        return run_eagerly(self.kernel.layer, eq, x, batch_sizes, state0, weights, reverse)


def for_compile(kernel: Kernel, eq, weights) -> Kernel:
    """The kernel to run while dynamo traces: the C++ operators as they are, a fused kernel of one of
    rnnkit's cells as the operator rnnkit::fused_layer (in the graph); the reference loop, and a cell
    unknown to rnnkit.cells, eagerly (a graph break)."""
    if kernel.name == "ops":
        from .ops import extension
        # already operators with fake kernels: traced as they are, once loaded (loading imports a module,
        # which dynamo refuses to trace: the first call runs eagerly and loads it)
        return kernel if extension.ready() else EagerKernel(kernel)
    if kernel.name != "reference" and EQUATIONS.get(eq.name) is eq and type(weights) is eq.weights_type:
        return OpaqueKernel(kernel)
    return EagerKernel(kernel)


__all__ = ["EQUATIONS", "fused_layer", "fused_layer_backward", "OpaqueKernel", "EagerKernel", "for_compile"]
