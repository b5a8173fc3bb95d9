"""ONNX (issue 7, item 4): a model of rnnkit LSTM, GRU and RNN layers (bidirectional, 2 layers,
batch_first) exported by torch.onnx.export runs in onnxruntime at other batch sizes and lengths."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")  # torch.onnx's dynamo exporter needs it
ort = pytest.importorskip("onnxruntime")

# the exporter's own chatter (deprecations inside torch.onnx), not findings about rnnkit
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

import onnx  # noqa: E402

import rnnkit  # noqa: E402
from helpers import assert_within_rounding, float64_truth_of  # noqa: E402
from rnnkit.export import onnx as rk_onnx  # noqa: E402

# onnxruntime runs the graph in float32 (its own kernels: MLAS products, its own sigmoid and tanh), torch
# in float32 (the fused kernels): other roundings.  Each is held within float32's rounding of the float64
# computation on the same values (helpers: a bound derived from the computation's sensitivity to rounding,
# the same on every machine), not to a fixed difference between the two.


class Stack(torch.nn.Module):
    def __init__(self):
        super().__init__()
        kw = dict(num_layers=2, bidirectional=True, batch_first=True)
        self.lstm = rnnkit.LSTM(4, 8, **kw)
        self.gru = rnnkit.GRU(16, 6, **kw)
        self.rnn = rnnkit.RNN(12, 5, nonlinearity="relu", dropout=0.3, **kw)

    def forward(self, x, h0):
        y, (h, c) = self.lstm(x)
        y, h2 = self.gru(y, h0)
        y, h3 = self.rnn(y)
        return y, h, c, h2, h3


EXPORT_SHAPE = (3, 7)  # batch, length at export


@pytest.fixture(scope="module")
def exported():
    torch.manual_seed(0)
    model = Stack().eval()
    B, T = EXPORT_SHAPE
    x, h0 = torch.randn(B, T, 4), torch.randn(4, B, 6)
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    program = torch.onnx.export(model, (x, h0), dynamo=True, input_names=["x", "h0"],
                                dynamic_shapes=({0: batch, 1: time}, {1: batch}))
    buffer = io.BytesIO()
    onnx.save(program.model_proto, buffer)
    return model, buffer.getvalue()


@pytest.mark.parametrize("batch,length", [(5, 13), (1, 2), (2, 1), (3, 7), (8, 30)])
def test_onnxruntime_equals_torch_at_other_batch_and_length(exported, batch, length):
    model, data = exported
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(batch * 100 + length)
    x, h0 = torch.randn(batch, length, 4, generator=gen), torch.randn(4, batch, 6, generator=gen)
    got = session.run(None, {"x": x.numpy(), "h0": h0.numpy()})
    with torch.no_grad():
        want = model(x, h0)
    assert len(got) == len(want) == 5
    for g, w in zip(got, want):
        assert g.shape == tuple(w.shape)
    truth, sensitivities = float64_truth_of(lambda m, x, h0: m(x, h0), model, [x, h0], grad=False)
    assert_within_rounding([torch.from_numpy(g) for g in got], truth, sensitivities, torch.float32, who="onnxruntime")
    assert_within_rounding(list(want), truth, sensitivities, torch.float32, who="torch")


def test_the_graph_is_dynamic_not_unrolled(exported):
    """Batch and time are symbols in the declared shapes, and the time loop is ONNX Scan (2 per layer:
    one per direction), not T copies of the step."""
    _, data = exported
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert isinstance(dims["x"][0], str) and isinstance(dims["x"][1], str) and dims["x"][2] == 4
    assert dims["h0"][1] == dims["x"][0]  # one batch symbol
    for out in model.graph.output:
        shape = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
        assert EXPORT_SHAPE[1] not in shape and EXPORT_SHAPE[0] not in shape, (out.name, shape)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Scan") == 3 * 2 * 2  # 3 layers x 2 layers deep x 2 directions


def test_helper_export_and_run(tmp_path):
    """rnnkit.export.onnx.export names the dynamic axes and writes the file; run() reads it back."""
    torch.manual_seed(1)
    model = rnnkit.GRU(3, 4, batch_first=False).eval()
    path = tmp_path / "gru.onnx"
    rk_onnx.export(model, (torch.randn(6, 2, 3),), path, batch_dim=1, time_dim=0)
    x = torch.randn(9, 5, 3)
    got = rk_onnx.run(path, x)
    with torch.no_grad():
        want = model(x)
    truth, sensitivities = float64_truth_of(lambda m, x: m(x), model, [x], grad=False)
    assert_within_rounding([torch.from_numpy(g) for g in got[:2]], truth, sensitivities, torch.float32,
                           who="onnxruntime")
    assert_within_rounding(list(want), truth, sensitivities, torch.float32, who="torch")


@pytest.mark.parametrize("strict", [False, True])
def test_torch_export_keeps_time_dynamic_and_refuses_packed_input(strict):
    """Non-strict (the default) and strict (dynamo traces the layer's Python too) export alike."""
    torch.manual_seed(2)
    model = rnnkit.LSTM(4, 6, bidirectional=True, batch_first=True, proj_size=3).eval()
    program = torch.export.export(model, (torch.randn(3, 7, 4),), strict=strict,
                                  dynamic_shapes=({0: torch.export.Dim("b"), 1: torch.export.Dim("t")},))
    x = torch.randn(5, 12, 4)
    got, want = program.module()(x), model(x)
    # the exported program (the reference loop's ops) and the module (the fused kernel) round differently:
    # both within float32's rounding of the float64 computation
    truth, sensitivities = float64_truth_of(lambda m, x: m(x), model, [x], grad=False)
    leaves = torch.utils._pytree.tree_leaves
    assert_within_rounding([t.detach() for t in leaves(got)], truth, sensitivities, torch.float32, who="export")
    assert_within_rounding([t.detach() for t in leaves(want)], truth, sensitivities, torch.float32, who="module")

    class Packed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = rnnkit.LSTM(4, 6)

        def forward(self, x):
            return self.lstm(pack_padded_sequence(x, [7, 5, 2]))[0].data

    # strict: dynamo refuses to trace torch's pack_padded_sequence itself, before the layer is reached
    with pytest.raises(Exception, match="PackedSequence cannot be exported" if not strict else "pack_padded_sequence"):
        torch.export.export(Packed(), (torch.randn(7, 3, 4),), strict=strict)


# The TorchScript-based exporter (dynamo=False) writes ONNX's own RNN, LSTM and GRU nodes, one per layer,
# as for torch.nn's layers: (layer, input at export (T, B, I) or unbatched, initial state given)
TORCHSCRIPT_CASES = {
    "lstm-2layer-bi-batch_first": (lambda: rnnkit.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True,
                                                        dropout=0.2), True, False),
    "gru-h0-no_bias": (lambda: rnnkit.GRU(4, 5, bias=False), True, True),
    "gru-2layer-bi-h0": (lambda: rnnkit.GRU(4, 5, num_layers=2, bidirectional=True), True, True),
    "rnn_tanh-bi": (lambda: rnnkit.RNN(4, 3, bidirectional=True), True, False),
    "rnn_relu-2layer-h0": (lambda: rnnkit.RNN(4, 3, num_layers=2, nonlinearity="relu"), True, True),
    "lstm-unbatched-h0": (lambda: rnnkit.LSTM(4, 6), False, True),
}


def _state(layer, batch, gen):
    rows = layer.num_layers * (2 if layer.bidirectional else 1)
    shape = (rows, batch, layer.hidden_size) if batch else (rows, layer.hidden_size)
    states = tuple(torch.randn(shape, generator=gen) for _ in range(2 if isinstance(layer, rnnkit.LSTM) else 1))
    return states if len(states) == 2 else states[0]


@pytest.mark.parametrize("case", list(TORCHSCRIPT_CASES))
def test_torchscript_exporter_writes_onnx_recurrent_nodes(case):
    """torch.onnx.export(..., dynamo=False): one ONNX RNN/LSTM/GRU node per layer (not a loop unrolled for
    the example's length); onnxruntime at other batch sizes and lengths within float32's rounding."""
    build, batched, with_state = TORCHSCRIPT_CASES[case]
    torch.manual_seed(3)
    layer = build().eval()
    gen = torch.Generator().manual_seed(4)

    def example(length, batch):
        x = torch.randn(*((batch, length) if layer.batch_first else (length, batch)) if batched else (length,), 4,
                        generator=gen)
        return (x, _state(layer, batch if batched else 0, gen)) if with_state else (x,)

    args = example(5, 2)
    names = ["x"] + (["h0", "c0"] if with_state and isinstance(layer, rnnkit.LSTM) else ["h0"] if with_state else [])
    time_axis, batch_axis = (1, 0) if layer.batch_first else (0, 1)
    dynamic = {"x": {time_axis: "time", batch_axis: "batch"} if batched else {0: "time"}}
    dynamic.update({name: {1: "batch"} for name in names[1:] if batched})
    buffer = io.BytesIO()
    flat_args = (args[0], *(args[1] if isinstance(layer, rnnkit.LSTM) and with_state else args[1:]))

    class Flat(torch.nn.Module):  # the exporter names flat inputs: (x, h0[, c0])
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x, *states):
            hx = None if not states else states if len(states) == 2 else states[0]
            out, hn = self.layer(x, hx)
            return (out, *hn) if isinstance(hn, tuple) else (out, hn)

    model = Flat().eval()
    torch.onnx.export(model, flat_args, buffer, dynamo=False, input_names=names, dynamic_axes=dynamic)
    graph = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(graph)
    kind = type(layer).__name__
    assert [n.op_type for n in graph.graph.node].count(kind) == layer.num_layers
    assert "Loop" not in {n.op_type for n in graph.graph.node}
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for length, batch in [(9, 3), (1, 1), (5, 2)]:
        args = example(length, batch)
        flat = (args[0], *(args[1] if isinstance(layer, rnnkit.LSTM) and with_state else args[1:]))
        got = session.run(None, {name: t.numpy() for name, t in zip(names, flat)})
        with torch.no_grad():
            want = model(*flat)
        assert [g.shape for g in got] == [tuple(w.shape) for w in want]
        truth, sensitivities = float64_truth_of(lambda m, *a: m(*a), model, list(flat), grad=False)
        assert_within_rounding([torch.from_numpy(g) for g in got], truth, sensitivities, torch.float32,
                               who="onnxruntime")


@pytest.mark.parametrize("what,match", [
    ("packed", "PackedSequence cannot be exported"),
    ("proj_size", "no projection"),
    ("training dropout", "model.eval"),
])
def test_torchscript_exporter_refuses_what_onnx_nodes_cannot_hold(what, match):
    if what == "packed":
        class Packed(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = rnnkit.LSTM(4, 6)

            def forward(self, x):
                return self.lstm(pack_padded_sequence(x, [5, 3]))[0].data
        model, x = Packed().eval(), torch.randn(5, 2, 4)
    elif what == "proj_size":
        model, x = rnnkit.LSTM(4, 6, proj_size=3).eval(), torch.randn(5, 2, 4)
    else:  # the exporter puts the model in eval mode unless told to export it for training
        model, x = rnnkit.GRU(4, 6, num_layers=2, dropout=0.5), torch.randn(5, 2, 4)
    training = torch.onnx.TrainingMode.TRAINING if what == "training dropout" else torch.onnx.TrainingMode.EVAL
    with pytest.raises(Exception, match=match):
        torch.onnx.export(model, (x,), io.BytesIO(), dynamo=False, training=training)
