"""rnnkit layers inside graph capture: torch.export, torch.onnx.export and torch.compile.

rnnkit's kernels walk time in a Python loop (reference) or in numba (fused).  A graph
capture would unroll the first, baking the sequence length into the graph, and cannot look
into the second.  ``RNNBase.forward`` therefore asks ``exporting()`` first and, while an
export captures a graph, hands the call to ``captured_forward``:

- **torch.export / torch.onnx.export** (``exporting()``): padded or unbatched input runs
  as one ``torch._higher_order_ops.scan`` per layer-direction (rnnkit.export.scan), the
  cell's own equations as the body.  The graph holds one loop whose trip count is the
  input's length; torch.onnx's exporter writes it as an ONNX ``Scan``, so the exported
  model takes any batch size and sequence length (see rnnkit.export.onnx).
  A PackedSequence cannot be captured (its batch sizes are data): a clear error.
- **The TorchScript-based ONNX exporter** (``torch.onnx.export(..., dynamo=False)``): each layer
  becomes ONNX's own RNN/LSTM/GRU node (rnnkit.export.onnx_nodes), as torch.nn's layers do there;
  each layer-direction of rnnkit.Recurrent (any cell, a user's included) one ONNX ``Loop`` over the
  cell's traced step (rnnkit.export.onnx_loop), dynamic in batch and time.
- **torch.compile** (dynamo): the layers are not diverted here.  dynamo traces their Python, and
  ``kernels.select`` hands it each fused kernel of rnnkit's cells as one operator,
  ``rnnkit::fused_layer`` (kernels/opaque.py), and each layer-direction of a user's cell as
  ``rnnkit::cell_layer`` (kernels/opaque_cell.py): no graph break, so ``fullgraph=True`` compiles, for
  the layers and for rnnkit.Recurrent on padded input.  The layers' reference loop runs eagerly (a
  graph break, not a loop unrolled into the graph), and so does a Recurrent call that needs it:
  lengths, a PackedSequence, an in-step option (``eager_call``).  (Inductor in
  torch 2.13 cannot lower the scan loop on the CPU, and numba code cannot be traced.)
- **rnnkit.Recurrent under an export** (``captured_recurrent``): padded input, one scan per
  layer-direction over each cell's equations, or a user's cell's forward (rnnkit.export.scan.scan_recurrent),
  dynamic in batch and time; lengths, PackedSequence and the in-step options are refused clearly.

This module stays light: ``import rnnkit`` imports it, and nothing here imports torch.onnx,
onnx or onnxruntime.
"""
from __future__ import annotations

import sys
import warnings

import torch
from torch.nn.utils.rnn import PackedSequence

from . import onnx_nodes


def _in_onnx_export() -> bool:
    # torch.onnx is imported by whoever exports; until then no export can be running
    # (importing it here would cost the first forward seconds).
    # The TorchScript-based exporter runs the model under jit tracing: checking that first is
    # cheap, is_in_onnx_export() costs ~10 us, paid by every forward call.
    onnx = sys.modules.get("torch.onnx")
    return (onnx is not None and torch.jit.is_tracing() and bool(onnx.is_in_onnx_export())
            and not onnx_nodes.inside_node())


def exporting() -> bool:
    """True while torch.export or torch.onnx.export is capturing a graph."""
    return bool(torch.compiler.is_exporting()) or _in_onnx_export()


def compiling() -> bool:
    """True while dynamo (torch.compile) traces, outside an export."""
    return bool(torch.compiler.is_compiling()) and not exporting()


def pin_traced_shapes(who: str, input, hx):
    """(input, hx) as ``torch.jit.trace`` should record them for an rnnkit layer.

    The tracer records torch ops only, so a trace runs the reference loop (the fused kernels refuse
    tracing: see kernels/cpu), unrolled step by step for the traced length and batch.  Every tensor
    is passed through a split to its traced size along each axis: the trace then raises
    ``split_with_sizes expects split_sizes to sum exactly to ...`` on an input of another shape,
    where without it some shapes (another batch and length of the same total, a batch of 1 against
    a larger one) would broadcast into a wrong result.  A PackedSequence's batch sizes are data the
    trace would bake in silently: refused.  (torch.export keeps the length dynamic: see above.)
    """
    if isinstance(input, tuple):  # a PackedSequence, which the tracer hands over as a plain tuple
        raise RuntimeError(
            f"{who}: torch.jit.trace cannot record a PackedSequence through an rnnkit layer (its batch sizes "
            "would be baked into the trace); trace on a padded tensor, or use torch.export")
    warnings.warn(
        f"{who}: torch.jit.trace records rnnkit's time loop step by step; the trace runs only on inputs of "
        f"the traced shape {tuple(int(s) for s in input.shape)} and raises on others. torch.export keeps the length dynamic.",
        torch.jit.TracerWarning, stacklevel=3)

    def pin(t):
        for dim, size in enumerate(t.shape):
            t = t.split([int(size)], dim)[0]  # int(): a constant of the trace, not the traced size
        return t

    if hx is not None:
        hx = tuple(pin(s) for s in hx) if isinstance(hx, (tuple, list)) else pin(hx)
    return pin(input), hx


def _call(fn, *args, **kwargs):
    return fn(*args, **kwargs)


# torch.compiler.disable(_call), made on the first call under torch.compile: the decorator imports
# torch._dynamo, which would add ~1.2 s to every `import rnnkit` (issue 17), and dynamo is imported
# anyway by the time anything compiles.
_EAGER = {}


def run_eagerly(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` run eagerly: a graph break under torch.compile (dynamo does not trace
    into it).  Used for what dynamo should not unroll or cannot trace: Recurrent's forward, the
    reference loop (kernels/opaque.py)."""
    call = _EAGER.get("call")
    if call is None:
        call = _EAGER["call"] = torch.compiler.disable(_call)
    return call(fn, *args, **kwargs)


def eager_call(module, *args, **kwargs):
    """``module.forward(*args, **kwargs)`` run eagerly: a graph break under torch.compile.

    Inside, dynamo is not tracing, so this is the module's ordinary forward on its kernels.
    rnnkit.Recurrent uses it under torch.compile for the calls dynamo should not trace
    (``Recurrent._traceable``).
    """
    return run_eagerly(module.forward, *args, **kwargs)


def captured_forward(layer, input, hx=None):
    """``layer(input, hx)`` for an rnnkit RNN/LSTM/GRU while an export captures a graph (see the module doc)."""
    if not torch.compiler.is_exporting():  # torch.onnx.export(..., dynamo=False): ONNX's own RNN nodes
        return onnx_nodes.node_forward(layer, input, hx)
    if isinstance(input, PackedSequence):
        raise RuntimeError(
            f"{type(layer).__name__}: a PackedSequence cannot be exported (its batch sizes are data, "
            "not shapes); export the layer on a padded tensor (L, N, H_in), with a mask or "
            "lengths handled outside the layer")
    from .scan import scan_forward
    return scan_forward(layer, input, hx)


def int8_not_exportable(who: str) -> RuntimeError:
    """The error of an rnnkit int8 layer (rnnkit.quantize_dynamic) inside torch.export or torch.onnx.export:
    its loops are numba code and its products fbgemm's packed objects, which no exported graph holds."""
    return RuntimeError(f"{who}: rnnkit's dynamically quantized (int8) layers cannot be exported with torch.export "
                        "or torch.onnx.export (their int8 loops are not graph operations); export the float model, "
                        "and quantize the exported model with your runtime's own tools (e.g. onnxruntime's "
                        "quantize_dynamic); torch.compile runs them (eagerly, a graph break)")


def captured_recurrent(module, input, hx=None, lengths=None):
    """``module(input, hx)`` for an rnnkit.Recurrent while an export captures a graph: one scan per
    layer-direction over its cells' equations (rnnkit.export.scan.scan_recurrent), or, under the TorchScript
    exporter, one ONNX Loop per layer-direction over its cells' traced step (rnnkit.export.onnx_loop)."""
    if lengths is not None:
        raise RuntimeError(f"Recurrent({module.cell_name}): lengths cannot be exported (they are data, not shapes); "
                           "export on full-length sequences and mask the padded steps outside the module")
    if not torch.compiler.is_exporting():  # torch.onnx.export(..., dynamo=False)
        from .onnx_loop import cell_direction, equations_direction
        from .scan import captured_stack
        from ..cells._base import equations_of

        def direction(cell, inputs, state0, reverse):
            eq = equations_of(cell)
            if eq is None:
                return cell_direction(cell, inputs, state0, reverse)
            return equations_direction(eq, cell.cell_weights(), inputs, state0, reverse)

        return captured_stack(module, input, hx, direction)
    from .scan import scan_recurrent
    return scan_recurrent(module, input, hx)


__all__ = ["exporting", "compiling", "captured_forward", "captured_recurrent", "eager_call", "run_eagerly",
           "pin_traced_shapes", "int8_not_exportable"]
