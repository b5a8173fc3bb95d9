"""Inputs at the edges (issue 16, items 2, 5 and 6): a batch of 0 sequences, hand-built PackedSequences whose
layout is invalid, and an output changed in place before the backward; each as torch.nn behaves, on every
backend, never a hang or a read or write out of bounds."""
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import rnnkit
from rnnkit import cells
from rnnkit.kernels.cpu import blocks

FAMILIES = {"lstm": (rnnkit.LSTM, nn.LSTM), "gru": (rnnkit.GRU, nn.GRU), "rnn": (rnnkit.RNN, nn.RNN)}
BACKENDS = ["fused", "reference"]
FUSED_CELLS = [cells.LSTMCell, cells.GRUCell, cells.RNNCell, cells.PeepholeLSTMCell, cells.LayerNormLSTMCell,
               cells.LayerNormGRUCell, cells.IndRNNCell, cells.MinGRUCell, cells.MinLSTMCell]


# ---------------------------------------------------------------------------- a batch of 0 (item 2)
def test_backward_blocks_advance_with_no_rows():
    """The splitter of the fused backward into blocks of steps once looped forever on 0 rows."""
    offsets = torch.zeros(6, dtype=torch.int64).numpy()  # 5 steps of 0 rows
    for reverse in (False, True):
        ranges, rows = blocks._ranges(offsets, reverse, 64, 1, blocks.MIN_BLOCK_BYTES, blocks.MAX_BLOCKS)
        assert rows == 0 and [r[:2] for r in ranges] == [(0, 5)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True}], ids=["1", "2bi"])
def test_a_batch_of_no_sequences_runs_forward_and_backward_as_torch_nn(family, backend, kwargs):
    ours_cls, torch_cls = FAMILIES[family]
    torch.manual_seed(0)
    ours = ours_cls(3, 4, backend=backend, **kwargs)
    torch.manual_seed(0)
    ref = torch_cls(3, 4, **kwargs)
    results = []
    for layer in (ours, ref):
        x = torch.zeros(5, 0, 3, requires_grad=True)
        out, hx = layer(x)
        hx = hx if isinstance(hx, tuple) else (hx,)
        (out.sum() + sum(h.sum() for h in hx)).backward()
        results.append((out.shape, [h.shape for h in hx], x.grad.shape, [p.grad for p in layer.parameters()]))
    (out_a, hx_a, dx_a, grads_a), (out_b, hx_b, dx_b, grads_b) = results
    assert (out_a, hx_a, dx_a) == (out_b, hx_b, dx_b)
    for a, b in zip(grads_a, grads_b):
        assert torch.equal(a, torch.zeros_like(a)) and (b is None or torch.equal(a, b))


@pytest.mark.parametrize("cell", FUSED_CELLS, ids=lambda c: c.__name__)
def test_a_batch_of_no_sequences_on_every_fused_cell(cell):
    layer = rnnkit.Recurrent(cell, 3, 4, bidirectional=True, backend="fused")
    x = torch.zeros(5, 0, 3, requires_grad=True)
    out, _ = layer(x)
    out.sum().backward()
    assert out.shape == (5, 0, 8) and x.grad.shape == x.shape


def test_a_batch_of_no_sequences_does_not_hang_in_a_fresh_process():
    """The issue's own example, in a process that is killed if it does not return."""
    code = textwrap.dedent("""
        import torch, rnnkit
        out, _ = rnnkit.GRU(3, 4)(torch.zeros(5, 0, 3))
        out.sum().backward()
        print("returned")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "returned" in done.stdout, done.stderr


# ---------------------------------------------------------------------------- PackedSequence layouts (item 5)
INVALID = [
    ([3, 3, -4], 2),       # the first example (aborted the process)
    ([6, 6, -8, 1], 5),    # the second (returned, then crashed later)
    ([2, 3], 5),           # a batch that grows
    ([2, 2], 3),           # sizes summing to fewer rows than ... more than the data
    ([-1], 0),
    ([], 0),
]
VALID = [([3, 0], 3), ([0], 0), ([2, 1], 3), ([3, 2, 2], 7), ([1, 1, 1], 3)]


def call(layer, data, sizes, grad):
    with torch.set_grad_enabled(grad):
        return layer(PackedSequence(data, torch.tensor(sizes, dtype=torch.int64)))


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("sizes,rows", INVALID, ids=str)
def test_an_invalid_layout_is_rejected_before_any_kernel_runs(family, backend, sizes, rows, grad):
    layer = FAMILIES[family][0](3, 4, backend=backend)
    with pytest.raises(RuntimeError, match="PackedSequence"):
        call(layer, torch.randn(rows, 3), sizes, grad)


@pytest.mark.parametrize("sizes,rows", INVALID, ids=str)
def test_recurrent_rejects_an_invalid_layout(sizes, rows):
    layer = rnnkit.Recurrent(cells.LayerNormLSTMCell, 3, 4, backend="fused")
    with pytest.raises(RuntimeError, match="PackedSequence"):
        call(layer, torch.randn(rows, 3), sizes, False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("sizes,rows", VALID, ids=str)
def test_a_valid_hand_built_layout_equals_torch_nn(family, backend, sizes, rows):
    ours_cls, torch_cls = FAMILIES[family]
    torch.manual_seed(0)
    ours = ours_cls(3, 4, backend=backend)
    torch.manual_seed(0)
    ref = torch_cls(3, 4)
    data = torch.randn(rows, 3)
    (out_a, h_a), (out_b, h_b) = call(ours, data, sizes, True), call(ref, data, sizes, True)
    torch.testing.assert_close(out_a.data, out_b.data)
    torch.testing.assert_close(h_a, h_b)


def test_random_invalid_layouts_are_all_rejected():
    """The issue's measurement: 200 random hand-built PackedSequences with a negative size."""
    gen = torch.Generator().manual_seed(0)
    rejected = 0
    for _ in range(200):
        steps = int(torch.randint(1, 5, (), generator=gen))
        sizes = torch.randint(-3, 7, (steps,), generator=gen)
        sizes[int(torch.randint(0, steps, (), generator=gen))] = -int(torch.randint(1, 9, (), generator=gen))
        rows = max(0, int(sizes.clamp(min=0).sum()) + int(torch.randint(-1, 2, (), generator=gen)))
        for cls in (rnnkit.LSTM, rnnkit.GRU, rnnkit.RNN):
            with pytest.raises(RuntimeError, match="PackedSequence"):
                call(cls(3, 4), torch.randn(rows, 3), sizes.tolist(), False)
            rejected += 1
    assert rejected == 600


def test_the_fused_kernel_refuses_a_layout_it_cannot_index():
    """Defence in depth: the kernel checks the layout itself, whoever calls it."""
    from rnnkit.cells import GRU_EQUATIONS, CellWeights
    from rnnkit.kernels.cpu import FusedKernel
    layer = rnnkit.GRU(3, 4)
    weights = CellWeights(*[getattr(layer, n) for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")])
    for sizes, rows in ([3, 3, -4], 2), ([2, 3], 5), ([6, 6, -8, 1], 5):
        with pytest.raises(ValueError, match="inconsistent shapes"):
            FusedKernel().layer(GRU_EQUATIONS, torch.randn(rows, 3), sizes, (torch.zeros(sizes[0], 4),), weights, False)


# ---------------------------------------------------------------------------- outputs changed in place (item 6)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", ["gru", "rnn"])
@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2}, {"bidirectional": True}], ids=["1", "2", "bi"])
def test_gru_and_rnn_outputs_may_change_in_place_before_backward(family, backend, kwargs):
    ours_cls, torch_cls = FAMILIES[family]
    torch.manual_seed(0)
    ours = ours_cls(4, 3, backend=backend, **kwargs)
    torch.manual_seed(0)
    ref = torch_cls(4, 3, **kwargs)
    grads = []
    for layer in (ours, ref):
        x = torch.randn(5, 2, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
        out, h = layer(x)
        out += 1.0
        out.mul_(2.0)
        h.mul_(3.0)
        (out.pow(2).sum() + h.sum()).backward()
        grads.append([x.grad] + [p.grad for p in layer.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lstm_output_changed_in_place_is_refused_as_by_torch_nn(backend):
    for layer in (rnnkit.LSTM(4, 3, backend=backend), nn.LSTM(4, 3)):
        out, _ = layer(torch.randn(5, 2, 4, requires_grad=True))
        out += 1.0
        if backend == "reference" and layer.__module__.startswith("rnnkit"):
            out.sum().backward()  # the reference loop keeps each step's state, not the output
            continue
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()
