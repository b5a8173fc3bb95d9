"""Export models containing rnnkit layers to ONNX with a dynamic batch size and sequence length.

Nothing special is needed: ``torch.onnx.export(model, args, dynamic_shapes=...)`` (the default,
dynamo-based exporter of torch >= 2.9) captures each rnnkit RNN/LSTM/GRU layer as ONNX ``Scan``
loops (rnnkit.export.scan) whose trip count is the input's length.  This module only saves
typing: it names the dynamic axes of every input tensor, and runs the result in onnxruntime.

    from rnnkit.export.onnx import export, run
    program = export(model, (x,), "model.onnx", batch_dim=0, time_dim=1)   # batch_first input
    outputs = run("model.onnx", x_of_any_batch_and_length)

Limits: padded (or unbatched) tensor input only, not PackedSequence; rnnkit.Recurrent exports over
rnnkit's own cells (rnnkit.export.scan.scan_recurrent).  The TorchScript exporter (``dynamo=False``) writes ONNX's own RNN/LSTM/GRU nodes instead
(rnnkit.export.onnx_nodes).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch


def dynamic_shapes_for(args: Sequence, batch_dim: Optional[int] = 1, time_dim: Optional[int] = 0) -> tuple:
    """torch.export's ``dynamic_shapes`` for ``args``: every tensor's ``batch_dim`` and ``time_dim``
    (None: static) are dynamic, one shared Dim each (so h0's batch and x's batch stay one symbol).

    Tensors of fewer dimensions (h0: (D*L, N, H), batch on axis 1) get only the axes they have;
    pass ``dynamic_shapes`` to ``export`` yourself for anything else.
    """
    from torch.export import Dim

    batch = Dim("batch") if batch_dim is not None else None
    time = Dim("time") if time_dim is not None else None

    def spec(a, state=False):
        if isinstance(a, (tuple, list)):
            return type(a)(spec(t, True) for t in a)
        if not isinstance(a, torch.Tensor):
            return None
        if state:  # an (h0, c0) state: (D*L, N, H), batch on axis 1
            return {1: batch} if batch is not None and a.dim() == 3 else None
        axes = {}
        if batch is not None and a.dim() == 3:
            axes[batch_dim] = batch
        if time is not None:
            axes[time_dim if a.dim() == 3 else 0] = time
        return axes or None

    return tuple(spec(a) for a in args)


def export(model: torch.nn.Module, args: tuple, f=None, *, batch_dim: Optional[int] = 1,
           time_dim: Optional[int] = 0, dynamic_shapes=None, **kwargs):
    """``torch.onnx.export`` with the batch and time axes of the inputs dynamic; returns the ONNXProgram.

    ``batch_dim``/``time_dim``: the axes of 3-D inputs ((0, 1) for batch_first models, the default
    (1, 0) for time-major ones); a 2-D (unbatched) input's time axis is 0.  The model is exported in
    eval mode (dropout off) and put back in its mode after.
    """
    if dynamic_shapes is None:
        dynamic_shapes = dynamic_shapes_for(args, batch_dim, time_dim)
    training = model.training
    model.eval()
    try:
        program = torch.onnx.export(model, tuple(args), dynamic_shapes=dynamic_shapes, dynamo=True, **kwargs)
    finally:
        model.train(training)
    if f is not None:
        program.save(str(f))
    return program


def run(model, *inputs, providers: Sequence[str] = ("CPUExecutionProvider",)) -> list:
    """Run an ONNX model (an ONNXProgram, a ModelProto, bytes or a path) in onnxruntime; numpy arrays out."""
    import onnxruntime as ort

    if hasattr(model, "model_proto"):
        model = model.model_proto
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), providers=list(providers))
    flat = []
    for a in inputs:
        flat.extend(a if isinstance(a, (tuple, list)) else [a])
    feeds = {i.name: t.detach().cpu().numpy() for i, t in zip(session.get_inputs(), flat)}
    return session.run(None, feeds)


__all__ = ["export", "run", "dynamic_shapes_for"]
