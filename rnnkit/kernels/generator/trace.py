"""A cell's step, traced and split for a generated kernel (issue 18, step 1: the analysis).

``trace_step`` runs one step of a cell, written once in plain torch ops (a ``CellEquations``, or the
``forward(x_t, hx)`` of any torch-convention cell module), with ``record`` (aten ops on fake tensors) and splits the traced
aten graph by what each node depends on:

- **constants**: the parameters alone (IndRNN's clamped recurrent weight, a transposed W): once per call;
- **hoisted**: the products of the input x_t with the parameters (W_ih x_t + b_ih) and what they read:
  torch ops for every step at once, over all N rows of the packed input, as today's kernels do for W_ih x;
- **recurrent**: the rest, the step proper.  Its matrix products with a constant right operand
  (h_{t-1} W_hh^T) are the loop's recurrent products, listed in ``products``; the rest is the pointwise
  part, elementwise and row-wise (a layer norm over the features), which a generated kernel fuses.  The
  pointwise values that do not read the state (the tail of the hoisted part: a minGRU's gates, a layer
  norm of W_ih x_t) are in it too: the generated loop runs them first at each step (its prologue,
  stages.py), fused, where torch would run an op each over all rows.

An op whose meaning across rows is not known to be row by row (a reduction over the batch, say) is
refused with UnsupportedBackendError naming it: the split is only valid for row-wise steps.

``StepPlan.run`` executes the split plan in torch ops (the hoisted part once, then a Python loop over
the steps): the check that the split computes the cell's own recurrence, and the reference the
generated kernels will be held to.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, fx, nn

from ...errors import UnsupportedBackendError
from .record import record

aten = torch.ops.aten

# Ops known to act row by row (each output row from the same row of each row-indexed input) or on
# parameters alone: what a step may hold.  Products are checked separately (their right operand).
ROW_WISE = {
    aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.neg.default,
    aten.add.Scalar, aten.sub.Scalar, aten.mul.Scalar, aten.div.Scalar, aten.rsub.Scalar, aten.rsub.Tensor,
    aten.sigmoid.default, aten.tanh.default, aten.relu.default, aten.gelu.default, aten.exp.default,
    aten.log.default, aten.log1p.default, aten.expm1.default, aten.abs.default, aten.sqrt.default,
    aten.rsqrt.default, aten.reciprocal.default, aten.pow.Tensor_Scalar, aten.softplus.default,
    aten.clamp.default, aten.clamp_min.default, aten.clamp_max.default, aten.where.self,
    aten.minimum.default, aten.maximum.default, aten.gt.Scalar, aten.lt.Scalar, aten.ge.Scalar,
    aten.le.Scalar, aten.gt.Tensor, aten.lt.Tensor, aten.silu.default, aten.hardtanh.default,
    aten.native_layer_norm.default, aten.clone.default, aten.alias.default, aten._to_copy.default,
    aten.log_sigmoid_forward.default, aten.logaddexp.default, aten.sign.default, aten.elu.default,
    aten.leaky_relu.default, aten.logical_and.default, aten.logical_or.default, aten.logical_not.default,
}
# Row-wise when they act on the feature dimension (of a (rows, features) value), not on the rows.
FEATURE_DIM_OPS = {aten.split.Tensor: 2, aten.split_with_sizes.default: 2, aten.unsafe_split.Tensor: 2,
                   aten.chunk.default: 2, aten.unsafe_chunk.default: 2, aten.slice.Tensor: 1, aten.cat.default: 1}
PRODUCTS = {aten.mm.default, aten.addmm.default}


@dataclass
class Product:
    """A recurrent product of the step, by the names of its nodes in ``StepPlan.recurrent``: ``name`` =
    ``left`` (rows that depend on the state) @ ``weight`` (a constant: a weight, or its transpose)."""

    name: str
    left: str
    weight: str


@dataclass
class StepPlan:
    """One cell's step split in three graphs (see the module docstring)."""

    constants: fx.GraphModule   # (*params) -> constants
    hoisted: fx.GraphModule     # (x, *constants) -> hoisted values, row by row of x
    recurrent: fx.GraphModule   # (*hoisted rows, *state, *constants) -> new state
    products: list              # the recurrent products (Product) of ``recurrent``
    num_states: int

    def run(self, x: Tensor, batch_sizes: Sequence[int], state0: tuple, params: Sequence[Tensor],
            reverse: bool = False) -> tuple[Tensor, tuple]:
        """(outputs (N, H), final state) over packed ``x`` (N, I), as ``Kernel.layer``, in torch ops."""
        constants = as_tuple(self.constants(*params))
        return self.run_recurrent(as_tuple(self.hoisted(x, *constants)), batch_sizes, state0, constants, reverse)

    def run_recurrent(self, hoisted: Sequence[Tensor], batch_sizes: Sequence[int], state0: tuple,
                      constants: Sequence[Tensor], reverse: bool = False) -> tuple[Tensor, tuple]:
        """The recurrent part alone, from the hoisted rows and the constants, in torch ops."""
        from ...recurrent import scan  # the reference loop's own time driver (lengths, both directions)

        def step(rows: Tensor, state: tuple) -> tuple:  # rows: the packed row numbers of one step
            first = int(rows[0])
            return as_tuple(self.recurrent(*(v[first:first + rows.numel()] for v in hoisted), *state, *constants))

        return scan(step, torch.arange(hoisted[0].shape[0]), batch_sizes, tuple(state0), reverse)


def as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def trace_step(step: Callable, x: Tensor, state: tuple, params: Sequence[Tensor]) -> StepPlan:
    """Trace ``step(x, *state, *params) -> new state`` (a tuple, h first) on example tensors and split
    it (see the module docstring)."""
    # on fake tensors: a step whose Python control flow depends on values (``if h.abs().max() > 1``) cannot
    # be traced into one graph, and must fail here rather than freeze the branch of an example
    traced = record(step, x, *state, *params)
    graph = traced.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    x_node, state_nodes, param_nodes = placeholders[0], placeholders[1:1 + len(state)], placeholders[1 + len(state):]
    kind = {x_node: "hoisted", **{n: "recurrent" for n in state_nodes}, **{n: "constant" for n in param_nodes}}
    rank = {"constant": 0, "hoisted": 1, "recurrent": 2}
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        inputs = node.all_input_nodes
        kind[node] = max((kind[n] for n in inputs), key=rank.get, default="constant")
        if node.target is operator.getitem or kind[node] == "constant":
            continue
        if node.target in PRODUCTS:
            right = node.args[-1]
            if kind[right] != "constant":
                raise UnsupportedBackendError(f"the step multiplies two values that change with the input or state "
                                              f"({node.format_node()}); a generated kernel needs constant right operands")
            continue
        if node.target in FEATURE_DIM_OPS:
            position = FEATURE_DIM_OPS[node.target]
            dim = node.args[position] if len(node.args) > position else node.kwargs.get("dim", 0)
            if dim in (1, -1):
                continue
        if node.target not in ROW_WISE:
            raise UnsupportedBackendError(f"the step uses {node.target}, which a generated kernel does not handle "
                                          "(not known to act row by row)")
    output = next(n for n in graph.nodes if n.op == "output")
    results = list(as_tuple(output.args[0]))
    constants = [n for n in graph.nodes if kind.get(n) == "constant" and n.op == "call_function"
                 and any(kind.get(u) != "constant" for u in n.users)] + \
        [n for n in param_nodes if any(kind.get(u) != "constant" for u in n.users)]
    # torch runs the products of x_t and what they read; the pointwise rest of the hoisted part (its
    # tail: the gates' activations of a minGRU, a layer norm of W_ih x_t) goes with the step, where the
    # loop runs it fused, as a prologue at each step (stages.py), instead of a torch op each
    in_torch = _product_ancestors(graph, kind)
    read_by_step = {n for n in graph.nodes if kind.get(n) == "recurrent" or (kind.get(n) == "hoisted"
                                                                              and n not in in_torch)}
    hoisted_out = [n for n in graph.nodes if (n in in_torch or n is x_node)
                   and any(u in read_by_step for u in n.users)]
    hoisted_out = _unviewed(hoisted_out, kind)
    recurrent = subgraph(traced, hoisted_out + list(state_nodes) + constants, results)
    products = [Product(n.name, n.args[-2].name, n.args[-1].name) for n in recurrent.graph.nodes
                if n.op == "call_function" and n.target in PRODUCTS]
    return StepPlan(
        constants=subgraph(traced, param_nodes, constants),
        hoisted=subgraph(traced, [x_node] + constants, hoisted_out),
        recurrent=recurrent,
        products=products,
        num_states=len(state),
    )


def _product_ancestors(graph: fx.Graph, kind: dict) -> set:
    """The hoisted products (of x_t with constants) and the hoisted values they read."""
    found, stack = set(), [n for n in graph.nodes if kind.get(n) == "hoisted" and n.op == "call_function"
                           and n.target in PRODUCTS]
    while stack:
        n = stack.pop()
        if n in found or kind.get(n) != "hoisted" or n.op != "call_function":
            continue
        found.add(n)
        stack.extend(n.all_input_nodes)
    return found


def feature_view_base(node: fx.Node):
    """The tensor ``node`` is a column block of (a getitem of a split or chunk on the features, or a
    slice of them), or None.  The split itself: the tensor it splits."""
    if node.op != "call_function":
        return None
    if node.target is operator.getitem:
        source = node.args[0]
        if isinstance(source, fx.Node) and source.op == "call_function" and source.target in FEATURE_DIM_OPS \
                and source.target is not aten.cat.default and _on_features(source):
            return source.args[0]
        return None
    if node.target in FEATURE_DIM_OPS and node.target is not aten.cat.default and _on_features(node):
        return node.args[0]
    return None


def _on_features(node: fx.Node) -> bool:
    position = FEATURE_DIM_OPS[node.target]
    return (node.args[position] if len(node.args) > position else node.kwargs.get("dim", 0)) in (1, -1)


def _unviewed(hoisted: list, kind: dict) -> list:
    """The hoisted values with each column block of a hoisted tensor (W_ih x_t + b_ih's gates, chunked)
    replaced by that tensor, whose split then runs in the step: the loop's slots are contiguous rows,
    so a block would be copied out of it at every call, and its gradient concatenated back (one
    copy and one cat of every hoisted row per call, 9% of a GRU's forward+backward at (200,16,64,64))."""
    result = []
    for node in hoisted:
        base = feature_view_base(node)
        while base is not None and kind.get(base) == "hoisted":
            node, base = base, feature_view_base(base)
        if node not in result:
            result.append(node)
    return result


def subgraph(root: fx.GraphModule, inputs: list, outputs: list) -> fx.GraphModule:
    """The part of ``root``'s graph that computes ``outputs`` from ``inputs`` (placeholders, in order)."""
    graph = fx.Graph()
    env = {n: graph.placeholder(n.name) for n in inputs}
    needed = set()
    stack = list(outputs)
    while stack:
        n = stack.pop()
        if n in needed or n in env:
            continue
        needed.add(n)
        stack.extend(n.all_input_nodes)
    for n in root.graph.nodes:
        if n in needed and n not in env:
            if n.op == "placeholder":
                raise ValueError(f"{n.name} is needed but not an input of this part")
            env[n] = graph.node_copy(n, lambda a: env[a])
    graph.output(tuple(env[n] for n in outputs))
    return fx.GraphModule(root, graph)


def trace_cell(cell: nn.Module, dtype=torch.float32, input_size: int | None = None) -> tuple[StepPlan, list]:
    """(the plan of ``cell``'s step, the parameter tensors it takes, in order) for any torch-convention
    cell module, rnnkit's included: ``forward(x_t, hx)``, hx None, a Tensor or a tuple of Tensors (h
    first), returning the new state in the same form.  Traced through ``torch.func.functional_call``,
    the parameters as inputs."""
    names = [name for name, _ in cell.named_parameters()]
    params = [p.detach() for _, p in cell.named_parameters()]
    # examples are shapes: recorded on the meta device (record.py); zeros, so that tracing draws nothing from
    # torch's random generator (a user's seeded run must not depend on when a cell was first traced)
    x = torch.zeros(2, cell.input_size if input_size is None else input_size, dtype=dtype)
    with torch.no_grad():
        probe = cell(x, None)
    arity = 1 if isinstance(probe, Tensor) else len(probe)
    state = tuple(torch.zeros_like(s) for s in as_tuple(probe))

    def step(x_t, *rest):
        hx = rest[0] if arity == 1 else tuple(rest[:arity])
        return as_tuple(torch.func.functional_call(cell, dict(zip(names, rest[arity:])), (x_t, hx)))

    return trace_step(step, x, state, params), params


def trace_equations(eq, weights, input_size: int, state_widths: Sequence[int], dtype=torch.float32) -> tuple[StepPlan, list]:
    """(the plan of ``eq``'s step (a CellEquations) with these weights, the positions in ``weights`` of
    the tensors it takes, in order): the absent weights (None) stay absent."""
    present = [i for i, t in enumerate(weights) if t is not None]
    params = [weights[i].detach() for i in present]
    arity = len(state_widths)

    def step(x_t, *rest):
        given = list(weights)
        for i, t in zip(present, rest[arity:]):
            given[i] = t
        return as_tuple(eq.step(x_t, tuple(rest[:arity]), type(weights)(*given)))

    x = torch.zeros(2, input_size, dtype=dtype)  # (shapes only, and nothing drawn from torch's generator)
    state = tuple(torch.zeros(2, w, dtype=dtype) for w in state_widths)
    return trace_step(step, x, state, params), present


__all__ = ["StepPlan", "Product", "trace_step", "trace_cell", "trace_equations", "subgraph", "as_tuple", "ROW_WISE",
           "feature_view_base"]
