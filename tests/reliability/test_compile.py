"""torch.compile (issue 7, item 5): a model using rnnkit layers compiles, runs and equals eager.

What happens: dynamo compiles the model around each rnnkit layer, and the layer itself is a graph
break that runs eagerly on its kernel (rnnkit.export.captured_forward / eager_call): the fused numba
kernels cannot be traced, and inductor in torch 2.13 cannot lower the scan loop on the CPU.
"""
from __future__ import annotations

import pytest
import torch

import rnnkit
import rnnkit.cells


class Model(torch.nn.Module):
    def __init__(self, backend="auto"):
        super().__init__()
        self.proj = torch.nn.Linear(3, 4)
        self.lstm = rnnkit.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True, backend=backend)
        self.gru = rnnkit.GRU(12, 5, batch_first=True, backend=backend)
        self.rnn = rnnkit.Recurrent(rnnkit.cells.LayerNormLSTMCell, 5, 4, batch_first=True, backend=backend if backend != "fused" else "auto")
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        y, _ = self.lstm(torch.tanh(self.proj(x)))
        y, h = self.gru(y)
        y, _ = self.rnn(y + h.transpose(0, 1))
        return self.head(y).relu()


def _outputs_and_grads(model, fn, x):
    x = x.clone().requires_grad_()
    out = fn(x)
    grads = torch.autograd.grad((out * out).sum(), [x] + list(model.parameters()))
    return out, grads


def test_compiled_model_equals_eager():
    """The default compiler (inductor): forward and every gradient equal eager.  In float64: inductor
    generates its own code for the ops around the layers (fused loops, other vector widths), which rounds
    differently from eager's, and float64 leaves ~1e-16 of that (in float32 a fixed tolerance held only by
    the luck of the machine's rounding)."""
    torch.manual_seed(0)
    model = Model().double()
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    out, grads = _outputs_and_grads(model, torch.compile(model), x)
    ref, ref_grads = _outputs_and_grads(model, model, x)
    assert out.dtype == torch.float64
    assert (out - ref).abs().max() <= 1e-10
    assert max((a - b).abs().max().item() for a, b in zip(grads, ref_grads)) <= 1e-10


@pytest.mark.parametrize("backend", ["auto", "fused", "reference"])
def test_rnnkit_layers_are_graph_breaks_that_run_their_kernels(backend):
    """With a backend that records what dynamo hands it: the code around the layers is compiled
    (graphs with the Linear layers' addmm), the layers' own recurrences are not in any graph, and
    the result and its gradient equal eager bitwise (the layers ran the same kernels)."""
    torch.manual_seed(0)
    model = Model(backend)
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(model, backend=recording_backend)
    for shape in [(2, 5, 3), (4, 11, 3)]:  # a new batch and length: the graphs around the layers recompile
        x = torch.randn(*shape, requires_grad=True)
        out = compiled(x)
        assert torch.equal(out, model(x))
        grad, = torch.autograd.grad(out.sum(), [x])
        assert torch.equal(grad, torch.autograd.grad(model(x).sum(), [x])[0])
    targets = [str(n.target) for gm in graphs for n in gm.graph.nodes if n.op in ("call_function", "call_method")]
    assert graphs and any("linear" in t or "addmm" in t for t in targets)
    assert not any("sigmoid" in t or "scan" in t for t in targets)  # no gate math was traced


def test_fullgraph_reports_the_graph_break():
    """fullgraph=True promises no graph break; rnnkit layers are one, so it refuses (as documented)."""
    torch.manual_seed(0)
    layer = rnnkit.GRU(3, 4)
    with pytest.raises(Exception):
        torch.compile(layer, fullgraph=True, backend="eager")(torch.randn(5, 2, 3))
