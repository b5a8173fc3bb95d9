"""rnnkit::fused_layer and rnnkit::fused_layer_backward (rnnkit/kernels/opaque.py): the fused
kernels of every rnnkit cell as operators for torch.compile.  torch.library.opcheck checks each
registration (schema, fake tensors, autograd, dynamo/AOT dispatch); the operators' results and
gradients equal the kernel's own."""
import pytest
import torch

import rnnkit
from rnnkit import kernels
import rnnkit.cells
from rnnkit.kernels.opaque import EQUATIONS, fused_layer, fused_layer_backward

CASES = [("lstm", dict()), ("lstm", dict(proj_size=2)), ("gru", dict()), ("rnn_tanh", dict(bias=False)),
         ("rnn_relu", dict())]
CLASSES = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU, "rnn_tanh": rnnkit.RNN, "rnn_relu": rnnkit.RNN}


def arguments(cell, kwargs, batch_sizes, reverse=False, dtype=torch.float64):
    torch.manual_seed(0)
    extra = {"nonlinearity": "relu"} if cell == "rnn_relu" else {}
    layer = CLASSES[cell](3, 4, dtype=dtype, **kwargs, **extra)
    w = layer.layer_weights(0, 0)
    x = torch.randn(sum(batch_sizes), 3, dtype=dtype, requires_grad=True)
    width = layer.proj_size if getattr(layer, "proj_size", 0) else 4
    h0 = torch.randn(batch_sizes[0], width, dtype=dtype, requires_grad=True)
    c0 = torch.randn(batch_sizes[0], 4, dtype=dtype, requires_grad=True) if cell == "lstm" else None
    state0 = [h0] if c0 is None else [h0, c0]
    return ("numba", cell, x, list(batch_sizes), state0, *as_present(w), reverse)


def as_present(weights):
    """The operator's weights arguments: the present tensors and the mask of the fields they fill."""
    return [w for w in weights if w is not None], [w is not None for w in weights]


# Recurrent's other cells, by class; their kernel ("numba", or "scan" for the min-cells) runs in the operator
OTHER_CELLS = ["LayerNormLSTMCell", "LayerNormGRUCell", "PeepholeLSTMCell", "IndRNNCell", "MinGRUCell", "MinLSTMCell"]


def cell_arguments(cls_name, batch_sizes, reverse=False, dtype=torch.float64):
    torch.manual_seed(0)
    cell = rnnkit.cells.CELLS[cls_name](3, 4, dtype=dtype)
    for p in cell.parameters():  # layer norm's gains and shifts start at 1 and 0: vary them
        p.data.add_(0.1 * torch.randn_like(p))
    eq = cell.equations
    backend = rnnkit.kernels.select("fused", eq, torch.randn(1, 3, dtype=dtype), cell.cell_weights()).name
    x = torch.randn(sum(batch_sizes), 3, dtype=dtype, requires_grad=True)
    state0 = [torch.randn(batch_sizes[0], 4, dtype=dtype, requires_grad=True) for _ in eq.state_names]
    return (backend, eq.name, x, list(batch_sizes), state0, *as_present(cell.cell_weights()), reverse)


@pytest.mark.parametrize("cell, kwargs", CASES, ids=[f"{c}-{k}" for c, k in CASES])
@pytest.mark.parametrize("batch_sizes, reverse", [([2, 2, 2], False), ([3, 2, 1, 1], True)])
def test_opcheck_fused_layer(cell, kwargs, batch_sizes, reverse):
    torch.library.opcheck(fused_layer, arguments(cell, kwargs, batch_sizes, reverse))


@pytest.mark.parametrize("cell, kwargs", CASES[:3], ids=[f"{c}-{k}" for c, k in CASES[:3]])
def test_opcheck_fused_layer_backward(cell, kwargs):
    args = arguments(cell, kwargs, [3, 2, 1])
    outputs = fused_layer(*args)
    grads = [torch.randn_like(o) for o in outputs]
    # its autograd formula only refuses (a gradient of a gradient): checked in tests/reliability/test_compile.py
    torch.library.opcheck(fused_layer_backward, (*args, grads), test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("cell, kwargs", CASES, ids=[f"{c}-{k}" for c, k in CASES])
def test_the_operators_compute_the_kernels_outputs_and_gradients(cell, kwargs):
    args = arguments(cell, kwargs, [3, 2, 2, 1], reverse=True)
    _check_against_the_kernel(args)


@pytest.mark.parametrize("cls_name", OTHER_CELLS)
@pytest.mark.parametrize("batch_sizes, reverse", [([2, 2, 2], False), ([3, 2, 1, 1], True)])
def test_opcheck_fused_layer_on_recurrents_cells(cls_name, batch_sizes, reverse):
    torch.library.opcheck(fused_layer, cell_arguments(cls_name, batch_sizes, reverse))


@pytest.mark.parametrize("cls_name", OTHER_CELLS)
def test_the_operators_compute_the_kernels_outputs_and_gradients_for_recurrents_cells(cls_name):
    """The layer-norm cells run torch ops around their fused loop (the projection's layer norm): the
    backward operator records those too (_torch_internals.autograd_inside_operator)."""
    _check_against_the_kernel(cell_arguments(cls_name, [3, 2, 2, 1], reverse=True))


def _check_against_the_kernel(args):
    backend, name, x, batch_sizes, state0, weights, present, reverse = args
    eq = EQUATIONS[name]
    given = iter(weights)
    fields = eq.weights_type(*[next(given) if p else None for p in present])
    out, state = kernels.BACKENDS[backend].layer(eq, x, batch_sizes, tuple(state0), fields, reverse)
    got = fused_layer(*args)
    assert all(torch.equal(a, b) for a, b in zip(got, [out, *state]))
    leaves = [x, *state0, *weights]
    want = torch.autograd.grad(sum((o * (k + 1)).sum() for k, o in enumerate([out, *state])), leaves)
    have = torch.autograd.grad(sum((o * (k + 1)).sum() for k, o in enumerate(got)), leaves)
    for a, b in zip(have, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
