"""torch.export and ONNX of rnnkit.Recurrent over every rnnkit cell (issue 17): one scan per
layer-direction over the cell's equations (torch.export, ONNX with dynamo=True), or one ONNX Loop over the
cell's traced step (ONNX with dynamo=False, a user's cell too), dynamic in batch and time, the program's
numbers within float32's rounding of the float64 computation, as eager's; what a captured graph cannot
hold is refused clearly."""
from __future__ import annotations

import io

import numpy as np

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from helpers import assert_within_rounding, float64_truth_of
from rnnkit.verify.fuzz import cell_classes

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CELLS = cell_classes()


def _dynamic(batch_first=True):
    b, t = torch.export.Dim("batch"), torch.export.Dim("time")
    return ({0: b, 1: t} if batch_first else {0: t, 1: b},)


@pytest.mark.parametrize("name", list(CELLS))
def test_export_is_dynamic_and_within_rounding(name):
    """2 layers, both directions, batch_first: exported at one shape, run at others."""
    torch.manual_seed(0)
    model = rnnkit.Recurrent(CELLS[name], 4, 5, num_layers=2, bidirectional=True, batch_first=True).eval()
    program = torch.export.export(model, (torch.randn(2, 5, 4),), dynamic_shapes=_dynamic())
    for batch, length in [(3, 9), (1, 1)]:
        x = torch.randn(batch, length, 4, generator=torch.Generator().manual_seed(batch + length))
        got = torch.utils._pytree.tree_leaves(program.module()(x))
        truth, sensitivities = float64_truth_of(lambda m, x: m(x), model, [x], grad=False)
        assert_within_rounding([t.detach() for t in got], truth, sensitivities, torch.float32, who="export")


@pytest.mark.parametrize("merge", ["sum", "mean", "mul"])
def test_export_merges_directions_and_takes_initial_states(merge):
    torch.manual_seed(1)
    model = rnnkit.Recurrent(rnnkit.cells.LayerNormLSTMCell, 4, 5, bidirectional=True, merge=merge).eval()
    x, h0, c0 = torch.randn(6, 2, 4), torch.randn(2, 2, 5), torch.randn(2, 2, 5)
    program = torch.export.export(model, (x, (h0, c0)))
    got = torch.utils._pytree.tree_leaves(program.module()(x, (h0, c0)))
    truth, sensitivities = float64_truth_of(lambda m, x, h, c: m(x, (h, c)), model, [x, h0, c0], grad=False)
    assert_within_rounding([t.detach() for t in got], truth, sensitivities, torch.float32, who="export")


def test_export_of_a_users_cell_is_dynamic_and_within_rounding():
    """A user's cell (two states, a LayerNorm, a tied weight): one scan per layer-direction over its own
    forward, its parameters the program's inputs; then ONNX (dynamo=True) in onnxruntime at other shapes."""
    torch.manual_seed(7)
    model = rnnkit.Recurrent(_UserLSTMCell, 4, 5, num_layers=2, bidirectional=True, batch_first=True).eval()
    program = torch.export.export(model, (torch.randn(2, 5, 4),), dynamic_shapes=_dynamic())
    x = torch.randn(3, 9, 4, generator=torch.Generator().manual_seed(8))
    truth, sensitivities = float64_truth_of(lambda m, x: m(x), model, [x], grad=False)
    got = torch.utils._pytree.tree_leaves(program.module()(x))
    assert_within_rounding([t.detach() for t in got], truth, sensitivities, torch.float32, who="export")
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.compiler.reset()  # (see test_onnx_dynamo_export_runs_in_onnxruntime_at_other_shapes)
    onnx_program = torch.onnx.export(model, (torch.randn(2, 5, 4),), dynamo=True, input_names=["x"],
                                     dynamic_shapes=_dynamic())
    buffer = io.BytesIO()
    onnx.save(onnx_program.model_proto, buffer)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})
    assert_within_rounding([torch.from_numpy(g) for g in got], truth, sensitivities, torch.float32,
                           who="onnxruntime")


def test_onnx_dynamo_export_runs_in_onnxruntime_at_other_shapes():
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(2)
    model = rnnkit.Recurrent(rnnkit.cells.LayerNormLSTMCell, 4, 5, bidirectional=True, batch_first=True).eval()
    # torch 2.13: after an export at static shapes in the same process (this file's other tests), the ONNX
    # exporter reuses dynamo's trace of the scan's body and fixes the batch size (torch.nn-free repro: an
    # rnnkit.LSTM exported statically, then to ONNX with dynamic_shapes); resetting dynamo's caches
    # first, as a user exporting twice in one process would, keeps the axes dynamic.  The README says so.
    torch.compiler.reset()
    program = torch.onnx.export(model, (torch.randn(2, 5, 4),), dynamo=True, input_names=["x"],
                                dynamic_shapes=_dynamic())
    onnx = pytest.importorskip("onnx")
    buffer = io.BytesIO()
    onnx.save(program.model_proto, buffer)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 11, 4)
    got = session.run(None, {"x": x.numpy()})
    truth, sensitivities = float64_truth_of(lambda m, x: m(x), model, [x], grad=False)
    assert_within_rounding([torch.from_numpy(g) for g in got], truth, sensitivities, torch.float32,
                           who="onnxruntime")


class _UserLSTMCell(torch.nn.Module):
    """A user's cell with two states, a LayerNorm and a weight used twice (tied)."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.linear = torch.nn.Linear(input_size + hidden_size, 2 * hidden_size)
        self.norm = torch.nn.LayerNorm(hidden_size)
        self.gate = torch.nn.Linear(hidden_size, hidden_size, bias=False)
        self.again = torch.nn.Linear(hidden_size, hidden_size, bias=False)
        self.again.weight = self.gate.weight

    def forward(self, x, hx=None):
        size = self.gate.out_features
        h, c = (x.new_zeros(x.shape[0], size), x.new_zeros(x.shape[0], size)) if hx is None else hx
        a, b = self.linear(torch.cat([x, h], -1)).chunk(2, -1)
        c = torch.sigmoid(a + self.gate(c)) * c + torch.tanh(b)
        return self.norm(torch.tanh(self.again(c))), c


@pytest.mark.parametrize("name", list(CELLS) + ["user"])
def test_torchscript_onnx_exporter_writes_a_loop(name):
    """torch.onnx.export(..., dynamo=False) of Recurrent itself: one ONNX Loop per layer-direction over the
    cell's traced step, not the example's length unrolled; onnxruntime at other batch sizes and lengths (and
    with an initial state) within float32's rounding of the float64 computation."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(5)
    cell = _UserLSTMCell if name == "user" else CELLS[name]
    model = rnnkit.Recurrent(cell, 4, 5, num_layers=2, bidirectional=True, batch_first=True).eval()
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.randn(2, 5, 4),), buffer, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch", 1: "time"}})
    graph = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(graph)
    assert [node.op_type for node in graph.graph.node].count("Loop") == 4
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for batch, length in [(3, 9), (1, 1)]:
        x = torch.randn(batch, length, 4, generator=torch.Generator().manual_seed(batch + length))
        got = session.run(None, {"x": x.numpy()})
        truth, sensitivities = float64_truth_of(lambda m, x: m(x), model, [x], grad=False)
        assert_within_rounding([torch.from_numpy(g) for g in got], truth, sensitivities, torch.float32,
                               who="onnxruntime")


def test_torchscript_onnx_exporter_takes_initial_states_and_float64():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(6)
    model = rnnkit.Recurrent(rnnkit.cells.LayerNormLSTMCell, 4, 5, bidirectional=True, merge="sum").double().eval()

    class Flat(torch.nn.Module):  # the exporter names flat inputs: (x, h0, c0)
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x, h0, c0):
            out, (h, c) = self.model(x, (h0, c0))
            return out, h, c

    x, h0, c0 = torch.randn(6, 2, 4).double(), torch.randn(2, 2, 5).double(), torch.randn(2, 2, 5).double()
    buffer = io.BytesIO()
    torch.onnx.export(Flat().eval(), (x, h0, c0), buffer, dynamo=False, input_names=["x", "h0", "c0"],
                      dynamic_axes={"x": {0: "time", 1: "batch"}, "h0": {1: "batch"}, "c0": {1: "batch"}})
    onnx.checker.check_model(onnx.load_from_string(buffer.getvalue()))
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    x, h0, c0 = torch.randn(8, 3, 4).double(), torch.randn(2, 3, 5).double(), torch.randn(2, 3, 5).double()
    got = session.run(None, {"x": x.numpy(), "h0": h0.numpy(), "c0": c0.numpy()})
    with torch.no_grad():
        out, (h, c) = model(x, (h0, c0))
    for g, want in zip(got, (out, h, c)):  # float64 throughout (float32 would be off by ~1e-7): onnxruntime's
        # own float64 ops (its layer norm's epsilon is a float32 attribute) differ from torch's by ~1e-10
        assert g.dtype == np.float64
        torch.testing.assert_close(torch.from_numpy(g), want, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("what,match", [
    ("packed", "PackedSequence cannot be exported"),
    ("lengths", "lengths cannot be exported"),
    ("return_states", "return_states"),
])
@pytest.mark.parametrize("exporter", ["torch.export", "onnx dynamo=False"])
def test_what_a_scan_cannot_hold_is_refused(what, match, exporter):
    pytest.importorskip("onnx")
    model = rnnkit.Recurrent(rnnkit.cells.GRUCell, 4, 5, return_states=what == "return_states").eval()
    x = torch.randn(6, 2, 4)

    class Call(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            if what == "packed":
                return self.model(pack_padded_sequence(x, [6, 3]))[0].data
            if what == "lengths":
                return self.model(x, lengths=[6, 3])[0]
            return self.model(x)[0]

    with pytest.raises(Exception, match=match):
        if exporter != "torch.export":
            torch.onnx.export(Call(), (x,), io.BytesIO(), dynamo=False)
        else:
            torch.export.export(Call(), (x,))
