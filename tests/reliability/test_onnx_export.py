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


def test_torchscript_exporter_is_refused_clearly():
    model = rnnkit.LSTM(4, 6).eval()
    with pytest.raises(Exception, match="dynamo=True"):
        torch.onnx.export(model, (torch.randn(5, 2, 4),), io.BytesIO(), dynamo=False)
