"""Issue 18, step 1 (rnnkit/kernels/generator/trace.py): a cell's step traced and split into constants,
the hoisted input part and the recurrent step.  The split plan, executed in torch ops, computes the
cell's own recurrence: for every rnnkit cell (against the reference loop) and for users' cells (against
their own forward in a Python loop), packed, both directions, float64."""
import pytest
import torch
from torch import nn

import rnnkit.cells
from rnnkit.errors import UnsupportedBackendError
from rnnkit.kernels import REFERENCE
from rnnkit.kernels.generator import trace_cell
from rnnkit.bench.user_cells import USER_CELLS

BATCH_SIZES = [3, 3, 2, 1]


def _vary(cell):
    torch.manual_seed(0)
    for p in cell.parameters():  # layer norm's gains and shifts start at 1 and 0: vary them
        p.data.add_(0.1 * torch.randn_like(p))
    return cell


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", sorted(rnnkit.cells.CELLS))
def test_the_plan_of_each_rnnkit_cell_computes_its_recurrence(name, reverse):
    cell = _vary(rnnkit.cells.CELLS[name](3, 4, dtype=torch.float64))
    plan, params = trace_cell(cell, torch.float64)
    x = torch.randn(sum(BATCH_SIZES), 3, dtype=torch.float64)
    state0 = tuple(torch.randn(3, 4, dtype=torch.float64) for _ in range(plan.num_states))
    out, final = plan.run(x, BATCH_SIZES, state0, params, reverse)
    want, want_final = REFERENCE.layer(cell.equations, x, BATCH_SIZES, state0, cell.cell_weights(), reverse)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    for a, b in zip(final, want_final):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the recurrent products: one per cell with a recurrent weight matrix (IndRNN's is a vector)
    expected_products = 0 if name in ("IndRNNCell", "MinGRUCell", "MinLSTMCell") else 1
    assert len(plan.products) == expected_products


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", sorted(USER_CELLS))
def test_the_plan_of_a_users_cell_computes_its_recurrence(name, reverse):
    cls, products = USER_CELLS[name]
    cell = _vary(cls(3, 4).double())
    plan, params = trace_cell(cell, torch.float64)
    assert len(plan.products) == products
    x = torch.randn(sum(BATCH_SIZES), 3, dtype=torch.float64)
    state0 = tuple(torch.randn(3, 4, dtype=torch.float64) for _ in range(plan.num_states))
    out, final = plan.run(x, BATCH_SIZES, state0, params, reverse)
    # the cell's own forward, step by step over the packed rows
    offsets = [0, 3, 6, 8, 9]
    state, outputs = state0, [None] * len(BATCH_SIZES)
    with torch.no_grad():
        for t in (reversed(range(4)) if reverse else range(4)):
            b = BATCH_SIZES[t]
            rows = tuple(s[:b] for s in state)
            new = cell(x[offsets[t]:offsets[t + 1]], rows[0] if len(rows) == 1 else rows)
            new = (new,) if isinstance(new, torch.Tensor) else tuple(new)
            outputs[t] = new[0]
            state = tuple(torch.cat([n, s[b:]]) for n, s in zip(new, state))
    torch.testing.assert_close(out, torch.cat(outputs), rtol=1e-12, atol=1e-12)
    for a, b in zip(final, state):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


class BatchMixingCell(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.linear = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h):
        h = x.new_zeros(x.size(0), self.hidden_size) if h is None else h
        h = torch.tanh(self.linear(torch.cat([x, h], 1)))
        return h - h.mean(0, keepdim=True)  # mixes the batch's rows: not a per-sequence recurrence


def test_a_step_that_mixes_rows_is_refused_naming_the_op():
    with pytest.raises(UnsupportedBackendError, match="mean"):
        trace_cell(BatchMixingCell(3, 4))


class InPlaceStateCell(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.linear = nn.Linear(input_size, hidden_size)

    def forward(self, x, h):
        h = x.new_zeros(x.size(0), self.hidden_size) if h is None else h
        return h.mul_(0.5).add_(torch.tanh(self.linear(x)))  # changes the caller's state tensor


def test_a_step_that_changes_its_state_in_place_is_refused():
    with pytest.raises(UnsupportedBackendError, match="in place"):
        trace_cell(InPlaceStateCell(3, 4))


class GatesInPlaceCell(nn.Module):
    """A GRU-like cell changing its gates in place, in one of three ways (``how``)."""

    how = "view"

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.x2h = nn.Linear(input_size, 2 * hidden_size)
        self.h2h = nn.Linear(hidden_size, 2 * hidden_size, bias=False)

    def forward(self, x, h):
        H = self.hidden_size
        h = x.new_zeros(x.size(0), H) if h is None else h
        g = self.x2h(x) + self.h2h(h)
        if self.how == "view":  # a view changed, its base read after: g's first half is the sigmoid's
            g[:, :H].sigmoid_()
            z, n = g.chunk(2, 1)
        elif self.how == "base":  # the base changed, views taken before read after: they see the change
            z, n = g[:, :H], g[:, H:]
            g.mul_(0.5)
            z = z.sigmoid()
        elif self.how == "then views":  # the whole value changed before any view of it is taken
            g.sigmoid_()
            z, n = g.chunk(2, 1)
        else:  # "own": in place on values nothing else shares (rewritten out of place, as before)
            z, n = g.chunk(2, 1)
            z = z.sigmoid()
            n = n * 0.5
            n.add_(0.1)
        out = z * h
        out += (1 - z) * torch.tanh(n)
        return out


@pytest.mark.parametrize("how", ["view", "base", "then views", "own"])
def test_in_place_changes_that_other_values_see_are_refused_and_the_rest_generate(how):
    # A change in place through shared memory (a view, or a tensor with views) would be read by the
    # other values as it was before (the recording rewrites in-place ops out of place): refused, so
    # backend="auto" runs the reference loop; in place on values nothing shares is rewritten and runs
    # generated.  Either way the layer equals the reference loop, outputs and gradients.
    cell = type("Cell", (GatesInPlaceCell,), {"how": how})
    if how in ("then views", "own"):
        trace_cell(cell(3, 4))
    else:
        with pytest.raises(UnsupportedBackendError, match="in place .* shares"):
            trace_cell(cell(3, 4))
        with pytest.raises(UnsupportedBackendError, match="in place"):
            rnnkit.Recurrent(cell, 3, 4, backend="generated")(torch.randn(5, 2, 3))
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, 3, 4).double()
    reference = rnnkit.Recurrent(cell, 3, 4, backend="reference").double()
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    ours, theirs = layer(x)[0], reference(x)[0]
    torch.testing.assert_close(ours, theirs)
    for a, b in zip(torch.autograd.grad(ours.sum(), [x, *layer.parameters()]),
                    torch.autograd.grad(theirs.sum(), [x, *reference.parameters()])):
        torch.testing.assert_close(a, b)
