"""torch.compile (issue 7, item 5): a model using rnnkit layers compiles, runs and equals eager.

What happens: dynamo traces the layers' Python (checks, layers, directions) and records each fused
kernel of rnnkit.LSTM/GRU/RNN, and of Recurrent over any of rnnkit's cells, as one operator (the C++
operators, or rnnkit::fused_layer, rnnkit/kernels/opaque.py), and each layer-direction of Recurrent over
a user's cell as rnnkit::cell_layer (kernels/opaque_cell.py): no graph break, so fullgraph=True
compiles.  The reference loop of the layers, lengths and Recurrent's in-step options run eagerly, a graph
break (rnnkit.export.eager_call): their time loop would otherwise be unrolled into the graph.
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


def _compiled_with_recorded_graphs(model):
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    return torch.compile(model, backend=recording_backend), graphs


def _targets(graphs):
    return [str(n.target) for gm in graphs for n in gm.graph.nodes if n.op in ("call_function", "call_method")]


@pytest.mark.parametrize("backend", ["auto", "fused", "reference"])
def test_rnnkit_layers_run_their_kernels_in_the_compiled_model(backend):
    """With a backend that records what dynamo hands it: the code around the layers is compiled (graphs
    with the Linear layers' addmm); a fused kernel of rnnkit.LSTM/GRU/RNN is one node of the graph, the
    operator rnnkit::fused_layer (rnnkit/kernels/opaque.py), and the reference loop and Recurrent's cells
    run eagerly (graph breaks); no gate math is traced; the result and its gradient equal eager bitwise
    (the layers ran the same kernels)."""
    torch.manual_seed(0)
    model = Model(backend)
    compiled, graphs = _compiled_with_recorded_graphs(model)
    for shape in [(2, 5, 3), (4, 11, 3)]:  # a new batch and length: the graphs recompile
        x = torch.randn(*shape, requires_grad=True)
        out = compiled(x)
        assert torch.equal(out, model(x))
        grad, = torch.autograd.grad(out.sum(), [x])
        assert torch.equal(grad, torch.autograd.grad(model(x).sum(), [x])[0])
    targets = _targets(graphs)
    assert graphs and any("linear" in t or "addmm" in t for t in targets)
    assert not any("sigmoid" in t or "scan" in t for t in targets)  # no gate math was traced
    # a kernel is one node: the C++ operator (rnnkit::lstm, ...) or rnnkit::fused_layer around numba's
    assert any("rnnkit." in t for t in targets) == (backend != "reference")


@pytest.mark.parametrize("mode, kwargs", [("LSTM", dict(num_layers=2, bidirectional=True)), ("LSTM", dict(proj_size=3)),
                                          ("GRU", dict(bias=False)), ("RNN", dict(nonlinearity="relu"))])
def test_fullgraph_compiles_the_layers_with_no_graph_break(mode, kwargs):
    """torch.compile(fullgraph=True) of a model holding rnnkit.LSTM/GRU/RNN: one graph, the layers'
    kernels inside it as rnnkit::fused_layer; forward bitwise equal to eager, every gradient equal
    in float64 (inductor's code for the Linear layers around rounds its own way)."""
    torch.manual_seed(0)
    layer = getattr(rnnkit, mode)(4, 5, dtype=torch.float64, **kwargs)
    width = (getattr(layer, "proj_size", 0) or 5) * (2 if layer.bidirectional else 1)
    head = torch.nn.Linear(width, 2, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4, dtype=torch.float64), torch.nn.Tanh())

    def forward(x, h0):
        out, state = layer(model(x)) if h0 is None else layer(model(x), h0)
        return head(out), state

    x = torch.randn(6, 3, 3, dtype=torch.float64)
    explained = torch._dynamo.explain(forward)(x, None)
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    compiled = torch.compile(forward, fullgraph=True)
    params = list(layer.parameters()) + list(head.parameters()) + list(model.parameters())
    for x in (torch.randn(6, 3, 3, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)):
        x.requires_grad_()
        got, want = compiled(x, None), forward(x, None)
        assert torch.equal(got[0], want[0]) or (got[0] - want[0]).abs().max() <= 1e-12
        g = torch.autograd.grad(got[0].pow(2).sum() + sum(s.sum() for s in _states(got[1])), [x] + params)
        w = torch.autograd.grad(want[0].pow(2).sum() + sum(s.sum() for s in _states(want[1])), [x] + params)
        for a, b in zip(g, w):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _states(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("compiler", ["eager", "inductor"])
def test_a_gradient_of_a_gradient_inside_a_compiled_graph_is_refused(compiler):
    """create_graph=True gives the first-order gradient (equal to eager's); differentiating it again
    raises (rnnkit's message, or inductor's own for any model), never a silently dropped term."""
    torch.manual_seed(0)
    layer = rnnkit.GRU(3, 4, backend="numba")  # rnnkit::fused_layer's refusal (the C++ operators' own autograd recomputes)
    compiled = torch.compile(lambda x: layer(x)[0], fullgraph=True, backend=compiler)
    x = torch.randn(5, 2, 3, requires_grad=True)
    g, = torch.autograd.grad(compiled(x).sum(), x, create_graph=True)
    assert torch.equal(g, torch.autograd.grad(layer(x)[0].sum(), x)[0])
    with pytest.raises(RuntimeError, match="gradient of a gradient|does not currently support double backward"):
        torch.autograd.grad(g.pow(2).sum(), [x, layer.weight_hh_l0])


class UserCell(torch.nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.linear = torch.nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        h = x.new_zeros(x.size(0), self.linear.out_features) if h is None else h
        return torch.tanh(self.linear(torch.cat([x, h], 1)))


def test_fullgraph_reports_the_graph_breaks_that_remain():
    """fullgraph=True promises no graph break: the reference loop of the layers and Recurrent's options
    that act inside the step are one (see the module doc), so it refuses them rather than run them another
    way."""
    torch.manual_seed(0)
    x = torch.randn(5, 2, 3)
    for module in (rnnkit.GRU(3, 4, backend="reference"),
                   rnnkit.Recurrent(rnnkit.cells.LayerNormLSTMCell, 3, 4, return_states=True),
                   rnnkit.Recurrent(rnnkit.cells.GRUCell, 3, 4, zoneout=0.1)):
        with pytest.raises(Exception):
            torch.compile(module, fullgraph=True, backend="eager")(x)
        torch._dynamo.reset()


@pytest.mark.parametrize("cell", sorted(rnnkit.cells.CELLS))
def test_fullgraph_compiles_recurrent_over_every_cell(cell):
    """torch.compile(fullgraph=True) of Recurrent over each of rnnkit's cells (2 layers, both
    directions, batch_first): one graph, no graph break, each layer-direction one operator; outputs and
    every gradient equal eager bitwise (the operators run the kernels eager runs), at two shapes."""
    torch.manual_seed(0)
    module = rnnkit.Recurrent(rnnkit.cells.CELLS[cell], 3, 4, num_layers=2, bidirectional=True, batch_first=True)
    for p in module.parameters():  # layer norm's gains and shifts start at 1 and 0: vary them
        p.data.add_(0.1 * torch.randn_like(p))
    explained = torch._dynamo.explain(module)(torch.randn(2, 5, 3))
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    for shape in [(2, 5, 3), (3, 7, 3)]:
        x = torch.randn(*shape, requires_grad=True)
        (got, got_h), (want, want_h) = compiled(x), module(x)
        assert torch.equal(got, want)
        assert all(torch.equal(a, b) for a, b in zip(_states(got_h), _states(want_h)))
        leaves = [x] + list(module.parameters())
        g = torch.autograd.grad(got.pow(2).sum() + sum(s.sum() for s in _states(got_h)), leaves)
        w = torch.autograd.grad(want.pow(2).sum() + sum(s.sum() for s in _states(want_h)), leaves)
        assert all(torch.equal(a, b) for a, b in zip(g, w))
    torch._dynamo.reset()


class DropoutCell(UserCell):
    """A user's cell that draws random numbers in training (dropout on its input)."""

    def forward(self, x, h):
        return super().forward(torch.nn.functional.dropout(x, 0.3, self.training), h)


@pytest.mark.parametrize("cell,backend", [(UserCell, "auto"), (UserCell, "reference"), (DropoutCell, "auto")])
def test_fullgraph_compiles_recurrent_over_a_users_cell(cell, backend):
    """A user's cell: each layer-direction one rnnkit::cell_layer (kernels/opaque_cell.py), no graph break;
    outputs and every gradient equal eager bitwise at two shapes (the operator runs what eager runs: the
    generated kernel, or the reference loop; a cell drawing random numbers draws the same ones again in the
    backward's rerun), and a cell put in the model's place is traced again, not run as the old one."""
    torch.manual_seed(0)
    module = rnnkit.Recurrent(cell, 3, 4, num_layers=2, bidirectional=True, batch_first=True, backend=backend)
    explained = torch._dynamo.explain(module)(torch.randn(2, 5, 3))
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    compiled = torch.compile(module, fullgraph=True, backend="inductor" if cell is DropoutCell else "eager")
    for shape in [(2, 5, 3), (3, 7, 3)]:
        x = torch.randn(*shape, requires_grad=True)
        torch.manual_seed(1)
        got, got_h = compiled(x)
        torch.manual_seed(1)
        want, want_h = module(x)
        assert torch.equal(got, want) and torch.equal(got_h, want_h)
        leaves = [x] + list(module.parameters())
        g = torch.autograd.grad(got.pow(2).sum() + got_h.sum(), leaves)
        w = torch.autograd.grad(want.pow(2).sum() + want_h.sum(), leaves)
        assert all(torch.equal(a, b) for a, b in zip(g, w))
    module.cells[0] = cell(3, 4)
    x = torch.randn(2, 5, 3)
    torch.manual_seed(2)
    got = compiled(x)[0]
    torch.manual_seed(2)
    assert torch.equal(got, module(x)[0])
    torch._dynamo.reset()


def test_backend_ops_compiles_with_no_graph_break_once_loaded():
    """backend="ops" (the C++ operators, with fake kernels): traced as they are, no graph break, once
    the extension is loaded (its first call, eager here, loads it; dynamo refuses to trace an import)."""
    from rnnkit.kernels.ops import extension
    if not extension.available():
        pytest.skip("rnnkit._C is not built (pip install --no-build-isolation -e .)")
    torch.manual_seed(0)
    layer = rnnkit.LSTM(4, 5, num_layers=2, backend="ops")
    x = torch.randn(6, 3, 4, requires_grad=True)
    want = layer(x)[0]
    explained = torch._dynamo.explain(layer)(x)
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    got = torch.compile(layer, fullgraph=True, backend="eager")(x)[0]
    assert torch.equal(got, want)
    assert torch.equal(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0])


def test_compiling_warns_nothing_about_rnnkit_code():
    """dynamo warns at every compile about each lru_cache-wrapped function it traces; the lookups the
    layers make on every call are memoized invisibly to it (rnnkit/_memo.py)."""
    import warnings
    torch.manual_seed(0)
    x = torch.randn(5, 2, 3)
    for module in (rnnkit.LSTM(3, 4, num_layers=2), rnnkit.GRU(3, 4, bidirectional=True),
                   rnnkit.Recurrent(rnnkit.cells.LayerNormLSTMCell, 3, 4)):
        module(x)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.compile(module, fullgraph=True, backend="eager")(x)
        torch._dynamo.reset()
        assert not [str(w.message) for w in caught if "lru_cache" in str(w.message)]
