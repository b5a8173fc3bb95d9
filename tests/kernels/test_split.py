"""The fused kernels' work splits: batch rows across threads (split.row_chunks) and backward
steps into blocks (blocks.Blocks). Both must cover every row-step exactly once."""
from __future__ import annotations

import functools
import pathlib
import sys

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.kernels.cpu import Plan, blocks, common, split

TESTS = str(pathlib.Path(__file__).resolve().parent.parent)  # helpers.py (no conftest in this folder)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
from helpers import assert_within_rounding, reference_copy, rounding_sensitivity  # noqa: E402

LAYOUTS = {
    "padded": [16] * 7,
    "packed": [13, 13, 11, 8, 8, 5, 2, 1],
    "one row": [1] * 5,
}


@pytest.mark.parametrize("sizes", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("parts", [1, 2, 3, 16])
def test_row_chunks_cover_every_row_step_once(sizes, parts):
    offsets, bsz = common.layout(sizes)
    cuts, offs, chunk_sizes = split.row_chunks(offsets, bsz, parts)
    assert cuts[0] == 0 and cuts[-1] == bsz[0] and np.all(np.diff(cuts) > 0) and len(cuts) <= parts + 1
    seen = np.zeros(int(offsets[-1]), dtype=int)
    for k in range(len(cuts) - 1):
        for t in range(len(bsz)):
            rows = offs[k, t] + np.arange(chunk_sizes[k, t])
            assert np.all(rows - offsets[t] + 0 >= cuts[k]) and np.all(rows - offsets[t] < cuts[k + 1])
            seen[rows] += 1
    assert np.all(seen == 1)


def test_row_chunks_balance_packed_work():
    offsets, bsz = common.layout([16] * 10 + [8] * 90)  # rows 0-7 run 100 steps, rows 8-15 only 10
    cuts, _, chunk_sizes = split.row_chunks(offsets, bsz, 2)
    work = chunk_sizes.sum(1)
    assert cuts[1] < 8 and abs(int(work[0]) - int(work[1])) <= 100


@pytest.mark.parametrize("sizes", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("min_bytes,min_blocks", [(1, 1), (64, 1), (1 << 40, 1), (1 << 40, 2), (1 << 40, 4)])
@pytest.mark.parametrize("cached", [True, False])
def test_blocks_cover_every_step_once_in_backward_order(monkeypatch, sizes, reverse, min_bytes, min_blocks, cached):
    monkeypatch.setattr(blocks, "MIN_BLOCK_BYTES", min_bytes)
    monkeypatch.setattr(blocks, "CACHED_MAX_STEPS", blocks.CACHED_MAX_STEPS if cached else 0)
    offsets, bsz = common.layout(sizes)
    plan = Plan(offsets, bsz, reverse, True, True)
    b = blocks.Blocks(plan, width=4, itemsize=4, min_blocks=min_blocks)
    T = len(bsz)
    steps = [s for s0, s1, *_ in b.ranges for s in range(s0, s1)]
    assert steps == list(range(T))
    assert len(b.ranges) <= max(blocks.MAX_BLOCKS, min_blocks)
    # a block closes on the step that brings it to ceil(N / min_blocks) rows
    assert b.rows < -(-int(offsets[-1]) // min_blocks) + max(sizes)
    for s0, s1, ta, tb, lo, hi in b.ranges:
        ts = sorted(s if reverse else T - 1 - s for s in range(s0, s1))
        assert ts == list(range(ta, tb)) and (lo, hi) == (offsets[ta], offsets[tb]) and hi - lo <= b.rows


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("rows_split", [False, True], ids=["one thread", "rows split"])
@pytest.mark.parametrize("dout", ["sum", "broadcast rows", "strided rows"])
def test_output_gradient_layouts_over_blocks(monkeypatch, mode, rows_split, dout):
    """The output gradient in the layouts autograd can hand over: broadcast along the rows (out.sum()'s,
    or a gradient expanded from one row: the kernels read that row), or rows apart in memory (a
    slice of a wider tensor: each block copies its rows into one reused buffer); over blocks and
    split threads."""
    monkeypatch.setattr(blocks, "MIN_BLOCK_BYTES", 1)
    monkeypatch.setattr(blocks, "MAX_BLOCKS", 3)
    monkeypatch.setattr(split, "thread_parts", (lambda batch: 2) if rows_split else (lambda batch: 1))
    cls = _LAYERS[mode]
    x0, dense, given = _data(dout)
    grads = []
    for backend in ("reference", "fused"):
        torch.manual_seed(0)
        layer = cls(5, 8, backend=backend)
        x = x0.clone().requires_grad_()
        out = layer(x)[0]  # (7, 8, 8)
        if given is None:
            out.sum().backward()
        else:
            out.backward(given)
        grads.append([x.grad, *(p.grad for p in layer.parameters())])
    # each within float32's rounding of the float64 truth (helpers: a bound derived from the
    # computation's sensitivity to rounding, not fitted to one machine's rounding)
    truth, sensitivities = _truth(mode, dout)
    for who, got in zip(("reference", "fused"), grads):
        assert_within_rounding(got, truth, sensitivities, torch.float32, who=who)


_LAYERS = {"rnn_tanh": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU}


def _data(dout):
    """The input, the output's gradient (its values, dense) and that gradient in the layout autograd
    hands over (None: out.sum()'s, made by autograd itself)."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(7, 8, 5, generator=gen)
    if dout == "sum":
        return x0, torch.ones(7, 8, 8), None
    if dout == "broadcast rows":
        row = torch.randn(8, generator=gen).expand(7, 8, 8)
        return x0, row, row
    wide = torch.randn(7, 8, 16, generator=gen)
    return x0, wide[..., 3:11].contiguous(), wide[..., 3:11]


@functools.lru_cache(maxsize=None)
def _truth(mode, dout):
    """(truth, sensitivities) of the input's and parameters' gradients: one float64 computation per
    layer and output gradient, whatever the blocks and thread split (they only reorder the float32 sums)."""
    torch.manual_seed(0)
    layer = reference_copy(_LAYERS[mode](5, 8))
    names = [n for n, _ in layer.named_parameters()]
    x0, dense, _ = _data(dout)

    def results_of(data):
        x, params = data[0].detach().requires_grad_(), [p.detach().requires_grad_() for p in data[1:-1]]
        out = torch.func.functional_call(layer, dict(zip(names, params)), (x,))[0]
        return list(torch.autograd.grad(out, [x] + params, data[-1]))

    return rounding_sensitivity(results_of, [x0.double()] + [p.detach() for p in layer.parameters()] + [dense.double()])
