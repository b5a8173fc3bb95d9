"""Record the aten ops a function runs on fake tensors into an fx graph: what the generator traces with.

``record(fn, *examples)`` runs ``fn`` on copies of the examples on the meta device (tensors with shapes
and dtypes but no data, so a step whose Python control flow reads values fails here instead of
freezing the branch of one example) under a dispatch mode that appends each aten op to an ``fx.Graph``, the
op's meta result as the node's ``meta["val"]``.  Ops in ``decompositions`` are replaced by their
decomposition as they run, recorded op by op.  ``torch.func.vjp`` inside ``fn`` is recorded as the
ops of its backward (the mode sits below the functorch and autograd layers).

Why not ``make_fx``, which does the same: in torch 2.13 each ``make_fx`` call imports
``torch._inductor.config``, and with it torch._dynamo (so does FakeTensorMode), 1.4-1.8 s on this
machine kind: the first cell a process ran on a generated kernel paid it even with the kernel cached
on disk (issue 18's target is 0.5 s).  The steps the generator takes are small, straight-line, and
take tensors only: a dispatch mode recording them on meta tensors is all the tracing needed.
"""
from __future__ import annotations

import operator
from typing import Callable

import torch
from torch import Tensor, fx, nn
from torch.overrides import TorchFunctionMode

from .._torch_internals import DispatchMode
from ...errors import UnsupportedBackendError


aten = torch.ops.aten


def tree_map(fn: Callable, value):
    """``fn`` on each leaf of nested tuples, lists and dicts (an op's arguments, a step's result)."""
    if isinstance(value, (tuple, list)):
        return type(value)(tree_map(fn, v) for v in value)
    if isinstance(value, dict):
        return {k: tree_map(fn, v) for k, v in value.items()}
    return fn(value)

# the ops through which Python reads a tensor's values (.item(), bool(t), float(t), t == u as a bool)
VALUE_READS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default}
DATA_READS = {"tolist", "numpy", "data_ptr", "__array__", "untyped_storage", "storage", "_typed_storage",
              "__dlpack__", "__reduce_ex__"}


class _NoValueReads(TorchFunctionMode):
    """Refuses the Python-level reads of a tensor's data that reach no aten op (``.tolist()``,
    ``.numpy()``, ``data_ptr``): a branch on them would be frozen at the example's values."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) in DATA_READS:
            raise UnsupportedBackendError(
                f"the step reads a tensor's value into Python (Tensor.{func.__name__}): a generated kernel runs "
                "one graph for every value, so its control flow must not depend on values")
        return func(*args, **(kwargs or {}))


class _Recorder(DispatchMode):
    def __init__(self, graph: fx.Graph, decompositions: dict):
        super().__init__()
        self.graph = graph
        self.decompositions = decompositions
        self.node_of: dict = {}  # id(tensor) -> the node that made it
        self.alive: list = []    # every tensor seen, so that no id is reused while recording

    def track(self, tensor: Tensor, node: fx.Node) -> None:
        self.node_of[id(tensor)] = node
        self.alive.append(tensor)
        node.meta["val"] = tensor

    def node(self, value):
        if not isinstance(value, Tensor):
            return value
        found = self.node_of.get(id(value))
        if found is None:
            raise UnsupportedBackendError(
                f"the step reads a tensor that is neither an input nor made by it (shape {tuple(value.shape)}): "
                "a generated kernel takes parameters as inputs, not tensor constants or buffers")
        return found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.decompositions:
            with self:  # the decomposition's own ops are recorded one by one
                result = self.decompositions[func](*args, **kwargs)
                if result is not NotImplemented:
                    return result
        with self:  # an op made of other ops (aten.to.dtype inside a decomposition) recorded as those ops
            result = func.decompose(*args, **kwargs)
            if result is not NotImplemented:
                return result
        if func in VALUE_READS:
            raise UnsupportedBackendError(
                f"the step reads a tensor's value into Python ({func}: .item(), bool(), an if on a tensor): "
                "a generated kernel runs one graph for every value, so its control flow must not depend on values")
        node_args, node_kwargs = tree_map(self.node, args), tree_map(self.node, kwargs)
        result = func(*args, **kwargs)
        node = self.graph.call_function(func, node_args, node_kwargs)
        if isinstance(result, Tensor):
            self.track(result, node)
        elif isinstance(result, (tuple, list)):
            node.meta["val"] = result
            for i, item in enumerate(result):
                if isinstance(item, Tensor):
                    self.track(item, self.graph.call_function(operator.getitem, (node, i)))
        return result


def record(fn: Callable, *examples: Tensor, decompositions: dict | None = None) -> fx.GraphModule:
    """The graph of aten ops ``fn(*examples)`` runs, its inputs the examples (placeholders, in order) and
    its output what ``fn`` returns (a tensor, or a tuple or list of them).  In-place ops on values ``fn``
made are recorded out of place; in-place changes of its inputs are refused."""
    graph = fx.Graph()
    inputs = [t.detach().clone() for t in examples]
    recorder = _Recorder(graph, decompositions or {})
    for i, t in enumerate(inputs):
        recorder.track(t, graph.placeholder(f"arg{i}"))
    with _NoValueReads(), recorder:
        result = fn(*inputs)
    graph.output(tree_map(recorder.node, result))
    _out_of_place(graph)
    graph.eliminate_dead_code()
    return fx.GraphModule(nn.Module(), graph)


def _out_of_place(graph: fx.Graph) -> None:
    """A step's in-place ops on its own intermediates (torch.nn.GRUCell's decomposition: add_, sigmoid_,
    mul_ on the pieces of its products) rewritten out of place, the later uses of the value they changed
    reading their result.  In-place changes of the step's inputs are refused, and so are those that other
    values see through shared memory: a change of a view (``g[:, :H].sigmoid_()``) or of a value that has
    views, where the base or another view is read after it.  Out of place, those readers would see the
    value from before the change (functionalizing the views is not done here: the reference loop runs
    such a step)."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    root = _alias_roots(graph)
    in_place = {n for n in graph.nodes if _writes_first_argument(n)}
    sharing_memory: dict = {}  # root -> the values (not in-place results) whose memory it is
    for n in graph.nodes:
        if n not in in_place:
            sharing_memory.setdefault(root[n], []).append(n)
    for node in list(graph.nodes):
        if node not in in_place:
            continue
        changed = node.args[0]
        if changed.op == "placeholder":
            raise UnsupportedBackendError(f"the step changes its input {changed.name} in place ({node.target})")
        # (views taken after the change read its result: the rewrite points them at it)
        others = [n for n in sharing_memory[root[changed]] if n is not changed and order[n] < order[node]]
        if any(order[user] > order[node] for n in others for user in n.users):
            raise UnsupportedBackendError(
                f"the step changes in place ({node.target}) a value whose memory another value it reads later "
                "shares (a view, or the tensor a view was taken of): a generated kernel would give that reader "
                "the value from before the change; write the step out of place, or use backend='auto' or "
                "'reference'")
        packet = getattr(aten, node.target._schema.name.split("::")[1].rstrip("_"))
        node.target = getattr(packet, node.target._overloadname)
        for user in list(changed.users):
            if user is not node and order[user] > order[node]:
                user.replace_input_with(changed, node)


def _writes_first_argument(node: fx.Node) -> bool:
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return False
    arguments = node.target._schema.arguments
    return bool(arguments and arguments[0].alias_info is not None and arguments[0].alias_info.is_write)


def _alias_roots(graph: fx.Graph) -> dict:
    """node -> the node whose memory it is: itself, or, for a view (an op whose schema says its result
    aliases an argument: slice, select, view, transpose, the pieces of split and chunk) and for an in-place
    op's result, its argument's root.  (unsafe_split, whose pieces the schema does not alias, keeps them
    apart, as torch.nn.GRUCell's decomposition relies on.)"""
    root: dict = {}
    for node in graph.nodes:
        root[node] = node
        if node.op != "call_function":
            continue
        if node.target is operator.getitem:
            source = node.args[0]
            if isinstance(source, fx.Node) and root.get(source) is not source:
                root[node] = root[source]  # a piece of an aliasing list (split's)
            continue
        if not isinstance(node.target, torch._ops.OpOverload):
            continue
        schema = node.target._schema
        returned = {alias for ret in schema.returns if ret.alias_info is not None for alias in ret.alias_info.before_set}
        for argument, value in zip(schema.arguments, node.args):
            # (a list result's pieces carry their alias set inside the list's type: split's "Tensor(a -> *)
            # self" says the pieces may alias it)
            if (isinstance(value, fx.Node) and argument.alias_info is not None
                    and (returned & set(argument.alias_info.before_set) or "*" in argument.alias_info.after_set)):
                root[node] = root[value]
                break
    return root


__all__ = ["record"]
