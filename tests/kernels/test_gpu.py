"""The CUDA backend ("fused_cuda") against the reference loop: outputs, final states and every
gradient, over modes x layers x directions x padded/packed x dtypes; its CUDA-graph path
against its eager path; and its check() on a CPU-only machine.

Without CUDA (CI) the GPU tests skip; the CPU tests check that the backend refuses CPU
tensors without importing triton.  With ``TRITON_INTERPRET=1`` and triton installed, the
Triton kernels also run on the CPU through the interpreter (small sizes, float32).
"""
from __future__ import annotations

import importlib.util
import itertools
import os
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import kernels
from rnnkit.cells import ELMAN_RELU, ELMAN_TANH, GRU_EQUATIONS, LSTM_EQUATIONS, CellEquations, CellWeights
from rnnkit.errors import UnsupportedBackendError
from rnnkit.kernels.gpu import CudaFusedKernel
from rnnkit.kernels.reference import ReferenceKernel

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
MODES = ["rnn_tanh", "rnn_relu", "lstm", "lstm_proj", "gru"]
EQUATIONS = {"rnn_tanh": ELMAN_TANH, "rnn_relu": ELMAN_RELU, "lstm": LSTM_EQUATIONS,
             "lstm_proj": LSTM_EQUATIONS, "gru": GRU_EQUATIONS}
# relative error ||got - float64 reference|| / ||float64 reference||, per tensor
TOL = {torch.float32: 2e-5, torch.bfloat16: 4e-2, torch.float16: 6e-3}
TOL_TF32 = 5e-3
# ReLU recurrences in low precision: a unit whose pre-activation lies within rounding of 0 is
# switched off in one run and on in the other, and that unit's whole gradient path differs,
# so gradient errors are a few such flips, not rounding noise: the reference backend's own
# bfloat16 gradients were measured 1.1e-1 off the float64 ones (H100, this test's sizes).
# Outputs and states keep the tolerances above; gradients get these.
TOL_RELU_GRAD = {torch.bfloat16: 1.5e-1, "tf32": 3e-2}
INPUT, HIDDEN, PROJ, STEPS, BATCH = 24, 40, 16, 9, 5
LENGTHS = [9, 7, 7, 3, 1]


@pytest.fixture
def fused_cuda(monkeypatch):
    """The backend registered under its name for the test (whether or not rnnkit registers it)."""
    kernel = kernels.BACKENDS.get("fused_cuda") or CudaFusedKernel()
    monkeypatch.setitem(kernels.BACKENDS, "fused_cuda", kernel)
    return kernel


@pytest.fixture
def no_tf32():
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def make_layer(mode, backend, dtype, device, num_layers=1, bidirectional=False, bias=True):
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, bias=bias, backend=backend,
              dtype=dtype, device=device)
    if mode.startswith("rnn"):
        return rnnkit.RNN(INPUT, HIDDEN, nonlinearity=mode[4:], **kw)
    if mode == "lstm":
        return rnnkit.LSTM(INPUT, HIDDEN, **kw)
    if mode == "lstm_proj":
        return rnnkit.LSTM(INPUT, HIDDEN, proj_size=PROJ, **kw)
    return rnnkit.GRU(INPUT, HIDDEN, **kw)


def run_layer(layer, seed, inputs, with_state, through=None):
    """Outputs, final states, and the gradients of input, initial states and every parameter.

    The data are drawn in float64 on the CPU from ``seed`` and rounded through ``through``
    (the dtype of the layer under test), so every layer sees the same values."""
    p = next(layer.parameters())
    dtype, device = p.dtype, p.device
    through = through or dtype
    gen = torch.Generator().manual_seed(seed)
    D = 2 if layer.bidirectional else 1
    draw = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64).to(through).to(device, dtype)  # noqa: E731
    x = draw(STEPS, BATCH, INPUT).requires_grad_(True)
    leaves = [x]
    inp = x if inputs == "padded" else pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    hx = None
    if with_state:
        state = [draw(layer.num_layers * D, BATCH, s).requires_grad_(True) for s in layer._state_sizes()]
        leaves += state
        hx = state[0] if len(state) == 1 else tuple(state)
    out, hn = layer(inp, hx)
    out = out.data if inputs != "padded" else out
    hn = hn if isinstance(hn, tuple) else (hn,)
    loss = sum((t * draw(*t.shape)).sum() for t in (out,) + hn)  # weighs every element differently
    grads = torch.autograd.grad(loss, leaves + list(layer.parameters()))
    return [out.detach(), *[h.detach() for h in hn], *grads]


def rel_err(got, ref):
    return ((got.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def compare(mode, dtype, arch, inputs, with_state, tol, seed=1, grad_tol=None):
    """Both backends at ``dtype`` against the reference in float64 (all three hold the same
    values): each tensor's error is within ``tol``, or, where rounding at ``dtype`` alone
    makes more (long chains of bfloat16 gradients), within 1.5x the reference backend's own
    error at ``dtype``."""
    torch.manual_seed(0)
    exact = make_layer(mode, "reference", torch.float64, "cuda", **arch)
    fused = make_layer(mode, "fused_cuda", dtype, "cuda", **arch)
    ref = make_layer(mode, "reference", dtype, "cuda", **arch)
    fused.load_state_dict({k: v.to(dtype) for k, v in exact.state_dict().items()})
    ref.load_state_dict(fused.state_dict())
    exact.load_state_dict({k: v.double() for k, v in fused.state_dict().items()})
    expected = run_layer(exact, seed, inputs, with_state, through=dtype)
    got = run_layer(fused, seed, inputs, with_state)
    same_dtype = run_layer(ref, seed, inputs, with_state)
    assert len(got) == len(expected)
    errs = [rel_err(g, e) for g, e in zip(got, expected)]
    ref_errs = [rel_err(g, e) for g, e in zip(same_dtype, expected)]
    for k, (g, e) in enumerate(zip(got, expected)):
        assert g.dtype == dtype and g.shape == e.shape, f"tensor {k}"
        assert torch.isfinite(g).all(), f"tensor {k} has non-finite values"
    n_values = 1 + len(layer_state_sizes(fused))  # outputs and final states come first
    tols = [tol if k < n_values or grad_tol is None else grad_tol for k in range(len(errs))]
    bad = [k for k, (e, r, t) in enumerate(zip(errs, ref_errs, tols)) if e > max(t, 1.5 * r)]
    assert not bad, (f"tensors {bad}: relative errors {['%.1e' % e for e in errs]}, the reference backend's "
                     f"at {dtype}: {['%.1e' % e for e in ref_errs]}, tolerance {tol}")
    return errs


def layer_state_sizes(layer):
    return layer._state_sizes()


def parity_cases():
    cases = []
    for mode, dtype, num_layers, bidirectional, inputs in itertools.product(
            MODES, (torch.float32, torch.bfloat16, torch.float16), (1, 2), (False, True), ("padded", "packed")):
        cases.append(pytest.param(mode, dtype, num_layers, bidirectional, inputs,
                                  id=f"{mode}-{str(dtype)[6:]}-L{num_layers}-{'bi' if bidirectional else 'uni'}"
                                     f"-{inputs}"))
    return cases


@needs_cuda
@pytest.mark.parametrize("mode,dtype,num_layers,bidirectional,inputs", parity_cases())
def test_fused_cuda_equals_reference(mode, dtype, num_layers, bidirectional, inputs, fused_cuda, no_tf32):
    with_state = (num_layers + bidirectional) % 2 == 0  # half the cases start from a given state
    bias = not (num_layers == 2 and bidirectional and inputs == "padded")  # one bias-free case per mode, dtype
    compare(mode, dtype, dict(num_layers=num_layers, bidirectional=bidirectional, bias=bias),
            inputs, with_state, TOL[dtype], grad_tol=TOL_RELU_GRAD.get(dtype) if mode == "rnn_relu" else None)


@needs_cuda
@pytest.mark.parametrize("mode", MODES)
def test_tf32_when_cudnn_allows_it(mode, fused_cuda):
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        compare(mode, torch.float32, dict(num_layers=2, bidirectional=True), "packed", True, TOL_TF32,
                grad_tol=TOL_RELU_GRAD["tf32"] if mode == "rnn_relu" else None)
    finally:
        torch.backends.cudnn.allow_tf32 = old


@needs_cuda
@pytest.mark.parametrize("mode", MODES)
def test_graph_replay_equals_eager(mode, fused_cuda, no_tf32):
    """Call 1 runs eagerly (compiles), call 2 captures the CUDA graphs, later calls replay them;
    outputs kept from one call survive the next (the cache hands buffers out only when free)."""
    torch.manual_seed(0)
    layer = make_layer(mode, "fused_cuda", torch.float32, "cuda", num_layers=2, bidirectional=True)
    runs = [run_layer(layer, seed, "packed", True) for seed in (7, 7, 7, 8, 7)]
    for k in range(len(runs[0])):
        for r in (1, 2, 4):
            torch.testing.assert_close(runs[r][k], runs[0][k], rtol=1e-6, atol=1e-6)
        assert not torch.allclose(runs[3][k], runs[0][k])  # other data give other values...
    from rnnkit.kernels.gpu import _run
    assert any(e.fwd_graph is not None and e.bwd_graph is not None for pool in _run._entries.values() for e in pool)


@needs_cuda
def test_graph_outputs_are_not_overwritten_while_held(fused_cuda, no_tf32):
    torch.manual_seed(0)
    layer = make_layer("lstm", "fused_cuda", torch.float32, "cuda")
    xs = [torch.randn(STEPS, BATCH, INPUT, device="cuda") for _ in range(4)]
    with torch.no_grad():
        ref = [layer(x)[0].clone() for x in xs]
        held = [layer(x)[0] for x in xs]  # several calls' outputs alive at once
        held += [layer(x)[0] for x in xs]
    for k, h in enumerate(held):
        torch.testing.assert_close(h, ref[k % 4], rtol=0, atol=0)


@needs_cuda
def test_auto_picks_fused_cuda_when_registered(fused_cuda, monkeypatch):
    monkeypatch.setattr(kernels, "AUTO_ORDER", [fused_cuda] + [k for k in kernels.AUTO_ORDER if k is not fused_cuda])
    x = torch.randn(3, INPUT, device="cuda")
    layer = rnnkit.LSTM(INPUT, HIDDEN, device="cuda")
    assert kernels.select("auto", LSTM_EQUATIONS, x, layer.layer_weights(0, 0)) is fused_cuda
    xd = x.double()
    assert kernels.select("auto", LSTM_EQUATIONS, xd, layer.double().layer_weights(0, 0)).name != "fused_cuda"


# ----------------------------------------------------------------------------- CPU (CI)
@pytest.mark.parametrize("what", ["cpu", "float64", "mixed dtypes", "unknown recurrence"])
def test_check_refuses_what_it_cannot_run(what):
    kernel = CudaFusedKernel()
    device = "cuda" if CUDA and what != "cpu" else "cpu"
    dtype = torch.float64 if what == "float64" else torch.float32
    x = torch.randn(4, 3, dtype=dtype, device=device)
    w = CellWeights(torch.randn(6, 3, dtype=dtype, device=device),
                    torch.randn(6, 6, dtype=torch.float16 if what == "mixed dtypes" else dtype, device=device))
    eq = CellEquations(name="custom", gates=("h",), state_names=("h",),
                                 recur=lambda g, s, w: s, math="") if what == "unknown recurrence" else ELMAN_TANH
    if what != "cpu" and device == "cpu":
        # without CUDA every case is refused for the device first; still a refusal
        with pytest.raises(UnsupportedBackendError):
            kernel.check(eq, x, w)
        return
    expected = {"cpu": "CUDA", "float64": "float64", "mixed dtypes": "float16", "unknown recurrence": "custom"}[what]
    with pytest.raises(UnsupportedBackendError, match=expected):
        kernel.check(eq, x, w)


def test_cpu_layers_never_import_triton(monkeypatch):
    """Registered in auto, the backend leaves CPU layers to the others and imports nothing."""
    kernel = CudaFusedKernel()
    monkeypatch.setitem(kernels.BACKENDS, "fused_cuda", kernel)
    monkeypatch.setattr(kernels, "AUTO_ORDER", [kernel] + list(kernels.AUTO_ORDER))
    before = "rnnkit.kernels.gpu._run" in sys.modules
    layer = rnnkit.GRU(INPUT, HIDDEN)
    out, _ = layer(torch.randn(STEPS, BATCH, INPUT))
    assert out.shape == (STEPS, BATCH, HIDDEN)
    assert kernels.select("auto", GRU_EQUATIONS, torch.randn(2, INPUT), layer.layer_weights(0, 0)) is not kernel
    assert ("rnnkit.kernels.gpu._run" in sys.modules) == before


# ----------------------------------------------------------------------------- interpreter
interpret = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" or importlib.util.find_spec("triton") is None,
    reason="runs the Triton kernels on the CPU only with TRITON_INTERPRET=1 and triton installed")


@interpret
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_interpreted_kernels_equal_reference(mode, reverse, packed):
    """One layer-direction through CudaFusedKernel.layer on CPU tensors (check() is bypassed:
    the interpreter runs the kernels on the CPU), float32 against the float64 reference."""
    gen = torch.Generator().manual_seed(11)
    H, I = 6, 5
    G = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "lstm_proj": 4, "gru": 3}[mode]
    P = 4 if mode == "lstm_proj" else H
    sizes = [4, 3, 3, 1, 1] if packed else [4] * 5
    r = lambda *s: (0.5 * torch.randn(*s, generator=gen, dtype=torch.float64)).requires_grad_(True)  # noqa: E731
    x = r(sum(sizes), I)
    s0 = (r(4, P), r(4, H)) if mode.startswith("lstm") else (r(4, P),)
    w = CellWeights(r(G * H, I), r(G * H, P), r(G * H), r(G * H), r(P, H) if mode == "lstm_proj" else None)
    eq = EQUATIONS[mode]

    def run(kernel, x, s0, w):
        leaves = [x, *s0, *[t for t in w if t is not None]]
        out, st = kernel.layer(eq, x, sizes, s0, w, reverse)
        g = torch.Generator().manual_seed(1)
        loss = sum((t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)).sum()
                   for t in (out, *st))
        return [out, *st, *torch.autograd.grad(loss, leaves)]

    ref = run(ReferenceKernel(), x, s0, w)
    f32 = lambda t: None if t is None else t.detach().float().requires_grad_(True)  # noqa: E731
    got = run(CudaFusedKernel(), f32(x), tuple(map(f32, s0)), CellWeights(*map(f32, w)))
    errs = [rel_err(a, b) for a, b in zip(got, ref)]
    assert max(errs) < 1e-5, errs
