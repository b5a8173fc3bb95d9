"""Shared test helpers: twin layers from one seed, inputs in every form, comparison of everything."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkit

MODES = {
    # name: (rnnkit class, torch class, extra constructor kwargs)
    "rnn_tanh": (rnnkit.RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnnkit.RNN, nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (rnnkit.LSTM, nn.LSTM, {}),
    "lstm_proj": (rnnkit.LSTM, nn.LSTM, {"proj_size": 3}),
    "gru": (rnnkit.GRU, nn.GRU, {}),
}
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
I, H, T, B = 4, 5, 6, 3
LENGTHS = [6, 4, 1]  # longest first; the unsorted form shuffles them


def twins(mode, dtype=torch.float32, seed=0, **kwargs):
    ours_cls, torch_cls, extra = MODES[mode]
    kwargs = {**extra, **kwargs}
    torch.manual_seed(seed)
    ours = ours_cls(I, H, dtype=dtype, **kwargs)
    torch.manual_seed(seed)
    ref = torch_cls(I, H, dtype=dtype, **kwargs)
    return ours, ref


def state_shapes(layer, batch):
    D = 2 if layer.bidirectional else 1
    h = (D * layer.num_layers, batch, layer.proj_size or layer.hidden_size)
    if isinstance(layer, (rnnkit.LSTM, nn.LSTM)):
        return [h, (D * layer.num_layers, batch, layer.hidden_size)]
    return [h]


def make_input(layer, form, dtype, gen):
    """(input for the layer, leaf tensors to differentiate, unbatched?)"""
    x = torch.randn(T, B, I, dtype=dtype, generator=gen)
    if form == "unbatched":
        x = x[:, 0]
        leaf = x.clone().requires_grad_()
        return leaf, leaf
    leaf = x.clone().requires_grad_()
    if form == "batched":
        return (leaf.transpose(0, 1) if layer.batch_first else leaf), leaf
    lengths = LENGTHS if form == "packed_sorted" else [4, 6, 1]
    packed = pack_padded_sequence(leaf, lengths, enforce_sorted=(form == "packed_sorted"))
    return packed, leaf


def make_hx(layer, form, dtype, gen):
    shapes = state_shapes(layer, B)
    states = [torch.randn(*s, dtype=dtype, generator=gen) for s in shapes]
    if form == "unbatched":
        states = [s[:, 0] for s in states]
    states = [s.requires_grad_() for s in states]
    return states


def flat(out):
    """Every tensor in a layer's return value, in order."""
    if isinstance(out, PackedSequence):
        return [out.data]
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in flat(o)]


def run_and_grad(layer, inp, leaves, hx_states):
    hx = None
    if hx_states is not None:
        hx = tuple(hx_states) if len(hx_states) == 2 else hx_states[0]
    out = layer(inp, hx)
    tensors = flat(out)
    # A fixed random weighting of every output makes each gradient depend on all of them.
    gen = torch.Generator().manual_seed(123)
    loss = sum((t * torch.randn(t.shape, dtype=t.dtype, generator=gen)).sum() for t in tensors)
    params = list(layer.parameters())
    grads = torch.autograd.grad(loss, [leaves] + list(hx_states or []) + params, retain_graph=True)
    return tensors, list(grads)


def max_diff(xs, ys):
    assert len(xs) == len(ys)
    worst = 0.0
    for a, b in zip(xs, ys):
        assert a.shape == b.shape, (a.shape, b.shape)
        worst = max(worst, (a - b).abs().max().item() if a.numel() else 0.0)
    return worst


def hand_loop(layer, x, directions):
    """The user's own loop over layer.cells (time-major x (T, B, I), full length): outputs and final states
    (each stacked over layers and directions), what Recurrent must equal."""
    finals = []
    for k in range(layer.num_layers):
        outs = []
        for d in range(directions):
            cell = layer.cells[k * directions + d]
            steps = range(x.size(0) - 1, -1, -1) if d else range(x.size(0))
            h, seq = None, [None] * x.size(0)
            for t in steps:
                h = cell(x[t], h)
                seq[t] = h[0] if isinstance(h, tuple) else h
            outs.append(torch.stack(seq))
            finals.append(h if isinstance(h, tuple) else (h,))
        x = torch.cat(outs, -1)
    return x, tuple(torch.stack(s) for s in zip(*finals))
