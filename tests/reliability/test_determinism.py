"""Determinism (issue 7, item 7): the same seed and input give bitwise-identical outputs and gradients
on the CPU, call after call and process after process, on every backend."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import kernels
from rnnkit.errors import UnsupportedBackendError
from rnnkit.verify.fuzz import cell_classes, supported_backends

LAYERS = {"rnn_tanh": (rnnkit.RNN, {"nonlinearity": "tanh"}), "rnn_relu": (rnnkit.RNN, {"nonlinearity": "relu"}),
          "lstm": (rnnkit.LSTM, {}), "lstm_proj": (rnnkit.LSTM, {"proj_size": 3}), "gru": (rnnkit.GRU, {})}


def _tensors(build, form):
    """Outputs, states and all gradients of one seeded run, as a flat list."""
    torch.manual_seed(1234)
    layer = build()
    x = torch.randn(7, 3, 4, requires_grad=True)
    inp = pack_padded_sequence(x, [7, 4, 2], enforce_sorted=False) if form == "packed" else x
    out, state = layer(inp)[:2]
    out = out.data if form == "packed" else out
    states = list(state) if isinstance(state, tuple) else [state]
    loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() + sum((s * s).sum() for s in states)
    grads = torch.autograd.grad(loss, [x] + list(layer.parameters()))
    return [out, *states, *grads]


def _layer_backends(cls, extra) -> list:
    """"auto" and every registered backend that runs this layer here (on this machine's CPU)."""
    layer = cls(4, 5, **extra)
    names = ["auto"]
    for name, kernel in kernels.BACKENDS.items():
        try:
            kernel.check(layer.equations, torch.zeros(1, 4), layer.layer_weights(0, 0))
        except UnsupportedBackendError:
            continue
        names.append(name)
    return names


def cases():
    for mode, (cls, extra) in LAYERS.items():
        for backend in _layer_backends(cls, extra):
            for form in ("padded", "packed"):
                yield f"{mode}/{backend}/{form}", (lambda cls=cls, extra=extra, backend=backend:
                                                   cls(4, 5, num_layers=2, bidirectional=True, backend=backend, **extra)), form
    for name, cell in cell_classes().items():
        config = {"kind": "recurrent", "cell": name, "input_size": 4, "hidden_size": 5, "dtype": "float32"}
        for backend in supported_backends(config):
            yield f"Recurrent({name})/{backend}", (lambda cell=cell, backend=backend:
                                                   rnnkit.Recurrent(cell, 4, 5, 2, bidirectional=True, backend=backend)), "packed"


def digests() -> dict:
    out = {}
    for name, build, form in cases():
        h = hashlib.sha256()
        for t in _tensors(build, form):
            h.update(t.detach().contiguous().numpy().tobytes())
        out[name] = h.hexdigest()
    return out


def test_bitwise_identical_call_after_call():
    for name, build, form in cases():
        first, second = _tensors(build, form), _tensors(build, form)
        assert len(first) == len(second)
        assert all(torch.equal(a, b) for a, b in zip(first, second)), name


def test_bitwise_identical_process_after_process():
    """A fresh process (same thread count, 1) computes the same bits as this one, for every case."""
    here = digests()
    code = ("import sys, json, torch; torch.set_num_threads(1); sys.path.insert(0, sys.argv[1]); "
            "import test_determinism as t; print(json.dumps(t.digests()))")
    import json
    import pathlib
    res = subprocess.run([sys.executable, "-c", code, str(pathlib.Path(__file__).parent)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    there = json.loads(res.stdout.strip().splitlines()[-1])
    assert there == here
