"""Gradients of gradients (issue 16, item 3): double backward, gradient penalties, gradgradcheck, a second
backward through a retained graph and batched gradients give torch.nn's numbers on every backend."""
import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from helpers import assert_within_rounding, reference_copy, rounding_sensitivity
from rnnkit import cells

LAYERS = {
    "lstm": (rnnkit.LSTM, nn.LSTM, {}),
    "lstm_proj": (rnnkit.LSTM, nn.LSTM, {"proj_size": 2}),
    "gru": (rnnkit.GRU, nn.GRU, {}),
    "rnn_tanh": (rnnkit.RNN, nn.RNN, {}),
    "rnn_relu": (rnnkit.RNN, nn.RNN, {"nonlinearity": "relu"}),
}
# every cell family of rnnkit.cells that a fused kernel runs, through Recurrent
CELLS = {
    "lstm": (cells.LSTMCell, {}),
    "gru": (cells.GRUCell, {}),
    "gru_reset_before": (cells.GRUCell, {"reset_after": False}),
    "rnn_relu": (cells.RNNCell, {"nonlinearity": "relu"}),
    "peephole_lstm": (cells.PeepholeLSTMCell, {}),
    "layernorm_lstm": (cells.LayerNormLSTMCell, {}),
    "layernorm_gru": (cells.LayerNormGRUCell, {}),
    "indrnn": (cells.IndRNNCell, {}),
    "indrnn_clip": (cells.IndRNNCell, {"recurrent_max_abs": 0.5}),
    "min_gru": (cells.MinGRUCell, {}),
    "min_lstm": (cells.MinLSTMCell, {}),
}


def twins(name, **kwargs):
    ours_cls, torch_cls, extra = LAYERS[name]
    torch.manual_seed(0)
    ours = ours_cls(3, 4, **extra, **kwargs)
    torch.manual_seed(0)
    return ours, torch_cls(3, 4, **extra, **kwargs)


def penalised_grads(layer, x, hx=None):
    """The gradients of a loss holding a gradient penalty (WGAN-GP style): they need the double backward."""
    out, _ = layer(x, hx)
    out = out.data if hasattr(out, "batch_sizes") else out
    leaf = x.data if hasattr(x, "batch_sizes") else x
    g, = torch.autograd.grad(out.sum(), leaf if not hasattr(x, "batch_sizes") else x.data, create_graph=True)
    loss = out.pow(2).mean() + 10 * g.pow(2).sum()
    return torch.autograd.grad(loss, list(layer.parameters()) + [leaf])


def _issue_example(m, x, params=None):
    """The gradient of the issue's loss (a WGAN-GP gradient penalty) w.r.t. weight_hh_l0."""
    names = [n for n, _ in m.named_parameters()]
    params = [p for _, p in m.named_parameters()] if params is None else params
    x = x.detach().requires_grad_()
    out, _ = torch.func.functional_call(m, dict(zip(names, params)), (x,))
    g, = torch.autograd.grad(out.sum(), x, create_graph=True)
    grad, = torch.autograd.grad(out.pow(2).mean() + 10 * g.pow(2).sum(), params[names.index("weight_hh_l0")])
    return grad


def test_the_issue_example_gives_torch_nn_numbers():
    """torch.nn, the fused and the reference backend (float32) each within float32's rounding of the
    float64 computation (helpers: a bound derived from the computation's sensitivity to rounding, the
    double backward included; not fitted to one machine's rounding)."""
    x = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(0))
    got = {}
    for name, make in (("torch", lambda: nn.LSTM(3, 4)), ("fused", lambda: rnnkit.LSTM(3, 4, backend="fused")),
                       ("reference", lambda: rnnkit.LSTM(3, 4, backend="reference"))):
        torch.manual_seed(0)
        m = make()
        got[name] = _issue_example(m, x)
    m64 = reference_copy(m)
    truth, sensitivities = rounding_sensitivity(
        lambda data: [_issue_example(m64, data[0], [p.detach().requires_grad_() for p in data[1:]])],
        [x.double()] + [p.detach() for p in m64.parameters()])
    for name, grad in got.items():
        assert_within_rounding([grad], truth, sensitivities, torch.float32, who=name)
    assert got["torch"].norm() > 1.0  # the penalty's term is there (0.004 when it was dropped)


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("form", ["padded", "packed", "bidirectional2"])
def test_gradient_penalty_equals_torch_nn(name, form, backend):
    kwargs = {"num_layers": 2, "bidirectional": True} if form == "bidirectional2" else {}
    ours, ref = twins(name, **kwargs)
    ours.backend = backend
    ours, ref = ours.double(), ref.double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 3, dtype=torch.float64, generator=gen)
    results = []
    for layer in (ours, ref):
        leaf = x.clone().requires_grad_()
        inp = pack_padded_sequence(leaf, [5, 3, 2]) if form == "packed" else leaf
        out, _ = layer(inp)
        out = out.data if form == "packed" else out
        g, = torch.autograd.grad(out.sum(), leaf, create_graph=True)
        loss = out.pow(2).mean() + 10 * g.pow(2).sum()
        results.append(torch.autograd.grad(loss, list(layer.parameters()) + [leaf]))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", list(LAYERS))
def test_gradgradcheck_layers_fused(name):
    ours, _ = twins(name, num_layers=2, bidirectional=True)
    ours = ours.double()
    ours.backend = "fused"
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 2, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in ours.parameters()]
    names = [n for n, _ in ours.named_parameters()]

    def f(x, *params):
        out, hx = torch.func.functional_call(ours, dict(zip(names, params)), (x,))
        return (out,) + (hx if isinstance(hx, tuple) else (hx,))

    # fast mode: random projections of the Jacobians, as strict for a wrong term and 10x cheaper here
    assert gradcheck(f, (x, *params), fast_mode=True)
    assert gradgradcheck(f, (x, *params), fast_mode=True)


@pytest.mark.parametrize("cell", list(CELLS))
def test_gradgradcheck_every_fused_cell(cell):
    cls, kwargs = CELLS[cell]
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cls, 3, 4, bidirectional=True, backend="fused", **kwargs).double()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 2, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    hx = None if cell != "lstm" else tuple(torch.randn(2, 2, 4, dtype=torch.float64, generator=gen).requires_grad_()
                                             for _ in range(2))
    inputs = (x,) if hx is None else (x, *hx)

    def f(x, *state):
        out, hn = layer(x, state if state else None)
        return (out,) + (hn if isinstance(hn, tuple) else (hn,))

    assert gradcheck(f, inputs)
    assert gradgradcheck(f, inputs)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh"])
def test_second_backward_through_a_retained_graph_is_bitwise_the_first(name):
    ours, _ = twins(name)
    x = torch.randn(7, 3, 3, requires_grad=True)
    out, _ = ours(x)
    first = torch.autograd.grad(out.pow(2).sum(), [x] + list(ours.parameters()), retain_graph=True)
    second = torch.autograd.grad(out.pow(2).sum(), [x] + list(ours.parameters()))
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        out.sum().backward()


@pytest.mark.parametrize("backend", ["ops", "numba", "generated", "reference"])
@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_relu"])
def test_batched_grads_equal_one_grad_per_row(name, backend):
    """In float64: the batched backward, the row-by-row one and torch.nn's are other computations of the
    same numbers, and float64 leaves ~1e-16 of their rounding (in float32 a fixed tolerance held only by
    the luck of the machine's rounding).  The generated loop's operators take lists of tensors, which vmap's
    fallback refuses: its autograd kernel takes the batched gradients apart itself."""
    ours, ref = twins(name)
    ours, ref = ours.double(), ref.double()
    ours.backend = backend
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    out, _ = ours(x)
    basis = torch.eye(out.numel(), dtype=torch.float64).reshape(-1, *out.shape)[::7]  # a few rows of the Jacobian
    batched, = torch.autograd.grad(out, x, basis, is_grads_batched=True, retain_graph=True)
    rows = torch.stack([torch.autograd.grad(out, x, v, retain_graph=True)[0] for v in basis])
    torch.testing.assert_close(batched, rows, rtol=1e-9, atol=1e-10)
    out_ref, _ = ref(x)
    expected, = torch.autograd.grad(out_ref, x, basis, is_grads_batched=True)
    torch.testing.assert_close(batched, expected, rtol=1e-9, atol=1e-10)


def _dependent_input_loss(layer, x):
    """A loss whose input and h0 are made from the layer's own weights (an input scaled by a weight, an
    initial state from a parameter): an operator's inputs that depend on each other."""
    weights = list(layer.parameters())
    h0 = weights[1][: layer.hidden_size].sum(1).reshape(1, 1, -1).expand(1, x.size(1), -1).contiguous()
    hx = (h0, torch.zeros_like(h0)) if isinstance(layer, (rnnkit.LSTM, nn.LSTM)) else h0
    return layer(x * weights[0].sum(), hx)[0].pow(2).sum()


@pytest.mark.parametrize("backend", ["ops", "numba", "generated", "reference"])
@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh"])
def test_create_graph_gives_the_first_order_gradients_when_inputs_depend_on_weights(name, backend):
    """A backward that builds a graph took total derivatives at each input, counting the path from a weight
    through another input twice (issue 18, found through the generated kernels' double backward)."""
    ours, theirs = twins(name)
    ours, theirs = ours.double(), theirs.double()
    ours.backend = backend
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    want = torch.autograd.grad(_dependent_input_loss(theirs, x), list(theirs.parameters()))
    plain = torch.autograd.grad(_dependent_input_loss(ours, x), list(ours.parameters()))
    built = torch.autograd.grad(_dependent_input_loss(ours, x), list(ours.parameters()), create_graph=True)
    for a, b, c in zip(plain, built, want):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(b, c, rtol=1e-10, atol=1e-10)
