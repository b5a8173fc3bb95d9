"""rnnkit's RNN, LSTM and GRU as ONNX's own ``RNN``, ``LSTM`` and ``GRU`` nodes, for the TorchScript-based
exporter (``torch.onnx.export(..., dynamo=False)``), as torch.nn's layers export there.

That exporter runs the model under ``torch.jit.trace`` and turns each traced op into ONNX nodes.  A
recurrent layer traced op by op would be its loop unrolled for the example's length; instead, while
that exporter runs, the layer's forward goes through ``OnnxRecurrence``, an autograd Function whose
``symbolic`` emits one ONNX node per layer (both directions in one node), and whose forward computes
the layer's results on the ordinary path (so the trace holds the right shapes and values).  The
nodes take any batch size and sequence length.

ONNX's gate orders differ from torch's (LSTM: i, o, f, c against torch's i, f, g, o; GRU: z, r, h
against r, z, n), so each weight's rows are gathered into ONNX's order in the graph; torch's GRU
applies the reset gate after the recurrent product, ONNX's ``linear_before_reset=1``.

Not exported this way (a clear error): PackedSequence input, LSTM with ``proj_size`` (ONNX's LSTM has
no projection), dropout between layers in training mode.  ``rnnkit.Recurrent`` and
its other cells export with the dynamo-based exporter (``dynamo=True``, the default).

    ┌──────────────┬──────────────────────────────────────┬─────────────────────────────────────┐
    │ argument     │ shape                                │ ONNX node input                     │
    ├──────────────┼──────────────────────────────────────┼─────────────────────────────────────┤
    │ x            │ (T, B, I) (after batch_first)        │ X                                   │
    │ w_ih_l{k}    │ (G*H, I) per direction               │ W (D, G*H, I), rows in ONNX's order │
    │ w_hh_l{k}    │ (G*H, H) per direction               │ R (D, G*H, H)                       │
    │ b_ih, b_hh   │ (G*H,) each                          │ B (D, 2*G*H): [Wb, Rb]              │
    │ h0 (c0)      │ (L*D, B, H), rows k*D .. k*D + D - 1  │ initial_h (initial_c) (D, B, H)     │
    │ output       │ (T, B, D*H)                          │ Y (T, D, B, H), transposed, reshaped│
    └──────────────┴──────────────────────────────────────┴─────────────────────────────────────┘
"""
from __future__ import annotations

import contextlib
import threading
import weakref

import torch

# rows of torch's (G*H, .) weights, block by block, in ONNX's gate order
_ONNX_GATE_ORDER = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2), "RNN": (0,)}

_local = threading.local()
# The layers being exported, by id: the tracer records a Function's non-tensor arguments as constants,
# which a Module cannot be, so OnnxRecurrence takes the layer's id and finds the layer here.
_LAYERS: "weakref.WeakValueDictionary[int, torch.nn.Module]" = weakref.WeakValueDictionary()


def inside_node() -> bool:
    """True while OnnxRecurrence's forward runs the layer (the layer then runs as it always does)."""
    return getattr(_local, "depth", 0) > 0


@contextlib.contextmanager
def _running_node():
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def check_exportable(layer, input) -> None:
    from torch.nn.utils.rnn import PackedSequence

    name = type(layer).__name__
    if isinstance(input, PackedSequence):
        raise RuntimeError(
            f"{name}: a PackedSequence cannot be exported by torch.onnx.export(..., dynamo=False) (its batch sizes "
            "are data, not shapes); export the layer on a padded tensor (L, N, H_in), with a mask or lengths "
            "handled outside the layer")
    if getattr(layer, "proj_size", 0):
        raise RuntimeError(
            f"{name}: an LSTM with proj_size > 0 has no ONNX LSTM node (ONNX's LSTM has no projection); export "
            "it with torch.onnx.export(..., dynamo=True), the default")
    if layer.training and layer.dropout > 0 and layer.num_layers > 1:
        raise RuntimeError(
            f"{name}: dropout between layers in training mode is not exported; call model.eval() before "
            "torch.onnx.export")


def node_forward(layer, input, hx):
    """``layer(input, hx)`` while the TorchScript-based ONNX exporter traces: one ``OnnxRecurrence``
    call, which the exporter turns into ONNX RNN/LSTM/GRU nodes."""
    check_exportable(layer, input)
    is_lstm = layer._family == "LSTM"
    batched = input.dim() == 3
    x = input if batched else input.unsqueeze(1)
    if batched and layer.batch_first:
        x = x.transpose(0, 1)
    directions = 2 if layer.bidirectional else 1
    rows = layer.num_layers * directions
    if hx is None:
        states = [x.new_zeros(rows, x.shape[1], layer.hidden_size) for _ in range(2 if is_lstm else 1)]
    else:
        states = list(hx) if is_lstm else [hx]
        if not batched:
            states = [s.unsqueeze(1) for s in states]
    weights = [p for _, p in layer.named_parameters()]
    _LAYERS[id(layer)] = layer
    results = OnnxRecurrence.apply(id(layer), x, *states, *weights)
    output, finals = results[0], results[1:]
    if batched and layer.batch_first:
        output = output.transpose(0, 1)
    if not batched:
        output = output.squeeze(1)
        finals = tuple(s.squeeze(1) for s in finals)
    return output, (finals if is_lstm else finals[0])


class OnnxRecurrence(torch.autograd.Function):
    """One rnnkit layer as ONNX nodes: ``apply(id(layer), x (T, B, I), *states, *parameters)`` returns
    ``(output (T, B, D*H), *final states)``, computed by the layer itself (see the module doc)."""

    @staticmethod
    def forward(ctx, layer_id, x, *tensors):
        layer = _LAYERS[layer_id]
        num_states = 2 if layer._family == "LSTM" else 1
        return _layer_results(layer, x, tensors[:num_states], tensors[num_states:])

    @staticmethod
    def symbolic(g, layer_id, x, *tensors):
        return _layer_nodes(g, _LAYERS[layer_id], x, tensors)


def _layer_results(layer, x, states, parameters):
    """The layer's (output (T, B, D*H), *final states) computed from the tensors given alone: the
    trace records the Function's forward as a graph of its inputs, in which the layer's own
    Parameters (module attributes) are not values."""
    from .. import kernels
    from ..cells import CellWeights
    from ..layers import _weight_names
    from ..recurrent import run_stack

    by_name = dict(zip((n for n, _ in layer.named_parameters()), parameters))
    directions = 2 if layer.bidirectional else 1
    weights = [CellWeights(*(by_name.get(name) for name in _weight_names(k, d, layer.bias, layer.proj_size > 0)))
               for k in range(layer.num_layers) for d in range(directions)]
    T, B = x.shape[0], x.shape[1]
    data = x.reshape(T * B, x.shape[2])  # (T*B, I): packed layout, fixed batch
    eq = layer.equations
    with _running_node(), torch.no_grad():
        kernel = kernels.select(layer.backend, eq, data, weights[0])
        output, finals = run_stack(
            data, [B] * T, tuple(states),
            lambda k, d, inputs, sizes, state0: kernel.layer(eq, inputs, sizes, state0, weights[k * directions + d],
                                                             d == 1),
            num_layers=layer.num_layers, num_directions=directions)
    return (output.view(T, B, output.shape[-1]), *finals)


def _constant(g, values):
    return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))


def _onnx_rows(g, weight, kind, hidden):
    """The weight's rows (blocks of ``hidden``) gathered into ONNX's gate order."""
    order = [block * hidden + j for block in _ONNX_GATE_ORDER[kind] for j in range(hidden)]
    return g.op("Gather", weight, _constant(g, order), axis_i=0)


def _stack_directions(g, per_direction, shape):
    """(D, *shape) from D tensors of the static ``shape``: each reshaped to (1, *shape), concatenated.
    (Reshape and Gather, not Unsqueeze and Slice, whose arguments moved between opsets.)"""
    leading = [g.op("Reshape", t, _constant(g, [1, *shape])) for t in per_direction]
    return leading[0] if len(leading) == 1 else g.op("Concat", *leading, axis_i=0)


def _absent(g):
    """An optional input left out (the graph's None, which the exporter writes as an empty name)."""
    node = g.op("prim::Constant")
    node.setType(torch.OptionalType.ofTensor())
    return node


def _layer_nodes(g, layer, x, tensors):
    kind = {"RNN": "RNN", "LSTM": "LSTM", "GRU": "GRU"}[layer._family]
    num_states = 2 if kind == "LSTM" else 1
    states, params = tensors[:num_states], tensors[num_states:]
    names = [n for n, _ in layer.named_parameters()]
    by_name = dict(zip(names, params))
    H, directions = layer.hidden_size, (2 if layer.bidirectional else 1)
    suffixes = [""] + (["_reverse"] if directions == 2 else [])
    finals = [[] for _ in range(num_states)]
    for k in range(layer.num_layers):
        w = [_onnx_rows(g, by_name[f"weight_ih_l{k}{s}"], kind, H) for s in suffixes]
        r = [_onnx_rows(g, by_name[f"weight_hh_l{k}{s}"], kind, H) for s in suffixes]
        gates = len(_ONNX_GATE_ORDER[kind]) * H
        layer_input = layer.input_size if k == 0 else directions * H
        inputs = [x, _stack_directions(g, w, [gates, layer_input]), _stack_directions(g, r, [gates, H])]
        if layer.bias:
            b = [g.op("Concat", _onnx_rows(g, by_name[f"bias_ih_l{k}{s}"], kind, H),
                      _onnx_rows(g, by_name[f"bias_hh_l{k}{s}"], kind, H), axis_i=0) for s in suffixes]
            inputs.append(_stack_directions(g, b, [2 * gates]))
        else:
            inputs.append(_absent(g))  # B: none, ONNX's default is zeros
        inputs.append(_absent(g))  # sequence_lens: none, every sequence runs all T steps
        rows = _constant(g, list(range(k * directions, (k + 1) * directions)))
        inputs += [g.op("Gather", s, rows, axis_i=0) for s in states]
        attributes = dict(hidden_size_i=H, direction_s="bidirectional" if directions == 2 else "forward")
        if kind == "GRU":
            attributes["linear_before_reset_i"] = 1
        if kind == "RNN":
            attributes["activations_s"] = [layer.nonlinearity.capitalize()] * directions
        nodes = g.op(kind, *inputs, outputs=1 + num_states, **attributes)
        y = nodes[0]  # (T, D, B, H) -> (T, B, D, H) -> (T, B, D*H)
        y = g.op("Transpose", y, perm_i=[0, 2, 1, 3])
        x = g.op("Reshape", y, _constant(g, [0, 0, -1]))
        for kept, final in zip(finals, nodes[1:]):
            kept.append(final)
    stacked = [f[0] if len(f) == 1 else g.op("Concat", *f, axis_i=0) for f in finals]
    return (x, *stacked)


__all__ = ["OnnxRecurrence", "node_forward", "check_exportable", "inside_node"]
