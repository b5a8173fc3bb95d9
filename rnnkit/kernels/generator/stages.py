"""The recurrent part of a traced step (trace.py) laid out for the generic loop of generated kernels.

The loop (csrc/cpu/generated_loop.cpp) keeps every value the step hands from one part to another in a
**slot**: an (N, width) buffer, one row per packed row.  Slots hold the hoisted inputs, each state's
previous value (what a row read) and its new value (the history, whose rows are the layer's outputs
for h), each recurrent product's result, and each value one stage computes and a later one reads.

The step's recurrent products order it into **stages**: a product's left operand must be complete
before the product, and the product before what reads it.  The level of a value is 0 for the step's
inputs, one more than its left operand's for a product, the highest of its inputs' for anything else;
stage k runs the products of level k, then the pointwise values of level k (the generated code).

Each stage's pointwise part becomes a small aten graph, decomposed into elementwise ops and row-wise
reductions (a layer norm: a mean and a variance over the features), and its backward is the graph of
autograd over it, recorded the same way: reverse mode over the cell's own equations.  In the
backward trace the constants a stage reads pointwise (a bias, a layer norm's gain) are given one row
per packed row, so that their gradients come out row by row (summed over the rows by the caller)
rather than as a sum over rows inside the step.

What does not read the state (the tail of the hoisted part: a minGRU's gates, a layer norm of W_ih x_t)
is the step's **prologue**, a stage the loop runs first at each step (its backward last): fused, its
values still in cache when the step reads them, where torch ran an op per value over all rows (a minGRU's
forward at (200,16,64,64) spent 2.0 of its 2.7 ms in them).  A column block of an input goes with its
readers (_sink_column_blocks); a value of the constants alone that only the prologue reads goes with it.

The backward's gradient buffers hold all N rows only where they must: the hoisted inputs' and the
products' (read over all rows after the loop, for dx and dW) and the history's (given).  A buffer that a
stage stores into and the same step reads holds one step's rows (``step_rows``), and a pointwise
constant's gradient is added up in one row per sequence (``accumulated``) rather than kept per row and
summed after the loop: the layer-norm LSTM's forward+backward at (200,16,64,64) went from 1.6x its numba
kernel's time to 0.8-1.0x with these and the vectorized row sums of emit_cpp.py.

The backward reads a stage's activations (sigmoid, tanh, exp) from **saved** slots, which the forward
writes as it computes them, rather than computing them again: their derivatives are functions of their
outputs (y (1 - y), 1 - y^2, y).  Recomputing them cost the backward of a GRU at (200,16,64,64) about a
quarter of its loop's time.  A saved slot has no gradient buffer (nothing flows into it).
"""
from __future__ import annotations

import copy
import functools
import operator
from dataclasses import dataclass, field

import torch
from torch import Tensor, fx

from ...errors import UnsupportedBackendError
from .decompose import DECOMPOSITIONS
from .record import record
from .trace import PRODUCTS, StepPlan, feature_view_base, subgraph as _subgraph

aten = torch.ops.aten
# The example row count of the stage traces: any count works (every op acts row by row).
EXAMPLE_ROWS = 11
# The level of the prologue's values (those that do not read the state), before every step's stage 0.
PROLOGUE = -1


@dataclass
class Slot:
    """One (N, width) buffer of the loop: ``kind`` is "hoisted" (an input row of the step), "previous"
    (a state as a row read it), "history" (a state as a row wrote it), "product", "value" or "saved"
    (an activation the forward keeps for the backward)."""

    kind: str
    width: int
    name: str


@dataclass
class Stage:
    """One stage's pointwise part: ``forward`` maps (its input slots, its constants) to its output
    slots then its saved slots; ``backward`` maps (input slots, constants row by row, saved slots, the
    outputs' gradients) to the gradients of the inputs then of the constants (None where there is none)."""

    forward: fx.GraphModule
    backward: fx.GraphModule
    inputs: list        # slot numbers
    constants: list     # constant numbers (into Layout.constants)
    outputs: list       # slot numbers
    saved: list = field(default_factory=list)  # slot numbers: activations the backward reads


@dataclass
class ProductSpec:
    left: int       # slot
    out: int        # slot
    stage: int
    weight: int     # constant number: the (left width, out width) right operand


@dataclass
class Layout:
    slots: list = field(default_factory=list)
    stages: list = field(default_factory=list)
    products: list = field(default_factory=list)
    hoisted: list = field(default_factory=list)     # slot of each hoisted input, in StepPlan order
    previous: list = field(default_factory=list)    # slot of each state's previous value
    history: list = field(default_factory=list)     # slot of each state's new value
    constant_shapes: list = field(default_factory=list)  # of StepPlan.recurrent's constant inputs, in order
    pointwise_constants: list = field(default_factory=list)  # constants the stages read (by number)
    # The backward's gradient buffers: one per slot, then one per pointwise constant.  Within a step the
    # backward writes them stage by stage, last first, each stage's products after it: the first write
    # of a buffer in that order (by a stage) stores, every later one adds.  Buffers whose first write is
    # a product's (it adds), or that nothing writes, start as zeros; the rest start unwritten.
    first_writes: set = field(default_factory=set)   # (stage, buffer) whose write stores
    zeroed: list = field(default_factory=list)        # per buffer: starts as zeros
    no_gradient: set = field(default_factory=set)     # buffers of saved slots: none allocated
    accumulated: set = field(default_factory=set)     # constants' buffers of one row per sequence, added to
    step_rows: set = field(default_factory=set)       # slots' buffers of one step's rows
    grad_alias: dict = field(default_factory=dict)    # buffer -> the buffer it shares (same values)
    # The prologue: the last of ``stages`` when True, what does not read the state, run first at each
    # step (its backward last).
    prologue: bool = False

    # the lists the loop's operators take, made once per layout (not per call)
    @functools.cached_property
    def slot_widths(self) -> list:
        return [slot.width for slot in self.slots]

    @functools.cached_property
    def product_lists(self) -> tuple[list, list, list, list]:
        """(left slots, result slots, stages, weights (constants' numbers)) of the products."""
        return ([p.left for p in self.products], [p.out for p in self.products],
                [p.stage for p in self.products], [p.weight for p in self.products])

    @functools.cached_property
    def gradient_starts(self) -> list:
        """Per gradient buffer, what the loop's backward allocates (csrc/cpu/generated_loop.cpp): 1 zeros,
        0 uninitialized rows, 2 none (a saved slot's), 3 zeros of one row per sequence (accumulated), 4
        uninitialized rows of one step (step_rows)."""
        return [2 if b in self.no_gradient else 3 if b in self.accumulated else 4 if b in self.step_rows else int(z)
                for b, z in enumerate(self.zeroed)]

    @functools.cached_property
    def grad_alias_list(self) -> list:
        """Per gradient buffer: the buffer it shares, or -1."""
        return [self.grad_alias.get(b, -1) for b in range(len(self.zeroed))]


def lay_out(plan: StepPlan, hoisted_widths: list, state_widths: list, constants: list) -> Layout:
    """The slots and stages of ``plan.recurrent`` for hoisted inputs and states of these widths and
    these constant tensors (examples: their shapes and dtype are what counts)."""
    gm = _without_addmm(plan.recurrent)
    graph = gm.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    n_hoisted, n_states = len(hoisted_widths), len(state_widths)
    hoisted_nodes = placeholders[:n_hoisted]
    state_nodes = placeholders[n_hoisted:n_hoisted + n_states]
    constant_nodes = placeholders[n_hoisted + n_states:]
    results = _outputs_of(gm)

    layout = Layout(constant_shapes=[tuple(c.shape) for c in constants])
    slot_of: dict = {}

    def new_slot(kind, width, name):
        layout.slots.append(Slot(kind, int(width), name))
        return len(layout.slots) - 1

    for node, width in zip(hoisted_nodes, hoisted_widths):
        slot_of[node] = new_slot("hoisted", width, node.name)
        layout.hoisted.append(slot_of[node])
    for node, width in zip(state_nodes, state_widths):
        slot_of[node] = new_slot("previous", width, node.name)
        layout.previous.append(slot_of[node])
    constant_of = {node: k for k, node in enumerate(constant_nodes)}

    prologue = _prologue_nodes(graph, hoisted_nodes, state_nodes, results)
    while True:
        level = _levels(graph, placeholders, constant_of, prologue)
        # a prologue value must read the inputs and other prologue values only (a view the step takes at a
        # later stage cannot feed it): any other goes with the steps
        misplaced = {n for n in prologue if any(level[i] != PROLOGUE and i not in placeholders
                                                for i in n.all_input_nodes)}
        if not misplaced:
            break
        prologue -= misplaced
    stages = max(level.values(), default=0) + 1

    # the slots of the values that cross stages: products' operands and results, values read later
    example = {n: n.meta.get("val") for n in graph.nodes}
    for node in graph.nodes:
        if node.op == "call_function" and node.target in PRODUCTS:
            left, right = node.args
            if left not in slot_of:
                slot_of[left] = new_slot("prologue" if level[left] == PROLOGUE else "value", example[left].shape[-1],
                                         left.name)
            slot_of[node] = new_slot("product", example[node].shape[-1], node.name)
            layout.products.append(ProductSpec(slot_of[left], slot_of[node], level[node], constant_of[right]))
    for node in graph.nodes:
        if node.op != "call_function" or node in slot_of or node.target in PRODUCTS:
            continue
        if any(level[user] > level[node] for user in node.users if user.op != "output"):
            slot_of[node] = new_slot("prologue" if level[node] == PROLOGUE else "value", example[node].shape[-1],
                                     node.name)
    history_of = []
    for node, width in zip(results, state_widths):
        history_of.append((node, new_slot("history", width, f"new_{node.name}")))
    layout.history = [slot for _, slot in history_of]

    used_pointwise = set()
    has_prologue = any(level.get(n) == PROLOGUE and n in slot_of for n in graph.nodes)
    for k in [*range(stages), *([PROLOGUE] if has_prologue else [])]:
        members = [n for n in graph.nodes if n.op == "call_function" and level[n] == k and n.target not in PRODUCTS]
        member_set = set(members)
        outputs = [(n, slot_of[n]) for n in members if n in slot_of]
        outputs += [(n, slot) for n, slot in history_of if level[n] == k]
        if not outputs:
            layout.stages.append(None)
            continue
        needed = _ancestors_within([n for n, _ in outputs], member_set)
        inputs, input_constants = [], []
        for n in graph.nodes:
            if n in needed:
                continue
            if any(n in m.all_input_nodes for m in needed) or any(n is o for o, _ in outputs):
                if n in constant_of:
                    input_constants.append(n)
                elif n in slot_of:
                    inputs.append(n)
                else:
                    raise UnsupportedBackendError(f"{n.format_node()} crosses stages without a slot")
        sub = _subgraph(gm, inputs + input_constants, [n for n, _ in outputs])
        slot_examples = [_rows(layout.slots[slot_of[n]].width, constants[0]) for n in inputs]
        constant_examples = [constants[constant_of[n]] for n in input_constants]
        forward = _decomposed(sub, slot_examples + constant_examples)
        activations = _saved_activations(forward)
        written = dict(zip(_outputs_of(forward), (slot for _, slot in outputs)))  # an output's slot holds it already
        saved = [written.get(node) or new_slot("saved", node.meta["val"].shape[-1], f"saved_{node.name}")
                 for node in activations]
        backward = _backward_graph(forward, slot_examples, constant_examples,
                                   [_rows(layout.slots[s].width, constants[0]) for s in saved],
                                   [_rows(layout.slots[s].width, constants[0]) for _, s in outputs], activations)
        numbers = [constant_of[n] for n in input_constants]
        used_pointwise.update(numbers)
        layout.stages.append(Stage(_also_returning(forward, activations), backward, [slot_of[n] for n in inputs],
                                   numbers, [slot for _, slot in outputs], saved))
        layout.no_gradient.update(slot for slot in saved if layout.slots[slot].kind == "saved")
    layout.pointwise_constants = sorted(used_pointwise)
    layout.prologue = has_prologue
    _order_gradient_writes(layout)
    return layout


def _levels(graph: fx.Graph, placeholders: list, constant_of: dict, prologue: set) -> dict:
    """node -> its level (see the module docstring; PROLOGUE for the ``prologue`` nodes)."""
    level = {node: 0 for node in placeholders}
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        if node in prologue:
            level[node] = PROLOGUE
        elif node.target in PRODUCTS:
            left, right = node.args
            if right not in constant_of:
                raise UnsupportedBackendError(f"the product {node.format_node()} has a right operand computed in "
                                              "the step; a generated kernel needs a constant one")
            level[node] = max(level[left], 0) + 1
        else:
            level[node] = max((level[n] for n in node.all_input_nodes), default=0)
    _sink_column_blocks(graph, level, set(placeholders))
    return level


def _prologue_nodes(graph: fx.Graph, hoisted: list, states: list, results: list) -> set:
    """The pointwise values computed from the hoisted inputs without the state (the tail of the hoisted
    part): the loop's prologue, first at each step.  Not the column blocks of an input (views: they are
    taken where they are read, _sink_column_blocks), nor a result of the step."""
    reads_state = set(states)
    reads_hoisted = set(hoisted)
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        inputs = node.all_input_nodes
        if any(n in reads_state for n in inputs) or node.target in PRODUCTS:
            reads_state.add(node)
        elif any(n in reads_hoisted for n in inputs):
            reads_hoisted.add(node)
    inputs = set(hoisted)
    prologue = {n for n in reads_hoisted if n.op == "call_function" and n not in results and n not in reads_state
                and not _view_of_input(n, inputs)}
    for node in reversed(graph.nodes):  # values of the constants alone (a reshaped bias) read only by it
        if node.op == "call_function" and node not in reads_state and node not in reads_hoisted and node.users \
                and all(u in prologue for u in node.users):
            prologue.add(node)
    return prologue


def _view_of_input(node: fx.Node, inputs: set) -> bool:
    """Whether ``node`` is a column block of an input, or the split that makes the blocks."""
    if feature_view_base(node) in inputs:
        return True
    return node.op == "call_function" and node.args and node.args[0] in inputs and any(
        u.op == "call_function" and u.target is operator.getitem and feature_view_base(u) in inputs for u in node.users)


def _sink_column_blocks(graph: fx.Graph, level: dict, inputs: set) -> None:
    """Column blocks of the step's inputs (the gates of W_ih x_t + b_ih, one hoisted slot) taken in the
    stage that first reads them, not at level 0: a block taken at level 0 and read later would be a
    slot of its own, copied out at every step (and its gradient copied back).  A split moves with all
    its blocks, and only where none is a product's left operand (which must be complete before the
    product) or a result of the step."""
    for node in graph.nodes:
        if node.op != "call_function" or feature_view_base(node) not in inputs:
            continue
        if node.target is aten.slice.Tensor:
            blocks = [node]
        elif all(u.op == "call_function" and u.target is operator.getitem for u in node.users):
            blocks = list(node.users)  # the split's blocks
        else:
            continue
        readers = [u for block in blocks for u in block.users]
        if not readers or any(u.op == "output" or u.target in PRODUCTS for u in readers):
            continue
        first = min(level[u] for u in readers)
        for n in [node, *blocks]:
            level[n] = first


def _order_gradient_writes(layout: Layout) -> None:
    """``layout.first_writes``, ``zeroed``, ``grad_alias``, ``step_rows`` and ``accumulated`` (see Layout),
    from each buffer's writers in the order a step's backward runs them."""
    writers: dict = {}  # buffer -> [stage k (its generated backward) or None (a product's, which adds)]
    steps = len(layout.stages) - layout.prologue
    for k in [*reversed(range(steps)), *([steps] if layout.prologue else [])]:  # the prologue's backward last
        if layout.stages[k] is not None:
            for buffer in _gradient_buffers(layout, layout.stages[k]):
                writers.setdefault(buffer, []).append(k)
        for p in layout.products:
            if p.stage == k:
                writers.setdefault(p.left, []).append(None)
    layout.first_writes = {(ks[0], buffer) for buffer, ks in writers.items() if ks[0] is not None}
    layout.zeroed = [not (writers.get(b) and writers[b][0] is not None)
                     for b in range(len(layout.slots) + len(layout.pointwise_constants))]
    # Buffers that one stage alone writes, with one value (an LSTM's hoisted part, its product and its
    # b_hh all get dL/d(the gate pre-activations)): one buffer for all of them, written once.
    for k, stage in enumerate(layout.stages):
        if stage is None:
            continue
        output = next(n for n in stage.backward.graph.nodes if n.op == "output")
        first_of_value: dict = {}
        for buffer, value in zip(_gradient_buffers(layout, stage), output.args[0]):
            if value is None or writers[buffer] != [k]:
                continue
            if value in first_of_value:
                layout.grad_alias[buffer] = first_of_value[value]
            else:
                first_of_value[value] = buffer
    # A value's gradient that a stage stores and the same step reads (the gradient of a gate, of a state
    # as a row read it) needs the rows of one step, not all N: it stays in cache.  Not the gradients the
    # loop's caller reads over all rows (the hoisted inputs', the products' for their weights) or given
    # over all rows (the history's), nor one that starts as zeros (a product adds to it first).
    n_slots = len(layout.slots)
    all_rows = set(layout.hoisted) | set(layout.history) | {p.out for p in layout.products}
    groups: dict = {}  # buffer -> the buffers sharing its memory (its alias group, by its first)
    for buffer in range(n_slots):
        groups.setdefault(layout.grad_alias.get(buffer, buffer), []).append(buffer)
    for members in groups.values():
        if not any(b in all_rows or layout.zeroed[b] or b in layout.no_gradient for b in members):
            layout.step_rows.update(members)
    # A pointwise constant's gradient not shared with an all-rows slot's is added up over the steps in one
    # row per sequence (B rows, in cache) rather than kept for each of the N rows and summed after the loop.
    for buffer in range(n_slots, len(layout.zeroed)):
        shared = layout.grad_alias.get(buffer, buffer)
        if shared >= n_slots or shared in layout.step_rows:
            layout.grad_alias.pop(buffer, None)
            layout.accumulated.add(buffer)
            layout.zeroed[buffer] = True
            layout.first_writes -= {(k, buffer) for k in range(len(layout.stages))}


def _gradient_buffers(layout: Layout, stage: Stage) -> list:
    """The gradient buffers a stage's backward writes, in its outputs' order."""
    return list(stage.inputs) + [len(layout.slots) + layout.pointwise_constants.index(c) for c in stage.constants]


def _rows(width: int, like: Tensor) -> Tensor:
    return torch.zeros(EXAMPLE_ROWS, width, dtype=like.dtype)  # (a shape: recorded on the meta device)


def _ancestors_within(outputs: list, members: set) -> set:
    needed, stack = set(), [n for n in outputs if n in members]
    while stack:
        n = stack.pop()
        if n in needed:
            continue
        needed.add(n)
        stack.extend(m for m in n.all_input_nodes if m in members)
    return needed


def _without_addmm(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gm`` with addmm(bias, a, w) as mm(a, w) + bias: the product is the loop's, the bias
    pointwise."""
    gm = copy.deepcopy(gm)
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is aten.addmm.default:
            bias, left, right = node.args[:3]
            if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
                raise UnsupportedBackendError(f"{node.format_node()}: addmm with beta or alpha is not generated")
            with graph.inserting_before(node):
                product = graph.call_function(aten.mm.default, (left, right))
                product.meta["val"] = node.meta.get("val")
                total = graph.call_function(aten.add.Tensor, (product, bias))
                total.meta["val"] = node.meta.get("val")
            node.replace_all_uses_with(total)
            graph.erase_node(node)
    graph.lint()
    gm.recompile()
    return gm


def _decomposed(gm: fx.GraphModule, examples: list) -> fx.GraphModule:
    """``gm`` traced again into elementwise ops and row-wise reductions."""
    return record(gm, *examples, decompositions=DECOMPOSITIONS)


def _backward_graph(forward: fx.GraphModule, slots: list, constants: list, saved: list, cotangent_examples: list,
                    activations: list) -> fx.GraphModule:
    """The vjp of ``forward`` with respect to all its inputs, each constant given row by row: (rows,
    its elements), or (rows, 1) for a 0-D one, which broadcast against the rows as the constant did.
    The ``activations`` (nodes of ``forward``) are read from ``saved`` (their values, inputs of the
    backward after the constants), not computed again: their derivatives come from their outputs."""
    constant_rows = [_constant_rows(c) for c in constants]
    n_primals = len(slots) + len(constants)
    n_saved = len(saved)

    def vjp(*args):  # reverse mode by autograd over the recorded forward, its backward ops recorded in turn
        primals = [a.detach().requires_grad_() for a in args[:n_primals]]
        values = dict(zip(activations, args[n_primals:n_primals + n_saved]))
        with torch.enable_grad():
            outputs = tuple(_ReadingSaved(forward, values).run(*primals))
            seeds = [_Seed.apply(out, cotangent) for out, cotangent in zip(outputs, args[n_primals + n_saved:])
                     if out.requires_grad]
            grads = torch.autograd.grad(sum(seeds), primals, allow_unused=True) if seeds else [None] * n_primals
        return tuple(torch.zeros_like(p) if g is None else g for p, g in zip(primals, grads))

    return record(vjp, *slots, *constant_rows, *saved, *cotangent_examples, decompositions=DECOMPOSITIONS)


# activation -> its derivative from its output y, times the incoming gradient
_DERIVATIVE_FROM_OUTPUT = {
    aten.sigmoid.default: lambda grad, y: grad * (y * (1 - y)),
    aten.tanh.default: lambda grad, y: grad * (1 - y * y),
    aten.exp.default: lambda grad, y: grad * y,
}


def _saved_activations(forward: fx.GraphModule) -> list:
    """The nodes of a stage's decomposed forward whose values the backward reads from saved slots: its
    activations with a derivative from their outputs, row by row (an activation of a constant alone is
    computed once per call, not per row: nothing to save)."""
    return [n for n in forward.graph.nodes if n.op == "call_function" and n.target in _DERIVATIVE_FROM_OUTPUT
            and tuple(n.meta["val"].shape[:1]) == (EXAMPLE_ROWS,) and n.meta["val"].dim() == 2]


def _outputs_of(gm: fx.GraphModule) -> list:
    output = next(n for n in gm.graph.nodes if n.op == "output")
    return list(output.args[0]) if isinstance(output.args[0], (tuple, list)) else [output.args[0]]


def _also_returning(forward: fx.GraphModule, extra: list) -> fx.GraphModule:
    """A copy of ``forward`` that returns ``extra`` (nodes of it) after its own outputs."""
    if not extra:
        return forward
    gm = copy.deepcopy(forward)
    by_name = {n.name: n for n in gm.graph.nodes}
    output = next(n for n in gm.graph.nodes if n.op == "output")
    output.args = (tuple(_outputs_of(gm) + [by_name[n.name] for n in extra]),)
    gm.recompile()
    return gm


class _FromSaved(torch.autograd.Function):
    """An activation's output read from a saved value ``y``, its gradient with respect to its input
    ``x`` from ``y`` alone (_DERIVATIVE_FROM_OUTPUT): in the recorded backward, the activation is not
    computed again."""

    @staticmethod
    def forward(ctx, x, y, derivative):
        ctx.save_for_backward(y)
        ctx.derivative = derivative
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return ctx.derivative(grad, y), None, None


class _ReadingSaved(fx.Interpreter):
    """A stage's forward run op by op, each node of ``values`` (an activation) read from its saved value
    through _FromSaved."""

    def __init__(self, forward: fx.GraphModule, values: dict):
        super().__init__(forward)
        self.values = values

    def run_node(self, node: fx.Node):
        if node in self.values:
            return _FromSaved.apply(self.env[node.args[0]], self.values[node], _DERIVATIVE_FROM_OUTPUT[node.target])
        return super().run_node(node)


class _Seed(torch.autograd.Function):
    """A scalar whose backward hands ``cotangent`` to ``out``: the vjp as the gradient of one scalar.
    torch.autograd.grad with explicit output gradients imports sympy on its first call (0.9 s of a
    process's first generated cell); with a scalar it does not.  The backward records no op: the
    cotangents reach the recorded graph unchanged."""

    @staticmethod
    def forward(ctx, out, cotangent):
        ctx.cotangent = cotangent
        return out.new_zeros(())

    @staticmethod
    def backward(ctx, _one):
        return ctx.cotangent, None


def _constant_rows(c: Tensor) -> Tensor:
    return c.reshape(1, -1).expand(EXAMPLE_ROWS, -1).clone()


__all__ = ["Layout", "Slot", "Stage", "ProductSpec", "lay_out", "EXAMPLE_ROWS"]
