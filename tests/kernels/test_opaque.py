"""rnnkit::fused_layer and rnnkit::fused_layer_backward (rnnkit/kernels/opaque.py): the fused
kernels as operators for torch.compile.  torch.library.opcheck checks each registration (schema,
fake tensors, autograd, dynamo/AOT dispatch); the operators' results equal the kernel's own."""
import pytest
import torch

import rnnkit
from rnnkit import kernels
from rnnkit.kernels.opaque import FAMILIES, fused_layer, fused_layer_backward

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
    return ("numba", cell, x, list(batch_sizes), h0, c0, w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr, reverse)


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
    backend, name, x, batch_sizes, h0, c0, *weights, reverse = args
    eq = FAMILIES[name]
    state0 = (h0,) if c0 is None else (h0, c0)
    out, state = kernels.BACKENDS["numba"].layer(eq, x, batch_sizes, state0, rnnkit.cells.CellWeights(*weights), reverse)
    got = fused_layer(*args)
    assert all(torch.equal(a, b) for a, b in zip(got, [out, *state]))
    leaves = [t for t in (x, h0, c0, *weights) if t is not None]
    want = torch.autograd.grad(sum((o * (k + 1)).sum() for k, o in enumerate([out, *state])), leaves)
    have = torch.autograd.grad(sum((o * (k + 1)).sum() for k, o in enumerate(got)), leaves)
    for a, b in zip(have, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
