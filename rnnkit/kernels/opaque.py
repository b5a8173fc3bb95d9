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

Covers torch.nn's families (RNN tanh/relu, LSTM with or without projection, GRU), the cells of
rnnkit.RNN/LSTM/GRU; ``Recurrent``'s other cells stay a graph break under torch.compile.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..cells import ELMAN_RELU, ELMAN_TANH, GRU_EQUATIONS, LSTM_EQUATIONS, CellWeights
from ..export import run_eagerly
from .base import Kernel

FAMILIES = {eq.name: eq for eq in (ELMAN_TANH, ELMAN_RELU, LSTM_EQUATIONS, GRU_EQUATIONS)}


def _kernel(backend: str) -> Kernel:
    from . import BACKENDS  # the registry imports this module
    return BACKENDS[backend]


# The operators' tensor arguments, flat (optional where a layer may lack one): x, the states, then
# the weights as CellWeights names them.
TENSORS = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr")


def _run(backend, cell, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse):
    state0 = (h0,) if c0 is None else (h0, c0)
    return _kernel(backend).layer(FAMILIES[cell], x, batch_sizes, state0, CellWeights(w_ih, w_hh, b_ih, b_hh, w_hr),
                                  reverse)


@torch.library.custom_op("rnnkit::fused_layer", mutates_args=())
def fused_layer(backend: str, cell: str, x: Tensor, batch_sizes: list[int], h0: Tensor, c0: Optional[Tensor],
                w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor], w_hr: Optional[Tensor],
                reverse: bool) -> list[Tensor]:
    """[output (N, H_out), h_n, (c_n)]: one layer-direction on the kernel named ``backend``."""
    with torch.no_grad():  # an operator's outputs carry no graph: the backward is the operator below
        out, state = _run(backend, cell, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse)
    return _unaliased([out, *state], (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr))


@fused_layer.register_fake
def _(backend, cell, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse):
    # each step outputs its h (h0's width: the projection's with proj_size)
    return [x.new_empty(x.shape[0], h0.shape[1]), h0.new_empty(h0.shape)] + ([] if c0 is None else [c0.new_empty(c0.shape)])


@torch.library.custom_op("rnnkit::fused_layer_backward", mutates_args=())
def fused_layer_backward(backend: str, cell: str, x: Tensor, batch_sizes: list[int], h0: Tensor,
                         c0: Optional[Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                         b_hh: Optional[Tensor], w_hr: Optional[Tensor], reverse: bool,
                         grads: list[Tensor]) -> list[Tensor]:
    """The gradients of fused_layer's present tensor arguments (in TENSORS order, the absent ones left
    out), given those of its outputs: the layer run again with autograd on, through the kernel's backward."""
    tensors = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    leaves = [None if t is None else t.detach().requires_grad_() for t in tensors]
    present = [t for t in leaves if t is not None]
    with torch.enable_grad():
        out, state = _run(backend, cell, *leaves[:1], batch_sizes, *leaves[1:], reverse)
        got = torch.autograd.grad([out, *state], present, grads, allow_unused=True)
    return _unaliased([torch.zeros_like(t) if g is None else g for g, t in zip(got, present)], (*tensors, *grads))


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
def _(backend, cell, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, grads):
    return [t.new_empty(t.shape) for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr) if t is not None]


def _setup_context(ctx, inputs, output):
    backend, cell, x, batch_sizes, *tensors, reverse = inputs
    ctx.args = (backend, cell, batch_sizes, reverse, [t is not None for t in tensors])
    ctx.output_shapes = [tuple(o.shape) for o in output]
    ctx.save_for_backward(x, *[t for t in tensors if t is not None])


def _backward(ctx, grads):
    backend, cell, batch_sizes, reverse, present = ctx.args
    x, *saved = ctx.saved_tensors
    it = iter(saved)
    tensors = [next(it) if p else None for p in present]  # h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr
    grads = [x.new_zeros(shape) if g is None else g for g, shape in zip(grads, ctx.output_shapes)]
    got = iter(fused_layer_backward(backend, cell, x, batch_sizes, *tensors, reverse, grads))
    dx = next(got)
    dtensors = [next(got) if p else None for p in present]
    return (None, None, dx, None, *dtensors, None)


fused_layer.register_autograd(_backward, setup_context=_setup_context)


def _refuse_double_backward(ctx, *grads):
    raise RuntimeError(
        "rnnkit: a gradient of a gradient through a layer inside torch.compile is not supported (inductor "
        "refuses it for any model); compute it eagerly, where rnnkit's layers differentiate at every order")


fused_layer_backward.register_autograd(_refuse_double_backward, setup_context=lambda ctx, inputs, output: None)


class OpaqueKernel(Kernel):
    """``kernel`` (a fused kernel of torch.nn's families) as the operator rnnkit::fused_layer."""

    def __init__(self, kernel: Kernel):
        self.kernel, self.name = kernel, kernel.name

    def check(self, eq, x, weights) -> None:
        self.kernel.check(eq, x, weights)

    def layer(self, eq, x, batch_sizes, state0, weights, reverse):
        c0 = state0[1] if len(state0) > 1 else None
        out, *state = fused_layer(self.kernel.name, eq.name, x, [int(b) for b in batch_sizes], state0[0], c0,
                                  *weights, bool(reverse))
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
    """The kernel to run while dynamo traces: a fused kernel of torch.nn's families as the operator
    rnnkit::fused_layer (in the graph); any other kernel eagerly (a graph break)."""
    if kernel.name == "ops":
        from .ops import extension
        # already operators with fake kernels: traced as they are, once loaded (loading imports a module,
        # which dynamo refuses to trace: the first call runs eagerly and loads it)
        return kernel if extension.ready() else EagerKernel(kernel)
    if FAMILIES.get(eq.name) is eq and type(weights) is CellWeights and kernel.name == "numba":
        return OpaqueKernel(kernel)
    return EagerKernel(kernel)


__all__ = ["fused_layer", "fused_layer_backward", "OpaqueKernel", "EagerKernel", "for_compile"]
