"""The "scan" backend (rnnkit/kernels/parallel_scan.py): the min cells' whole sequence as one parallel
scan in log space, equal to their step-by-step form (the reference loop over the cell's own step)."""
import copy

import pytest
import torch
from torch.autograd import gradcheck
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from cell_cases import make_cell
from rnnkit import kernels
from rnnkit.cells import MIN_GRU, MIN_LSTM, MinGRUCell, MinLSTMCell
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
    torch.testing.assert_close(out, ref_out, **TOL[dtype])
    torch.testing.assert_close(h, ref_h, **TOL[dtype])
    # gradients with respect to everything, through a weighting of every output and final state
    wo, wh = torch.randn(out.shape, dtype=dtype, generator=gen), torch.randn(h.shape, dtype=dtype, generator=gen)
    leaves = [x, h0] + list(cell.parameters())
    grads = torch.autograd.grad((out * wo).sum() + (h * wh).sum(), leaves)
    ref_grads = torch.autograd.grad((ref_out * wo).sum() + (ref_h * wh).sum(), leaves)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=TOL[dtype]["atol"] * 20, rtol=TOL[dtype]["rtol"] * 20)


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


# against the step-by-step form in float64: (rtol, atol) by dtype and input scale.  At scale 1000 the
# float32 input projection itself (shared by both forms) is off by ~1e-4 relative; the scan's
# cumulative sums reach ~1e6, which float64 accumulation holds to ~1e-10.
TRUTH_TOL = {(torch.float32, 1.0): (1e-5, 1e-5), (torch.float32, 1000.0): (1e-3, 1e-3),
             (torch.float64, 1.0): (1e-11, 1e-11), (torch.float64, 1000.0): (1e-8, 1e-8)}
# scan against the step-by-step form in the same dtype
SAME_TOL = {(torch.float32, 1.0): (1e-5, 1e-5), (torch.float32, 1000.0): (1e-5, 1e-5),
            (torch.float64, 1.0): (1e-11, 1e-11), (torch.float64, 1000.0): (1e-8, 1e-8)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["min_gru", "min_lstm"])
def test_long_sequences_stay_finite_and_accurate(name, dtype):
    """T = 4096, plain and very large inputs: the scan stays finite (values and gradients), equals the
    step-by-step form in the same dtype, and both are as close to the float64 step-by-step form."""
    T, B = 4096, 2
    cell = make_cell(name, input_size=3, hidden_size=4, dtype=dtype)
    cell64 = copy.deepcopy(cell).double()
    gen = torch.Generator().manual_seed(8)
    for scale in (1.0, 1000.0):
        x = (scale * torch.randn(T * B, 3, generator=gen, dtype=torch.float64)).to(dtype)
        h0 = torch.rand(B, 4, generator=gen, dtype=torch.float64).to(dtype)
        bs = [B] * T
        with torch.no_grad():
            truth, (truth_h,) = REFERENCE.layer(cell64.equations, x.double(), bs, (h0.double(),),
                                                cell64.cell_weights(), False)
            steps, (steps_h,) = REFERENCE.layer(cell.equations, x, bs, (h0,), cell.cell_weights(), False)
        xg = x.clone().requires_grad_()
        out, (h,) = SCAN.layer(cell.equations, xg, bs, (h0,), cell.cell_weights(), False)
        assert torch.isfinite(out).all() and torch.isfinite(h).all()
        rtol, atol = SAME_TOL[dtype, scale]
        torch.testing.assert_close(out, steps, rtol=rtol, atol=atol)
        torch.testing.assert_close(h, steps_h, rtol=rtol, atol=atol)
        rtol, atol = TRUTH_TOL[dtype, scale]
        torch.testing.assert_close(out.double(), truth, rtol=rtol, atol=atol)
        torch.testing.assert_close(steps.double(), truth, rtol=rtol, atol=atol)
        torch.testing.assert_close(h.double(), truth_h, rtol=rtol, atol=atol)
        (out.sum() + h.sum()).backward()
        assert torch.isfinite(xg.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in cell.parameters())
        cell.zero_grad()


def test_scan_in_the_input_dtype_is_the_paper_formulation_and_stays_finite():
    """accumulate_dtype=None: cumsum and logcumsumexp in float32, as the paper's code; finite at T = 4096,
    close to the float64-accumulated scan (its relative error grows with T)."""
    cell = make_cell("min_gru", input_size=3, hidden_size=4)
    x = torch.randn(4096 * 2, 3, generator=torch.Generator().manual_seed(9))
    bs = [2] * 4096
    h0 = torch.zeros(2, 4)
    with torch.no_grad():
        plain, _ = ParallelScanKernel(accumulate_dtype=None).layer(cell.equations, x, bs, (h0,), cell.cell_weights(), False)
        precise, _ = SCAN.layer(cell.equations, x, bs, (h0,), cell.cell_weights(), False)
    assert plain.dtype == precise.dtype == torch.float32
    assert torch.isfinite(plain).all()
    torch.testing.assert_close(plain, precise, atol=1e-2, rtol=1e-2)


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
    """On the CPU the fused sequential loop (rnnkit/kernels/cpu/min_cells.py) is the faster form (no log,
    exp and log-sum-exp per element); the scan runs what it cannot, e.g. float16 or CUDA tensors."""
    x = torch.randn(3, 4)
    assert kernels.select("auto", MIN_GRU, x, MinGRUCell(4, 5).cell_weights()).name == "fused"
    assert kernels.select("auto", MIN_LSTM, x, MinLSTMCell(4, 5).cell_weights()).name == "fused"
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
    results = {}
    for b, layer in layers.items():
        xs = x.clone().requires_grad_()
        out, h_n = layer(xs, h0, lengths=lengths)
        packed_out, packed_h = layer(pack_padded_sequence(xs, lengths, batch_first=True, enforce_sorted=False))
        loss = (out * out.detach().cos()).sum() + h_n.sum() + packed_out.data.sum() + packed_h.pow(2).sum()
        grads = torch.autograd.grad(loss, [xs] + list(layer.parameters()))
        results[b] = [out, h_n, packed_out.data, packed_h] + list(grads)
    assert len(calls) == 2 * 4  # the scan layer: two calls, four layer-directions per call
    for b in ("scan", "fused"):
        for got, want in zip(results[b], results["reference"]):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_named_scan_backend_rejects_other_cells(scan_backend):
    with pytest.raises(rnnkit.UnsupportedBackendError, match="backend 'scan'"):
        Recurrent(rnnkit.cells.PeepholeLSTMCell, 4, 5, backend="scan")(torch.randn(3, 2, 4))
