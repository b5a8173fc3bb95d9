"""The fused CPU backend against the reference loop: values, states, every gradient; gradcheck;
determinism; and the fallback of backend="auto" where fused does not apply."""
from __future__ import annotations

import functools
import itertools
import pathlib
import random
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import kernels
from rnnkit.cells import (ELMAN_RELU, ELMAN_TANH, GRU_EQUATIONS, LSTM_EQUATIONS, CellEquations,
                          CellWeights)
from rnnkit.errors import UnsupportedBackendError
from rnnkit.kernels.ops import extension as ops_extension
from rnnkit.kernels.cpu import blocks, common, split

TESTS = str(pathlib.Path(__file__).resolve().parent.parent)  # helpers.py (no conftest in this folder)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
from helpers import assert_within_rounding, rounding_sensitivity  # noqa: E402

MODES = ["rnn_tanh", "rnn_relu", "lstm", "lstm_proj", "gru"]
EQUATIONS = {"rnn_tanh": ELMAN_TANH, "rnn_relu": ELMAN_RELU, "lstm": LSTM_EQUATIONS,
             "lstm_proj": LSTM_EQUATIONS, "gru": GRU_EQUATIONS}
INPUT, HIDDEN, PROJ, STEPS, BATCH = 5, 6, 4, 6, 4
LENGTHS = [6, 4, 4, 1]  # packed sequences: shrinking batch, a length shared, a length-1 sequence


@pytest.fixture(params=["loop", "step", "split"])
def strategy(request, monkeypatch):
    """"loop": the whole time loop in one jitted call, its backward in 3 blocks of steps;
    "step": per-step BLAS products + jitted math, the backward one step per block;
    "split": the batch split across threads, here as far as it goes (one row per chunk), one block."""
    monkeypatch.setattr(common, "WHOLE_LOOP_MAX_FLOPS", 1e12 if request.param == "loop" else -1.0)
    if request.param != "split":
        monkeypatch.setattr(blocks, "MIN_BLOCK_BYTES", 1)
        monkeypatch.setattr(blocks, "MAX_BLOCKS", 3 if request.param == "loop" else 10 ** 9)
    monkeypatch.setattr(split, "thread_parts", (lambda batch: batch) if request.param == "split" else (lambda batch: 1))
    return request.param


def make_layer(mode, backend, dtype, num_layers=1, bidirectional=False, batch_first=False, bias=True):
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias,
              backend=backend, dtype=dtype)
    if mode.startswith("rnn"):
        return rnnkit.RNN(INPUT, HIDDEN, nonlinearity=mode[4:], **kw)
    if mode == "lstm":
        return rnnkit.LSTM(INPUT, HIDDEN, **kw)
    if mode == "lstm_proj":
        return rnnkit.LSTM(INPUT, HIDDEN, proj_size=PROJ, **kw)
    return rnnkit.GRU(INPUT, HIDDEN, **kw)


def draw(layer, dtype, seed, inputs, with_state):
    """(x, initial states, the loss's weights: one per element of the outputs and final states), drawn
    in ``dtype`` and returned in float64 (exactly the same values)."""
    gen = torch.Generator().manual_seed(seed)
    D = 2 if layer.bidirectional else 1
    shape = (BATCH, STEPS, INPUT) if layer.batch_first else (STEPS, BATCH, INPUT)
    x = torch.randn(*shape, generator=gen, dtype=dtype)
    states = [torch.randn(layer.num_layers * D, BATCH, s, generator=gen, dtype=dtype)
              for s in layer._state_sizes()] if with_state else []
    with torch.no_grad():
        shapes = [t.shape for t in outputs(layer, inputs, x, states)]
    # a loss that weighs every output and state element differently
    weights = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    return x.double(), [s.double() for s in states], [w.double() for w in weights]


def outputs(layer, inputs, x, states):
    """The layer's output (its data, for packed input) and final states."""
    if inputs == "padded":
        inp = x
    else:
        inp = pack_padded_sequence(x, torch.tensor(LENGTHS if inputs == "packed_sorted" else [4, 6, 1, 4]),
                                   batch_first=layer.batch_first, enforce_sorted=inputs == "packed_sorted")
    hx = None if not states else states[0] if len(states) == 1 else tuple(states)
    out, hn = layer(inp, hx)
    out = out.data if inputs != "padded" else out
    return (out,) + (hn if isinstance(hn, tuple) else (hn,))


def run_layer(layer, dtype, inputs, x, states, weights):
    """Outputs, final states and the gradients of input, initial states and every parameter, of the
    loss sum(weights * (outputs, final states)); the data (float64 tensors) run in ``dtype``."""
    x = x.to(dtype, copy=True).requires_grad_(True)
    states = [s.to(dtype, copy=True).requires_grad_(True) for s in states]
    results = outputs(layer, inputs, x, states)
    loss = sum((t * w.to(dtype)).sum() for t, w in zip(results, weights))
    grads = torch.autograd.grad(loss, [x, *states, *layer.parameters()])
    return [t.detach() for t in results] + list(grads)


@functools.lru_cache(maxsize=None)
def case_data(mode, dtype, config):
    """(parameters, x, initial states, the loss's weights, float64 truth, sensitivities) of one case
    (``config``: the parity case's items), shared by its strategies: the truth is the float64 reference
    on exactly the data (drawn in ``dtype``) the run sees; the sensitivities are helpers.py's."""
    config = dict(config)
    inputs, with_state = config["inputs"], config["with_state"]
    arch = {k: v for k, v in config.items() if k not in ("inputs", "with_state")}
    torch.manual_seed(0)
    layer = make_layer(mode, "reference", dtype, **arch)
    params = {k: p.detach().double() for k, p in layer.named_parameters()}
    x, states, weights = draw(layer, dtype, 1, inputs, with_state)
    ref64 = make_layer(mode, "reference", torch.float64, **arch)
    names, ns, npar = list(params), len(states), len(params)

    def results_of(data):  # data: x, initial states, parameters, the loss's weights
        ref64.load_state_dict(dict(zip(names, data[1 + ns:1 + ns + npar])), strict=True)
        return run_layer(ref64, torch.float64, inputs, data[0], data[1:1 + ns], data[1 + ns + npar:])

    truth, sensitivities = rounding_sensitivity(results_of, [x, *states, *params.values(), *weights])
    return params, x, states, weights, truth, sensitivities


def parity_cases():
    """Every axis covered for every mode and dtype: a fixed sample of the full product, topped up
    so that each value of each axis occurs at least once."""
    axes = dict(num_layers=[1, 2, 3], bidirectional=[False, True], batch_first=[False, True],
                bias=[True, False], inputs=["padded", "packed_sorted", "packed_unsorted"],
                with_state=[False, True])
    full = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    cases = []
    for mode in MODES:
        for dtype in (torch.float32, torch.float64):
            rng = random.Random(f"{mode}-{dtype}")
            chosen = rng.sample(full, 6)
            for name, values in axes.items():
                for v in values:
                    if not any(c[name] == v for c in chosen):
                        chosen.append(next(c for c in full if c[name] == v))
            cases += [pytest.param(mode, dtype, c, id=f"{mode}-{str(dtype)[6:]}-" + "-".join(
                f"{k}={v}" for k, v in c.items())) for c in chosen]
    return cases


@pytest.mark.parametrize("mode,dtype,config", parity_cases())
def test_fused_equals_reference(mode, dtype, config, strategy):
    """Every result within float32's (float64's) rounding of the float64 reference's, a bound derived
    from the results' sensitivity to rounding (helpers.py, ROUNDING_FACTOR), the same on every machine;
    in float32, torch's float32 reference too, so the bound is float32's, not fitted to our kernels."""
    inputs = config["inputs"]
    arch = {k: v for k, v in config.items() if k not in ("inputs", "with_state")}
    params, x, states, weights, truth, sensitivities = case_data(mode, dtype, tuple(config.items()))
    fused = make_layer(mode, "fused", dtype, **arch)
    fused.load_state_dict(params, strict=True)
    assert_within_rounding(run_layer(fused, dtype, inputs, x, states, weights), truth, sensitivities, dtype,
                           implementations=2 if dtype == torch.float64 else 1)
    if dtype == torch.float32:
        ref = make_layer(mode, "reference", dtype, **arch)
        ref.load_state_dict(params, strict=True)
        assert_within_rounding(run_layer(ref, dtype, inputs, x, states, weights), truth, sensitivities, dtype,
                               who="float32 reference")


def test_the_operators_are_what_auto_picks_on_cpu():
    x = torch.randn(3, INPUT)
    for eq, layer in ((LSTM_EQUATIONS, rnnkit.LSTM(INPUT, HIDDEN)), (GRU_EQUATIONS, rnnkit.GRU(INPUT, HIDDEN)),
                      (ELMAN_TANH, rnnkit.RNN(INPUT, HIDDEN))):
        assert kernels.select("auto", eq, x, layer.layer_weights(0, 0)).name == "ops"
        assert kernels.select("auto", eq, x.double(), layer.double().layer_weights(0, 0)).name == "ops"


def _layer_inputs(mode, packed, gen):
    """Float64 leaves for one layer-direction: x, state0, weights (proj for lstm_proj)."""
    H = HIDDEN
    G = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "lstm_proj": 4, "gru": 3}[mode]
    P = PROJ if mode == "lstm_proj" else H
    sizes = [3, 3, 2, 1] if packed else [3, 3, 3, 3]
    N = sum(sizes)
    r = lambda *s: (0.5 * torch.randn(*s, generator=gen, dtype=torch.float64)).requires_grad_(True)  # noqa: E731
    x = r(N, INPUT)
    state0 = (r(3, P), r(3, H)) if mode.startswith("lstm") else (r(3, P),)
    weights = CellWeights(r(G * H, INPUT), r(G * H, P), r(G * H), r(G * H), r(P, H) if mode == "lstm_proj" else None)
    return x, sizes, state0, weights


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse,packed", [(False, False), (True, True)], ids=["forward-padded", "reverse-packed"])
def test_gradcheck(mode, reverse, packed, strategy):
    gen = torch.Generator().manual_seed(3)
    x, sizes, state0, weights = _layer_inputs(mode, packed, gen)
    eq = EQUATIONS[mode]
    kernel = kernels.BACKENDS["numba"]
    present = [w for w in weights if w is not None]
    ns = len(state0)

    def f(x, *rest):
        st, ws = rest[:ns], list(rest[ns:])
        full = [ws.pop(0) if w is not None else None for w in weights]
        out, final = kernel.layer(eq, x, sizes, st, CellWeights(*full), reverse)
        return (out,) + tuple(final)

    assert torch.autograd.gradcheck(f, (x, *state0, *present), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_deterministic(mode, strategy):
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        layer = make_layer(mode, "fused", torch.float32, num_layers=2, bidirectional=True)
        results.append(run_layer(layer, torch.float32, "packed_unsorted",
                                 *draw(layer, torch.float32, 5, "packed_unsorted", True)))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_no_grad_forward_matches_grad_forward(strategy):
    torch.manual_seed(0)
    layer = make_layer("lstm_proj", "fused", torch.float32, num_layers=2, bidirectional=True)
    x = torch.randn(STEPS, BATCH, INPUT)
    with torch.no_grad():
        a, (ha, ca) = layer(x)
    b, (hb, cb) = layer(x)
    assert torch.equal(a, b.detach()) and torch.equal(ha, hb.detach()) and torch.equal(ca, cb.detach())


CUSTOM = CellEquations(name="custom", gates=("h",), state_names=("h",),
                       recur=lambda gx, s, w: (torch.sin(gx + s[0] @ w.w_hh.t()),), math="h = sin(...)")


@pytest.mark.parametrize("what", ["bfloat16", "float16", "meta device", "mixed dtypes", "unknown recurrence"])
def test_fused_check_names_what_is_unsupported_and_auto_falls_back(what):
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(what, torch.float32)
    device = "meta" if what == "meta device" else "cpu"
    x = torch.randn(4, INPUT, dtype=dtype, device=device)
    w = CellWeights(torch.randn(HIDDEN, INPUT, dtype=dtype, device=device),
                    torch.randn(HIDDEN, HIDDEN, dtype=torch.float64 if what == "mixed dtypes" else dtype,
                                device=device))
    eq = CUSTOM if what == "unknown recurrence" else ELMAN_TANH
    expected = {"bfloat16": "bfloat16", "float16": "float16", "meta device": "meta",
                "mixed dtypes": "float64", "unknown recurrence": "custom"}[what]
    with pytest.raises(UnsupportedBackendError, match=expected):
        kernels.select("numba", eq, x, w)
    with pytest.raises(ValueError):  # UnsupportedBackendError is a ValueError
        kernels.select("numba", eq, x, w)
    if what in ("bfloat16", "float16") and ops_extension.available():
        # the C++ operators run half-precision layers of torch.nn's families (in float32 inside)
        assert kernels.select("fused", eq, x, w).name == kernels.select("auto", eq, x, w).name == "ops"
        return
    with pytest.raises(UnsupportedBackendError, match=expected):
        kernels.select("fused", eq, x, w)
    assert kernels.select("auto", eq, x, w) is kernels.REFERENCE


@pytest.mark.parametrize("mode", MODES)
def test_bfloat16_layers_run_the_operators_or_the_reference_and_numba_refuses(mode):
    torch.manual_seed(0)
    auto = make_layer(mode, "auto", torch.bfloat16)
    picked = make_layer(mode, "ops" if ops_extension.available() else "reference", torch.bfloat16)
    picked.load_state_dict(auto.state_dict())
    x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.bfloat16)
    out_auto, _ = auto(x)
    out_picked, _ = picked(x)
    assert torch.equal(out_auto, out_picked)  # auto ran the operators (the reference loop without them)
    numba = make_layer(mode, "numba", torch.bfloat16)
    with pytest.raises(UnsupportedBackendError, match="bfloat16"):
        numba(x)
