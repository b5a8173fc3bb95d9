"""torch.export and ONNX of rnnkit.Recurrent over every rnnkit cell (issue 17): one scan per
layer-direction over the cell's equations, dynamic in batch and time, the program's numbers within
float32's rounding of the float64 computation, as eager's; what a scan cannot hold is refused clearly."""
from __future__ import annotations

import io

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


class _UserCell(torch.nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.linear = torch.nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h=None):
        h = x.new_zeros(x.shape[0], self.linear.out_features) if h is None else h
        return torch.tanh(self.linear(torch.cat([x, h], -1)))


@pytest.mark.parametrize("what,match", [
    ("packed", "PackedSequence cannot be exported"),
    ("lengths", "lengths cannot be exported"),
    ("user cell", "only rnnkit's own cells"),
    ("return_states", "return_states"),
    ("torchscript onnx", "dynamo=True"),
])
def test_what_a_scan_cannot_hold_is_refused(what, match):
    cell = _UserCell if what == "user cell" else rnnkit.cells.GRUCell
    model = rnnkit.Recurrent(cell, 4, 5, return_states=what == "return_states").eval()
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
        if what == "torchscript onnx":
            torch.onnx.export(Call(), (x,), io.BytesIO(), dynamo=False)
        else:
            torch.export.export(Call(), (x,))
