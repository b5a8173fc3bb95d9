"""The "scan" backend (rnnkit/kernels/parallel_scan.py): the min cells' whole sequence as one parallel
scan in log space, equal to their step-by-step form (the reference loop over the cell's own step)."""
import copy

import pytest
import torch
from torch.autograd import gradcheck
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from cell_cases import make_cell
from helpers import (_Apply, assert_within_rounding, float64_truth_of, outputs_and_grads, reference_copy,
                     rounding_sensitivity)
from rnnkit import kernels
from rnnkit.cells import MIN_GRU, MIN_LSTM, MinGRUCell, MinLSTMCell
from rnnkit.kernels.ops import extension
from rnnkit.kernels.parallel_scan import ParallelScanKernel, log_space_scan
from rnnkit.recurrent import Recurrent

SCAN = ParallelScanKernel()
REFERENCE = kernels.REFERENCE
MIN_CELLS = ["min_gru", "min_lstm", "min_lstm_nobias"]
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-12, rtol=1e-12)}
LAYOUTS = {  # name: batch_sizes (packed layout, longest first; padded is a constant batch)
    "padded": [4] * 7,
    "packed": [4, 4, 3, 3, 3, 1, 1],
    "one_step": [3],
}


def run_both(cell, x, batch_sizes, h0, reverse):
    eq, w = cell.equations, cell.cell_weights()
    return (SCAN.layer(eq, x, batch_sizes, (h0,), w, reverse),
            REFERENCE.layer(eq, x, batch_sizes, (h0,), w, reverse))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", MIN_CELLS)
def test_scan_equals_step_by_step_values_and_gradients(name, layout, reverse, dtype):
    cell = make_cell(name, dtype=dtype)
    bs = LAYOUTS[layout]
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(sum(bs), 4, dtype=dtype, generator=gen, requires_grad=True)
    h0 = torch.randn(bs[0], 5, dtype=dtype, generator=gen, requires_grad=True)  # any sign: a given initial state
    (out, (h,)), (ref_out, (ref_h,)) = run_both(cell, x, bs, h0, reverse)
    assert out.shape == ref_out.shape == (sum(bs), 5) and h.shape == (bs[0], 5)
    # outputs, final states and the gradients of a fixed random weighting of them w.r.t. x, h0, parameters
    results = {name: outputs_and_grads(lambda c, x, h0: kernel.layer(c.equations, x, bs, (h0,), c.cell_weights(),
                                                                      reverse), cell, [x, h0])
               for name, kernel in (("scan", SCAN), ("step by step", REFERENCE))}
    if dtype == torch.float64:  # two float64 computations agree to ~1e-15 of these magnitudes
        for k, (a, b) in enumerate(zip(results["scan"], results["step by step"])):
            tol = TOL[dtype] if k < 2 else dict(atol=TOL[dtype]["atol"] * 20, rtol=TOL[dtype]["rtol"] * 20)
            torch.testing.assert_close(a, b, **tol)
        return
    # float32: both within float32's rounding of the step-by-step form in float64 (helpers: a bound derived
    # from the computation's sensitivity to rounding, not fitted to one machine's rounding)
    truth, sensitivities = float64_truth_of(
        lambda c, x, h0: REFERENCE.layer(c.equations, x, bs, (h0,), c.cell_weights(), reverse), cell, [x, h0])
    for name, got in results.items():
        assert_within_rounding(got, truth, sensitivities, dtype, who=name)


@pytest.mark.parametrize("name", ["min_gru", "min_lstm"])
def test_gradcheck_scan_packed_reverse_with_initial_state(name):
    cell = make_cell(name, input_size=3, hidden_size=2, dtype=torch.float64)
    bs = [3, 2, 2, 1]
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(sum(bs), 3, dtype=torch.float64, generator=gen, requires_grad=True)
    h0 = torch.randn(3, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    for reverse in (False, True):
        def f(x, h0, *params):
            weights = type(cell.cell_weights())(*params)
            out, (h,) = SCAN.layer(cell.equations, x, bs, (h0,), weights, reverse)
            return out, h
        assert gradcheck(f, (x, h0, *cell.parameters()))


# float64 against the step-by-step form in float64: (rtol, atol) by input scale; the scan's cumulative
# sums reach ~1e6, which float64 holds to ~1e-10 (float32: the rounding bound, see the test)
TRUTH_TOL = {1.0: (1e-11, 1e-11), 1000.0: (1e-8, 1e-8)}
SCALES = (1.0, 1000.0)


def _long_data(dtype, T, B):
    """The inputs at each scale (x (T * B, 3), h0 (B, 4)), drawn in float64 and rounded to ``dtype``."""
    gen = torch.Generator().manual_seed(8)
    data = []
    for scale in SCALES:
        x = (scale * torch.randn(T * B, 3, generator=gen, dtype=torch.float64)).to(dtype)
        data.append((x, torch.rand(B, 4, generator=gen, dtype=torch.float64).to(dtype)))
    return data


def _long_truth(cell, data, T, B, replicas=4):
    """(truth, sensitivities) of [out, h] at each scale: the step-by-step form in float64 and its
    sensitivity to float32 rounding (helpers.rounding_sensitivity).  At T = 4096 a sample of that
    noise costs ~2 s (a Python dispatch per op, 4096 steps); the rows of a batch are independent, so one
    noisy run holds both scales and ``replicas`` copies of every row, each rounded by its own noise (the
    parameters' and the data's own noise one draw for all copies): ``replicas`` samples for one's price."""
    cell64 = reference_copy(cell)
    names = [f"module.{n}" for n, _ in cell64.named_parameters()]
    S = len(data)  # rows: (scale, copy, b)

    def step_by_step(module, x, h0):
        return REFERENCE.layer(module.equations, x, [S * replicas * B] * T, (h0,), module.cell_weights(), False)

    def results_of(moved):
        params, inputs = moved[:len(names)], moved[len(names):]
        x = torch.stack([x.view(T, B, 3) for x in inputs[0::2]], 1)  # (T, S, B, 3)
        x = x[:, :, None].expand(T, S, replicas, B, 3).reshape(T * S * replicas * B, 3)
        h0 = torch.stack(inputs[1::2])[:, None].expand(S, replicas, B, 4).reshape(S * replicas * B, 4)
        with torch.no_grad():
            out, (h,) = torch.func.functional_call(_Apply(step_by_step, cell64), dict(zip(names, params)), (x, h0))
        out, h = out.view(T, S, replicas * B, 4), h.view(S, replicas * B, 4)
        return [t for k in range(S) for t in (out[:, k], h[k])]

    data = [p.detach() for p in cell64.parameters()] + [t.double() for pair in data for t in pair]
    truth, sensitivities = rounding_sensitivity(results_of, data, samples=1)
    # every copy of the truth is the same: the first
    truth = [t[:, :B].reshape(T * B, 4) if k % 2 == 0 else t[:B] for k, t in enumerate(truth)]
    return truth, sensitivities


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["min_gru", "min_lstm"])
def test_long_sequences_stay_finite_and_accurate(name, dtype):
    """T = 4096, plain and very large inputs: the scan stays finite (values and gradients), and it and the
    step-by-step form in the same dtype are as close to the float64 step-by-step form as rounding allows."""
    T, B = 4096, 2
    cell = make_cell(name, input_size=3, hidden_size=4, dtype=dtype)
    cell64 = copy.deepcopy(cell).double()
    data = _long_data(dtype, T, B)
    bs = [B] * T
    if dtype == torch.float32:
        # float32: within float32's rounding of the float64 form (helpers: a bound derived from the
        # computation's sensitivity to rounding: at scale 1000 the input projection's rounding alone moves
        # the results by ~1e-4 relative, at scale 1 by ~1e-7; not fitted to one machine's rounding)
        truth, sensitivities = _long_truth(cell, data, T, B)
    for k, (x, h0) in enumerate(data):
        with torch.no_grad():
            steps, (steps_h,) = REFERENCE.layer(cell.equations, x, bs, (h0,), cell.cell_weights(), False)
        xg = x.clone().requires_grad_()
        out, (h,) = SCAN.layer(cell.equations, xg, bs, (h0,), cell.cell_weights(), False)
        assert torch.isfinite(out).all() and torch.isfinite(h).all()
        if dtype == torch.float32:
            for who, got in (("scan", [out, h]), ("step by step", [steps, steps_h])):
                assert_within_rounding([t.detach() for t in got], truth[2 * k:2 * k + 2],
                                       sensitivities[2 * k:2 * k + 2], dtype, who=who)
        else:
            with torch.no_grad():
                exact, (exact_h,) = REFERENCE.layer(cell64.equations, x, bs, (h0,), cell64.cell_weights(), False)
            rtol, atol = TRUTH_TOL[SCALES[k]]
            for got, want in ((out, steps), (h, steps_h), (out, exact), (steps, exact), (h, exact_h)):
                torch.testing.assert_close(got.detach(), want, rtol=rtol, atol=atol)
        (out.sum() + h.sum()).backward()
        assert torch.isfinite(xg.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in cell.parameters())
        cell.zero_grad()


def test_scan_in_the_input_dtype_is_the_paper_formulation_and_stays_finite():
    """accumulate_dtype=None: cumsum and logcumsumexp in float32, as the paper's code; finite at T = 4096,
    and within float32's rounding of this formulation: the cumulative sums of log a reach ~-1e3, whose
    rounding to float32 moves h by ~1e-4 relative (the error grows with T).  Its bound is the spread of the
    same scan in float64 under float32 rounding (helpers.rounding_sensitivity: every op of the scan, the
    cumulative sums' outputs too, rounded at random; a few ops over the whole sequence, so cheap); the
    float64-accumulated scan is within it as well."""
    cell = make_cell("min_gru", input_size=3, hidden_size=4)
    x = torch.randn(4096 * 2, 3, generator=torch.Generator().manual_seed(9))
    bs = [2] * 4096
    h0 = torch.zeros(2, 4)
    with torch.no_grad():
        plain, _ = ParallelScanKernel(accumulate_dtype=None).layer(cell.equations, x, bs, (h0,), cell.cell_weights(), False)
        precise, _ = SCAN.layer(cell.equations, x, bs, (h0,), cell.cell_weights(), False)
    assert plain.dtype == precise.dtype == torch.float32
    assert torch.isfinite(plain).all()
    truth, sensitivities = float64_truth_of(
        lambda c, x, h0: ParallelScanKernel(accumulate_dtype=None).layer(c.equations, x, bs, (h0,), c.cell_weights(),
                                                                         False)[0], cell, [x, h0], grad=False)
    assert_within_rounding([plain], truth, sensitivities, torch.float32, who="scan accumulated in float32")
    assert_within_rounding([precise], truth, sensitivities, torch.float32, who="scan accumulated in float64")


def test_log_space_scan_is_the_linear_recurrence():
    gen = torch.Generator().manual_seed(10)
    a = torch.rand(50, 3, 2, dtype=torch.float64, generator=gen) * 0.98 + 0.01
    b = torch.rand(50, 3, 2, dtype=torch.float64, generator=gen) * 3 + 1e-3
    h0 = torch.randn(3, 2, dtype=torch.float64, generator=gen) * 5  # negative entries too: kept out of the log
    h, expected = h0, []
    for t in range(50):
        h = a[t] * h + b[t]
        expected.append(h)
    torch.testing.assert_close(log_space_scan(a.log(), b.log(), h0), torch.stack(expected), atol=1e-12, rtol=1e-12)


def test_check_rejects_every_other_recurrence():
    x = torch.randn(3, 4)
    for cell in (rnnkit.LSTMCell(4, 5), rnnkit.GRUCell(4, 5), rnnkit.RNNCell(4, 5),
                 rnnkit.cells.LayerNormLSTMCell(4, 5), rnnkit.cells.IndRNNCell(4, 5),
                 rnnkit.cells.GRUCell(4, 5, reset_after=False), rnnkit.cells.PeepholeLSTMCell(4, 5)):
        with pytest.raises(rnnkit.UnsupportedBackendError, match=f"backend 'scan'.*{cell.equations.name}"):
            SCAN.check(cell.equations, x, cell.cell_weights())
    for cell in (MinGRUCell(4, 5), MinLSTMCell(4, 5, dtype=torch.float64)):
        SCAN.check(cell.equations, x.to(cell.weight_ih.dtype), cell.cell_weights())
    with pytest.raises(rnnkit.UnsupportedBackendError, match="floating-point"):
        SCAN.check(MIN_GRU, torch.ones(3, 4, dtype=torch.long), MinGRUCell(4, 5).cell_weights())
    assert SCAN.name == "scan" and isinstance(SCAN, kernels.Kernel)


def test_auto_picks_the_sequential_kernel_on_the_cpu_and_the_scan_where_it_cannot_run(scan_backend):
    """On the CPU the fused sequential loop generated from the cells' equations is the faster form (no log,
    exp and log-sum-exp per element: GeneratedKernel.auto_cells); the scan runs what it cannot, e.g. float16,
    CUDA tensors, or anything where rnnkit._C (which holds the generated loop) is not built."""
    x = torch.randn(3, 4)
    expected = "generated" if extension.available() else "scan"
    assert kernels.select("auto", MIN_GRU, x, MinGRUCell(4, 5).cell_weights()).name == expected
    assert kernels.select("auto", MIN_LSTM, x, MinLSTMCell(4, 5).cell_weights()).name == expected
    half = MinGRUCell(4, 5).half()
    assert kernels.select("auto", MIN_GRU, x.half(), half.cell_weights()) is scan_backend
    lstm = rnnkit.cells.LayerNormLSTMCell(4, 5)
    assert kernels.select("auto", lstm.equations, x, lstm.cell_weights()) is not scan_backend
    assert kernels.select("scan", MIN_GRU, x, MinGRUCell(4, 5).cell_weights()) is scan_backend


@pytest.mark.parametrize("name", MIN_CELLS)
def test_recurrent_on_the_scan_equals_the_reference_loop(name, scan_backend, monkeypatch):
    """Layers, directions, lengths, packed input, a given h_0: backend 'scan' (and 'fused', the sequential
    kernel 'auto' picks on the CPU) against backend 'reference', outputs, final states and gradients."""
    from cell_cases import CASES
    cls, kwargs, _, _ = CASES[name]
    calls = []
    original = scan_backend.layer
    monkeypatch.setattr(scan_backend, "layer", lambda *a: calls.append(1) or original(*a))
    torch.manual_seed(0)
    layers = {b: Recurrent(cls, 4, 5, 2, bidirectional=True, batch_first=True, backend=b, **kwargs)
              for b in ("scan", "fused", "reference")}
    for b in ("scan", "fused"):
        layers[b].load_state_dict(layers["reference"].state_dict())
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(3, 6, 4, generator=gen)
    h0 = torch.randn(4, 3, 5, generator=gen)
    lengths = [4, 6, 2]
    x.requires_grad_()

    def both_calls(layer, x, h0):  # outputs and final states of a padded call with lengths and a packed one
        out, h_n = layer(x, h0, lengths=lengths)
        packed_out, packed_h = layer(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        return out, h_n, packed_out.data, packed_h

    # those, and the gradients of a fixed random weighting of them w.r.t. x and every parameter
    results = {b: outputs_and_grads(both_calls, layer, [x, h0]) for b, layer in layers.items()}
    assert len(calls) == 2 * 4  # the scan layer: two calls, four layer-directions per call
    # each within float32's rounding of the float64 truth (helpers: a bound derived from the computation's
    # sensitivity to rounding, not fitted to one machine's rounding)
    truth, sensitivities = float64_truth_of(both_calls, layers["reference"], [x, h0])
    for b, got in results.items():
        assert_within_rounding(got, truth, sensitivities, torch.float32, who=b)


def test_named_scan_backend_rejects_other_cells(scan_backend):
    with pytest.raises(rnnkit.UnsupportedBackendError, match="backend 'scan'"):
        Recurrent(rnnkit.cells.PeepholeLSTMCell, 4, 5, backend="scan")(torch.randn(3, 2, 4))
