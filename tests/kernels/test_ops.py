"""The C++ operators (backend="ops", torch.ops.rnnkit.*) against the reference loop: outputs, final
states and every gradient, for each family, both directions, padded and packed (sorted or not), with
and without initial states and projections, float64 and float32 (held to float32's rounding of the
float64 truth); torch.library.opcheck on every operator; gradcheck, gradgradcheck and batched gradients;
edge shapes; and the refusals, including a missing extension.

Everything but the missing-extension test needs rnnkit._C built (pip install --no-build-isolation -e .),
and is skipped, saying so, without it."""
from __future__ import annotations

import pathlib
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import kernels
from rnnkit.cells import ELMAN_RELU, ELMAN_TANH, GRU_EQUATIONS, LSTM_EQUATIONS, CellWeights, LayerNormLSTMCell
from rnnkit.cells.layernorm_lstm import LAYERNORM_LSTM
from rnnkit.cells.gru import GRU_RESET_BEFORE
from rnnkit.errors import UnsupportedBackendError
from rnnkit.kernels.ops import extension

TESTS = str(pathlib.Path(__file__).resolve().parent.parent)  # helpers.py (no conftest in this folder)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
from helpers import assert_within_rounding, float64_truth_of, outputs_and_grads  # noqa: E402

needs_extension = pytest.mark.skipif(
    not extension.available(),
    reason="rnnkit._C (the C++ operators) is not built: pip install --no-build-isolation -e .")

MODES = ["rnn_tanh", "rnn_relu", "lstm", "lstm_proj", "gru"]
EQUATIONS = {"rnn_tanh": ELMAN_TANH, "rnn_relu": ELMAN_RELU, "lstm": LSTM_EQUATIONS, "lstm_proj": LSTM_EQUATIONS,
             "gru": GRU_EQUATIONS}
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "lstm_proj": 4, "gru": 3}
INPUT, HIDDEN, PROJ, STEPS, BATCH = 5, 6, 4, 6, 4
SORTED_LENGTHS, UNSORTED_LENGTHS = [6, 4, 4, 1], [4, 6, 1, 4]


def make_layer(mode, backend, dtype, **kwargs):
    kw = dict(backend=backend, dtype=dtype, **kwargs)
    if mode.startswith("rnn"):
        return rnnkit.RNN(INPUT, HIDDEN, nonlinearity=mode[4:], **kw)
    if mode == "gru":
        return rnnkit.GRU(INPUT, HIDDEN, **kw)
    return rnnkit.LSTM(INPUT, HIDDEN, proj_size=PROJ if mode == "lstm_proj" else 0, **kw)


def run(form, lengths=None):
    """fn(layer, x, *states) for outputs_and_grads: the layer called on x (T, B, I) in ``form`` (packed:
    with ``lengths``, by default SORTED_LENGTHS or UNSORTED_LENGTHS)."""
    def call(layer, x, *states):
        if form == "padded":
            inp = x.transpose(0, 1) if layer.batch_first else x
        else:
            given = lengths or (SORTED_LENGTHS if form == "packed_sorted" else UNSORTED_LENGTHS)
            inp = pack_padded_sequence(x, given, enforce_sorted=form == "packed_sorted")
        hx = None if not states else states[0] if len(states) == 1 else tuple(states)
        out, hn = layer(inp, hx)
        return out, hn
    return call


# (form, initial states given, bidirectional, layers, batch_first, bias): every axis in both values,
# each direction alone and together (bidirectional runs a reverse layer-direction on the same packing)
CONFIGS = [
    ("padded", True, False, 1, False, True),
    ("padded", False, True, 2, True, False),
    ("packed_sorted", False, False, 1, False, True),
    ("packed_sorted", True, True, 1, False, True),
    ("packed_unsorted", True, True, 2, False, True),
    ("packed_unsorted", False, False, 1, False, False),
]


def config_id(config):
    form, with_state, bidirectional, layers, batch_first, bias = config
    return (f"{form}-{'h0' if with_state else 'no_h0'}-{'bi' if bidirectional else 'uni'}-{layers}layer"
            + ("-batch_first" if batch_first else "") + ("" if bias else "-no_bias"))


@needs_extension
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@pytest.mark.parametrize("mode", MODES)
def test_ops_equals_reference(mode, config, dtype):
    """Outputs, final states and the gradients of input, initial states and every parameter, within
    ``dtype``'s rounding of the float64 reference loop (float64: both float64 implementations' rounding)."""
    assert_equals_reference(mode, config, dtype, BATCH, run(config[0]))


# A batch the time loop splits across 2 threads (row_split.h: at least 4 rows per chunk), packed with
# lengths that put unequal work in the chunks; the sequences of a chunk end at different steps.
SPLIT_LENGTHS = [6, 3, 6, 1, 5, 2, 6, 4, 4, 1, 2]


@needs_extension
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("form", ["padded", "packed_unsorted"])
@pytest.mark.parametrize("mode", MODES)
def test_batch_split_across_threads_equals_reference(mode, form, dtype):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        config = (form, True, True, 1, False, True)
        assert_equals_reference(mode, config, dtype, len(SPLIT_LENGTHS), run(form, SPLIT_LENGTHS))
    finally:
        torch.set_num_threads(threads)


def assert_equals_reference(mode, config, dtype, batch, fn):
    form, with_state, bidirectional, layers, batch_first, bias = config
    torch.manual_seed(0)
    layer = make_layer(mode, "ops", dtype, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
                       bias=bias)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, batch, INPUT, generator=gen, dtype=dtype).requires_grad_()
    directions = 2 if bidirectional else 1
    states = [torch.randn(layers * directions, batch, size, generator=gen, dtype=dtype).requires_grad_()
              for size in layer._state_sizes()] if with_state else []
    truth, sensitivities = float64_truth_of(fn, layer, [x, *states], dtype=dtype)
    got = outputs_and_grads(fn, layer, [x, *states])
    assert_within_rounding(got, truth, sensitivities, dtype, implementations=2 if dtype == torch.float64 else 1,
                           who="ops")


def layer_inputs(mode, sizes, dtype=torch.float64, seed=3, sizes_ihp=(INPUT, HIDDEN, PROJ)):
    """Leaves for one layer-direction: x (N, I), state0, CellWeights (with a projection for lstm_proj);
    ``sizes_ihp``: input, hidden and projection sizes."""
    gen = torch.Generator().manual_seed(seed)
    I, H, P = sizes_ihp
    G, P = GATES[mode], P if mode == "lstm_proj" else H

    def leaf(*shape):
        return (0.5 * torch.randn(*shape, generator=gen, dtype=dtype)).requires_grad_()

    x = leaf(sum(sizes), I)
    state0 = (leaf(sizes[0], P), leaf(sizes[0], H)) if mode.startswith("lstm") else (leaf(sizes[0], P),)
    weights = CellWeights(leaf(G * H, I), leaf(G * H, P), leaf(G * H), leaf(G * H),
                          leaf(P, H) if mode == "lstm_proj" else None)
    return x, state0, weights


def layer_function(mode, sizes, reverse, weights):
    """f(x, *state0, *present weights) -> (output, *final state) through the "ops" kernel."""
    kernel, eq = kernels.BACKENDS["ops"], EQUATIONS[mode]
    present = [name for name, w in zip(weights._fields, weights) if w is not None]
    states = 2 if mode.startswith("lstm") else 1

    def f(x, *rest):
        state0, given = rest[:states], dict(zip(present, rest[states:]))
        out, final = kernel.layer(eq, x, sizes, state0, CellWeights(**given), reverse)
        return (out, *final)

    return f, [w for w in weights if w is not None]


GRAD_CASES = [(False, [3, 3, 3, 3]), (True, [3, 3, 2, 1]), (False, [3, 2, 2, 1])]


@needs_extension
@pytest.mark.parametrize("reverse,sizes", GRAD_CASES, ids=["forward-padded", "reverse-packed", "forward-packed"])
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_and_batched_grads(mode, reverse, sizes):
    """First-order gradients by finite differences (the C++ backward) and through vmap's batched output
    gradients (is_grads_batched: the recompute on the reference loop)."""
    x, state0, weights = layer_inputs(mode, sizes)
    f, present = layer_function(mode, sizes, reverse, weights)
    assert torch.autograd.gradcheck(f, (x, *state0, *present), eps=1e-6, atol=1e-7, rtol=1e-5,
                                    check_batched_grad=True)


@needs_extension
@pytest.mark.parametrize("mode", MODES)
def test_gradgradcheck(mode):
    """Second-order gradients (create_graph=True), which recompute on the reference loop; small sizes,
    since gradgradcheck's cost grows with the square of the elements."""
    reverse, sizes = True, [2, 2, 1]
    x, state0, weights = layer_inputs(mode, sizes, sizes_ihp=(2, 3, 2))
    f, present = layer_function(mode, sizes, reverse, weights)
    assert torch.autograd.gradgradcheck(f, (x, *state0, *present), eps=1e-6, atol=1e-6, rtol=1e-4)


@needs_extension
def test_double_backward_gives_the_reference_numbers():
    """A gradient penalty through the "ops" layer equals the reference backend's (not zero, as a
    backward that autograd cannot see through would give)."""
    results = []
    for backend in ("ops", "reference"):
        torch.manual_seed(0)
        layer = make_layer("lstm", backend, torch.float64)
        x = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                        requires_grad=True)
        out, _ = layer(x)
        (gx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        penalty = gx.pow(2).sum()
        results.append(torch.autograd.grad(penalty, list(layer.parameters())))
    for a, b in zip(*results):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def op_arguments(mode, sizes, reverse, dtype=torch.float64):
    """(forward operator, its arguments) for one layer-direction."""
    x, state0, weights = layer_inputs(mode, sizes, dtype)
    family = {"lstm_proj": "lstm"}.get(mode, mode)
    w = list(weights[:4]) + ([weights.w_hr] if family == "lstm" else [])
    return getattr(torch.ops.rnnkit, family).default, (x, torch.tensor(sizes), *state0, *w, reverse)


def backward_arguments(mode, sizes, reverse, output_mask, dtype=torch.float64):
    """(backward operator, its arguments): the forward's arguments and results, output gradients."""
    forward, args = op_arguments(mode, sizes, reverse, dtype)
    detached = [a.detach() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    results = forward(*detached)
    states = 2 if mode.startswith("lstm") else 1
    gen = torch.Generator().manual_seed(5)
    grads = [torch.randn(r.shape, generator=gen, dtype=r.dtype) for r in results[:1 + states]]
    x, batch_sizes, state0 = detached[0], detached[1], detached[2:2 + states]
    w_ih, w_hh = detached[2 + states:4 + states]
    projection = [detached[-2]] if forward.name().endswith("lstm") else []
    backward = getattr(torch.ops.rnnkit, forward.name().split("::")[1] + "_backward").default
    return backward, (*grads, x, batch_sizes, *state0, w_ih, w_hh, *projection, results[0],
                      *results[1 + states:], reverse, output_mask)


@needs_extension
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["float64", "bfloat16"])
@pytest.mark.parametrize("reverse,sizes", [(False, [3, 3, 3]), (True, [3, 2, 2, 1])], ids=["padded", "reverse-packed"])
@pytest.mark.parametrize("mode", MODES)
def test_opcheck(mode, reverse, sizes, dtype):
    """Schema, fake kernel (a bfloat16 layer's saved tensors are float32), autograd registration and AOT
    dispatch of every operator."""
    forward, args = op_arguments(mode, sizes, reverse, dtype)
    torch.library.opcheck(forward, args)
    for output_mask in ([True, True, True], [False, False, False], [False, True, False]):
        backward, bargs = backward_arguments(mode, sizes, reverse, output_mask, dtype)
        torch.library.opcheck(backward, bargs)


@needs_extension
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse,sizes", [(False, [3, 2, 1]), (True, [3, 2, 2, 1])], ids=["forward", "reverse"])
def test_backward_operator_leaves_out_what_the_mask_turns_off(mode, reverse, sizes):
    """output_mask = [input, initial states, weights]: what it turns off comes back as (0,), and what it
    leaves on is the same as with everything on."""
    states = 2 if mode.startswith("lstm") else 1
    backward, args = backward_arguments(mode, sizes, reverse, [True, True, True])
    full = backward(*args)
    for mask in ([False, True, False], [True, False, False], [False, False, True]):
        results = backward(*args[:-1], mask)
        groups = [range(0, 1), range(1, 1 + states), range(1 + states, len(full))]
        for wanted, group in zip(mask, groups):
            for i in group:
                if wanted:
                    assert torch.equal(results[i], full[i]), (mask, i)
                else:
                    assert results[i].shape == (0,), (mask, i)


@needs_extension
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(STEPS, 0), (1, BATCH), (1, 1)], ids=["batch0", "T1", "T1-B1"])
def test_edge_shapes(mode, shape):
    """A batch of 0 sequences and a single step, forward and backward, as the reference loop."""
    T, B = shape
    results = []
    for backend in ("ops", "reference"):
        torch.manual_seed(0)
        layer = make_layer(mode, backend, torch.float64, bidirectional=True)
        x = torch.randn(T, B, INPUT, dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                        requires_grad=True)
        out, hn = layer(x)
        states = hn if isinstance(hn, tuple) else (hn,)
        loss = out.sum() + sum(s.pow(2).sum() for s in states)
        results.append([out, *states, *torch.autograd.grad(loss, [x, *layer.parameters()])])
    for a, b in zip(*results):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# Long enough that the backward runs several blocks of steps (time_loop.h: about 1 MiB of gate
# gradients per block, and at least 512 rows: at H = 64 in float64 that is 512-1,024 rows, and these
# are about 4,600).
LONG_LENGTHS = [400, 377, 350, 341, 330, 311, 300, 290, 281, 266, 250, 240, 233, 220, 210, 200]


def ops_and_torch_nn(mode, proj_size, **sizes):
    """(rnnkit layer on the operators, torch.nn's layer with the same parameters)."""
    if mode.startswith("rnn"):
        ours, theirs = (rnnkit.RNN(nonlinearity=mode[4:], backend="ops", **sizes),
                        torch.nn.RNN(nonlinearity=mode[4:], **sizes))
    elif mode == "gru":
        ours, theirs = rnnkit.GRU(backend="ops", **sizes), torch.nn.GRU(**sizes)
    else:
        proj = proj_size if mode == "lstm_proj" else 0
        ours, theirs = rnnkit.LSTM(proj_size=proj, backend="ops", **sizes), torch.nn.LSTM(proj_size=proj, **sizes)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def results_and_grads(layer, x, states, lengths=None):
    """Output, final states and the gradients of a loss of them with respect to x, the initial states and
    every parameter (x packed with ``lengths`` when given)."""
    leaves = [x.clone().requires_grad_(), *(s.clone().requires_grad_() for s in states)]
    inp = pack_padded_sequence(leaves[0], lengths) if lengths else leaves[0]
    out, hn = layer(inp, leaves[1] if len(leaves) == 2 else tuple(leaves[1:]))
    out = out.data if lengths else out
    finals = hn if isinstance(hn, tuple) else (hn,)
    loss = (out * out.roll(1, 0)).sum() + sum((s * s.flip(-1)).sum() for s in finals)
    return [out, *finals, *torch.autograd.grad(loss, [*leaves, *layer.parameters()])]


@needs_extension
@pytest.mark.parametrize("mode", MODES)
def test_backward_in_several_blocks_equals_torch_nn(mode):
    """Outputs and every gradient of a bidirectional packed layer with h0, long enough that the backward
    sums the weights' gradients over several blocks, equal to torch.nn's in float64."""
    torch.manual_seed(0)
    ours, theirs = ops_and_torch_nn(mode, 32, input_size=16, hidden_size=64, bidirectional=True,
                                    dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(LONG_LENGTHS[0], len(LONG_LENGTHS), 16, generator=gen, dtype=torch.float64)
    states = [torch.randn(2, len(LONG_LENGTHS), size, generator=gen, dtype=torch.float64)
              for size in ours._state_sizes()]
    for got, expected in zip(results_and_grads(ours, x, states, LONG_LENGTHS),
                             results_and_grads(theirs, x, states, LONG_LENGTHS)):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


@needs_extension
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("mode", MODES)
def test_one_step_of_few_rows_equals_torch_nn(mode, batch, dtype):
    """A one-step call of 1 or 3 rows at H = 128 on 2 threads: its products take the few-rows kernels
    (few_rows_product.h, split across the threads); outputs and every gradient as torch.nn's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        ours, theirs = ops_and_torch_nn(mode, 64, input_size=96, hidden_size=128, dtype=dtype)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(1, batch, 96, generator=gen, dtype=dtype)
        states = [torch.randn(1, batch, size, generator=gen, dtype=dtype) for size in ours._state_sizes()]
        tolerance = 1e-10 if dtype == torch.float64 else 2e-5
        for got, expected in zip(results_and_grads(ours, x, states), results_and_grads(theirs, x, states)):
            torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)
    finally:
        torch.set_num_threads(threads)


@needs_extension
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("form", ["padded", "packed_unsorted"])
@pytest.mark.parametrize("mode", MODES)
def test_half_precision_layers_within_their_rounding(mode, form, dtype):
    """bfloat16/float16 layers on the operators (the loop in float32, the large products in the dtype):
    outputs, final states and every gradient within the dtype's rounding of the float64 computation,
    2 layers, both directions, with initial states."""
    torch.manual_seed(0)
    layer = make_layer(mode, "ops", dtype, num_layers=2, bidirectional=True)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, BATCH, INPUT, generator=gen).to(dtype).requires_grad_()
    states = [torch.randn(4, BATCH, size, generator=gen).to(dtype).requires_grad_() for size in layer._state_sizes()]
    fn = run(form)
    truth, sensitivities = float64_truth_of(fn, layer, [x, *states], dtype=dtype)
    got = outputs_and_grads(fn, layer, [x, *states])
    assert_within_rounding(got, truth, sensitivities, dtype, who="ops")


@needs_extension
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_bfloat16_recurrent_product_at_uneven_sizes(mode):
    """A bfloat16 layer's recurrent product runs on bfloat16 dot products where the CPU has them
    (csrc/cpu/bf16_product_kernel.h; widened to float32 elsewhere): at a hidden size that leaves an odd
    last k-pair and a partial last panel (H = 37: K = 37, N = 4*37 or 3*37), and a batch that leaves a
    partial block of rows (5), results and gradients stay within bfloat16's rounding of float64."""
    torch.manual_seed(0)
    layer = getattr(rnnkit, mode.upper())(7, 37, backend="ops", dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(9, 5, 7, generator=gen).to(torch.bfloat16).requires_grad_()
    states = [torch.randn(1, 5, 37, generator=gen).to(torch.bfloat16).requires_grad_() for _ in layer._state_sizes()]
    fn = run("padded")
    truth, sensitivities = float64_truth_of(fn, layer, [x, *states], dtype=torch.bfloat16)
    assert_within_rounding(outputs_and_grads(fn, layer, [x, *states]), truth, sensitivities, torch.bfloat16,
                           who="ops")


@needs_extension
@pytest.mark.parametrize("what,match", [
    ("growing", "non-increasing"), ("sum", "sum to"), ("h0 rows", "h0 should have shape"),
    ("dtype", "dtype"), ("w_hh rows", "w_hh"), ("one bias", "both"), ("no steps", "at least one step"),
])
def test_operators_refuse_inconsistent_arguments(what, match):
    """Called directly, the operators check everything the loops index by: an error, never a crash."""
    _, (x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse) = op_arguments("lstm", [3, 2, 1], False)
    args = dict(input=x.detach(), batch_sizes=batch_sizes, h0=h0.detach(), c0=c0.detach(), w_ih=w_ih.detach(),
                w_hh=w_hh.detach(), b_ih=b_ih.detach(), b_hh=b_hh.detach(), w_hr=None, reverse=reverse)
    if what == "growing":
        args["batch_sizes"] = torch.tensor([2, 3, 1])
    elif what == "sum":
        args["batch_sizes"] = torch.tensor([3, 2, 2])
    elif what == "h0 rows":
        args["h0"] = args["h0"][:2]
    elif what == "dtype":
        args["w_ih"] = args["w_ih"].float()
    elif what == "w_hh rows":
        args["w_hh"] = args["w_hh"][:-1]
    elif what == "one bias":
        args["b_hh"] = None
    elif what == "no steps":
        args["batch_sizes"] = torch.tensor([], dtype=torch.int64)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.rnnkit.lstm(**args)


@needs_extension
def test_auto_and_fused_pick_the_operators_for_torch_nn_families_and_generated_or_numba_for_the_rest():
    x = torch.randn(3, INPUT)
    layer = rnnkit.LSTM(INPUT, HIDDEN)
    weights = layer.layer_weights(0, 0)
    for backend in ("ops", "auto", "fused"):
        assert kernels.select(backend, LSTM_EQUATIONS, x, weights).name == "ops"
    assert kernels.select("numba", LSTM_EQUATIONS, x, weights).name == "numba"
    gru_reset_before = CellWeights(torch.randn(3 * HIDDEN, INPUT), torch.randn(3 * HIDDEN, HIDDEN))
    # (the generated kernel for every other rnnkit cell: GeneratedKernel.auto_cells)
    assert kernels.select("auto", GRU_RESET_BEFORE, x, gru_reset_before).name == "generated"
    assert kernels.select("auto", LAYERNORM_LSTM, x, LayerNormLSTMCell(INPUT, HIDDEN).cell_weights()).name == \
        "generated"
    with pytest.raises(UnsupportedBackendError, match="generated from their equations"):  # (no numba kernel)
        kernels.select("numba", LAYERNORM_LSTM, x, LayerNormLSTMCell(INPUT, HIDDEN).cell_weights())


def test_without_the_extension_auto_runs_the_numba_kernels(extension_missing):
    """torch.nn's families on the numba kernels; rnnkit's other cells on the reference loop (their fused
    kernels are generated, and the generated loop is part of rnnkit._C)."""
    x = torch.randn(3, INPUT)
    weights = rnnkit.LSTM(INPUT, HIDDEN).layer_weights(0, 0)
    assert kernels.select("auto", LSTM_EQUATIONS, x, weights).name == "numba"
    gru_reset_before = CellWeights(torch.randn(3 * HIDDEN, INPUT), torch.randn(3 * HIDDEN, HIDDEN))
    assert kernels.select("auto", GRU_RESET_BEFORE, x, gru_reset_before).name == "reference"


@pytest.mark.parametrize("what", ["complex64", "meta device", "mixed dtypes", "other cell", "autocast"])
def test_check_names_what_it_does_not_run(what):
    dtype = torch.complex64 if what == "complex64" else torch.float32
    device = "meta" if what == "meta device" else "cpu"
    x = torch.randn(4, INPUT, dtype=dtype, device=device)
    w = CellWeights(torch.randn(HIDDEN, INPUT, dtype=dtype, device=device),
                    torch.randn(HIDDEN, HIDDEN, dtype=torch.float64 if what == "mixed dtypes" else dtype,
                                device=device))
    eq = rnnkit.cells.LayerNormLSTMCell(INPUT, HIDDEN).equations if what == "other cell" else ELMAN_TANH
    expected = {"complex64": "complex64", "meta device": "meta", "mixed dtypes": "float64",
                "other cell": "layernorm_lstm", "autocast": "autocast"}[what]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=what == "autocast"):
        with pytest.raises(UnsupportedBackendError, match=expected):
            kernels.select("ops", eq, x, w)


def test_missing_extension_is_refused_with_how_to_build(extension_missing):
    layer = rnnkit.GRU(INPUT, HIDDEN, backend="ops")  # the name is known: only running it needs the extension
    with pytest.raises(UnsupportedBackendError, match=r"rnnkit\._C.*No module named.*--no-build-isolation"):
        layer(torch.randn(STEPS, BATCH, INPUT))
    assert not extension.available()
    out, _ = rnnkit.GRU(INPUT, HIDDEN)(torch.randn(STEPS, BATCH, INPUT))  # the default backend runs on
    assert out.shape == (STEPS, BATCH, HIDDEN)


@needs_extension
@pytest.mark.parametrize("cls", [rnnkit.LSTM, rnnkit.GRU, rnnkit.RNN])
def test_a_training_call_after_an_inference_mode_call_works(cls):
    """Evaluation under torch.inference_mode(), then training, as torch.nn's layers allow: nothing the
    first call cached (the layout's tensor) may be an inference tensor that the second one saves."""
    torch.manual_seed(0)
    layer = cls(INPUT, HIDDEN, num_layers=2, backend="ops")
    x = torch.randn(5, 3, INPUT)
    with torch.inference_mode():
        expected = layer(x)[0]
    out = layer(x.requires_grad_())[0]
    out.sum().backward()
    assert torch.equal(out.detach(), expected) and x.grad is not None
