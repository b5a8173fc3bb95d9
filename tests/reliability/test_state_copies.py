"""State and copies (issue 7, item 6): state_dict with torch.nn both ways, pickle, deepcopy, dtype and
device moves, dropout in train/eval, DistributedDataParallel."""
from __future__ import annotations

import copy
import io
import pathlib
import pickle
import subprocess
import sys

import pytest
import torch

import rnnkit
from helpers import MODES, TOL, assert_within_rounding, float64_truth_of, max_diff, twins

ALL = list(MODES)  # rnn_tanh, rnn_relu, lstm, lstm_proj, gru
KW = dict(num_layers=2, bidirectional=True)
# rnnkit against torch.nn after a state_dict's journey or in eval: in float64, where the two
# implementations' rounding (~1e-16) leaves TOL[F64] = 1e-10 a wide margin on every machine
F64 = torch.float64


def _call(layer, x):
    out, state = layer(x)
    return [out] + (list(state) if isinstance(state, tuple) else [state])


@pytest.mark.parametrize("mode", ALL)
def test_state_dict_round_trips_with_torch_nn_both_ways(mode):
    ours, ref = twins(mode, F64, seed=1, **KW)
    _, other = twins(mode, F64, seed=2, **KW)
    x = torch.randn(5, 3, 4, dtype=F64)
    # torch.nn -> rnnkit
    ours.load_state_dict(other.state_dict(), strict=True)
    assert max_diff(_call(ours, x), _call(other, x)) <= TOL[F64]
    # rnnkit -> torch.nn, and the names and shapes are torch.nn's exactly
    fresh_ours, _ = twins(mode, F64, seed=3, **KW)
    assert [(k, v.shape) for k, v in fresh_ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    ref.load_state_dict(fresh_ours.state_dict(), strict=True)
    assert max_diff(_call(ref, x), _call(fresh_ours, x)) <= TOL[F64]
    # through a file, as a checkpoint travels
    buffer = io.BytesIO()
    torch.save(fresh_ours.state_dict(), buffer)
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert max_diff(_call(other, x), _call(fresh_ours, x)) <= TOL[F64]


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("mode", ALL)
def test_pickle_and_deepcopy(mode, backend):
    cls, _, extra = MODES[mode]
    torch.manual_seed(0)
    ours = cls(4, 5, **KW, **extra, batch_first=True, backend=backend)
    x = torch.randn(3, 5, 4)
    want = _call(ours, x)
    copies = [pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)]
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    copies.append(torch.load(buffer, weights_only=False))
    for twin in copies:
        assert type(twin) is type(ours) and repr(twin) == repr(ours)
        assert all(torch.equal(a, b) for a, b in zip(_call(twin, x), want))
        with torch.no_grad():  # a copy, not a view: changing it leaves the original alone
            next(twin.parameters()).add_(1)
        assert all(torch.equal(a, b) for a, b in zip(_call(ours, x), want))


def test_recurrent_pickles_and_deepcopies():
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(rnnkit.cells.PeepholeLSTMCell, 4, 5, 2, bidirectional=True, merge="sum")
    x = torch.randn(6, 2, 4)
    want = layer(x)[0]
    for twin in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        assert torch.equal(twin(x)[0], want)


@pytest.mark.parametrize("mode", ALL)
def test_double_half_and_to(mode):
    ours, ref = twins(mode, **KW)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    ours.double()
    ref.double()
    assert all(p.dtype == torch.float64 for p in ours.parameters())
    assert max_diff(_call(ours, x), _call(ref, x)) <= 1e-10
    # float32 and float16: within that dtype's rounding of the float64 computation on the same values
    # (helpers: a bound derived from the computation's sensitivity to rounding, here at float16's unit
    # roundoff for float16, not fitted to one machine's rounding)
    ours.to(torch.float32)
    truth, sensitivities = float64_truth_of(_call, ours, [x.float()], grad=False)
    assert_within_rounding(_call(ours, x.float()), truth, sensitivities, torch.float32, who="rnnkit float32")
    ours.to("cpu", torch.float64)
    assert max_diff(_call(ours, x), _call(ref, x)) <= 1e-10
    half = copy.deepcopy(ours).half()  # float16 runs on the reference loop ("auto" falls back)
    out = _call(half, x.half())
    assert all(t.dtype == torch.float16 and torch.isfinite(t).all() for t in out)
    truth, sensitivities = float64_truth_of(_call, half, [x.half()], grad=False, dtype=torch.float16)
    assert_within_rounding(out, truth, sensitivities, torch.float16, who="rnnkit float16")
    out[0].float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float16 for p in half.parameters())


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_dropout_honours_train_and_eval(mode):
    ours, ref = twins(mode, F64, num_layers=3, dropout=0.5)
    x = torch.randn(6, 4, 4, dtype=F64)
    ours.train()
    torch.manual_seed(10)
    a = _call(ours, x)
    b = _call(ours, x)
    assert not torch.equal(a[0], b[0])  # a new mask each call
    torch.manual_seed(10)
    assert all(torch.equal(p, q) for p, q in zip(_call(ours, x), a))  # the masks come from torch's RNG
    ours.eval()
    ref.eval()
    e1, e2 = _call(ours, x), _call(ours, x)
    assert all(torch.equal(p, q) for p, q in zip(e1, e2))
    assert max_diff(e1, _call(ref, x)) <= TOL[F64]  # eval: no dropout at all, torch.nn's numbers
    # dropout acts between layers only: a one-layer layer ignores it even in training
    with pytest.warns(UserWarning, match="dropout"):
        one, one_ref = twins(mode, F64, num_layers=1, dropout=0.5)
    one.train()
    one_ref.train()
    assert max_diff(_call(one, x), _call(one_ref, x)) <= TOL[F64]


def test_distributed_data_parallel_two_cpu_processes():
    """gloo, two processes, find_unused_parameters=False: no unused-parameter error over several steps,
    ranks stay identical and equal one process training on the whole batch (see ddp_worker.py)."""
    worker = pathlib.Path(__file__).with_name("ddp_worker.py")
    res = subprocess.run([sys.executable, str(worker)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("OK"), res.stdout[-2000:] + res.stderr[-4000:]
