"""What is particular to minGRU and minLSTM: the activation g and its log, the parameters (input
projection only), and a step form that stays defined where the paper's literal formula is not."""
import pytest
import torch

from cell_cases import paper_g, ref_min_lstm
from rnnkit.cells import MIN_GRU, MIN_LSTM, MinGRUCell, MinLSTMCell
from rnnkit.cells._log_space import g, log_g
from rnnkit.cells.min_gru import min_gru_log_terms
from rnnkit.cells.min_lstm import min_lstm_log_terms


def test_g_and_log_g():
    v = torch.linspace(-30, 30, 601, dtype=torch.float64)
    torch.testing.assert_close(g(v), paper_g(v))
    assert (g(v) > 0).all()
    torch.testing.assert_close(log_g(v), paper_g(v).log(), atol=1e-12, rtol=0)
    far = torch.tensor([-200.0, -1e4])  # g underflows to 0 in float32; log g does not
    assert (g(far) == 0).all() and torch.isfinite(log_g(far)).all()
    # log g(v) = log sigmoid(v) = v - log(1 + e^v), within e^-200 of v: v itself is the float32 result
    torch.testing.assert_close(log_g(far), far, atol=1e-6, rtol=0)
    x = torch.tensor([-0.5, 0.0, 0.5], dtype=torch.float64, requires_grad=True)
    log_g(x).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("cls,eq,rows,gates", [(MinGRUCell, MIN_GRU, 2, ("z", "h_tilde")),
                                               (MinLSTMCell, MIN_LSTM, 3, ("f", "i", "h_tilde"))])
def test_parameters_are_the_input_projection_only(cls, eq, rows, gates):
    cell = cls(4, 5)
    assert cell.equations is eq and eq.gates == gates and eq.state_names == ("h",)
    assert [(n, tuple(p.shape)) for n, p in cell.named_parameters()] == [
        ("weight_ih", (rows * 5, 4)), ("bias_ih", (rows * 5,))]
    assert [n for n, _ in cls(4, 5, bias=False).named_parameters()] == ["weight_ih"]
    assert all(p.abs().max() <= 1 / 5 ** 0.5 for p in cell.parameters())
    assert repr(cell) == f"{cls.__name__}(4, 5)"


@pytest.mark.parametrize("log_terms,rows", [(min_gru_log_terms, 2), (min_lstm_log_terms, 3)])
def test_log_terms_are_the_logs_of_the_step_coefficients(log_terms, rows):
    """h_t = a_t h_{t-1} + b_t: the step applied to h = 0 gives b_t, and to h = 1 gives a_t + b_t."""
    cell = (MinGRUCell if rows == 2 else MinLSTMCell)(4, 5, dtype=torch.float64)
    gx = 3 * torch.randn(6, rows * 5, dtype=torch.float64)
    log_a, log_b = log_terms(gx)
    (b,) = cell.equations.recur(gx, (torch.zeros(6, 5, dtype=torch.float64),), cell.cell_weights())
    (ab,) = cell.equations.recur(gx, (torch.ones(6, 5, dtype=torch.float64),), cell.cell_weights())
    torch.testing.assert_close(log_b.exp(), b, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(log_a.exp(), ab - b, atol=1e-12, rtol=1e-9)
    assert (log_a < 0).all()


def test_min_lstm_step_stays_defined_where_both_gates_underflow():
    cell = MinLSTMCell(1, 2)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[1.0], [1.0], [3.0], [1.0], [0.0], [0.0]]))
        cell.bias_ih.zero_()
    x, h = torch.tensor([[-200.0]]), torch.tensor([[1.0, 2.0]])
    paper = ref_min_lstm(cell, x, (h,))[0]
    assert torch.isnan(paper).all()  # f / (f + i) with f = i = 0 in float32: the literal formula fails here
    out = cell(x, h)
    assert torch.isfinite(out).all()
    # unit 0: i / f = e^{-400}, so h is kept; unit 1: f = i, so f' = i' = 1/2 (both exact but for a few
    # roundings of values below 2: < 1e-6, far inside assert_close's 1e-5)
    torch.testing.assert_close(out[0, 0], h[0, 0])
    torch.testing.assert_close(out[0, 1], 0.5 * h[0, 1] + 0.5 * g(torch.tensor(0.0)))


def test_min_gru_streaming_with_large_inputs_is_finite_and_keeps_one_minus_z():
    """z_t rounds to 1 in float32 for k_z > 17; 1 - z_t is computed as sigmoid(-k_z), not 1 - z_t."""
    cell = MinGRUCell(1, 1)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[1.0], [0.0]]))
        cell.bias_ih.zero_()
    h = cell(torch.tensor([[20.0]]), torch.tensor([[1e6]]))
    expected = torch.sigmoid(torch.tensor(-20.0, dtype=torch.float64)) * 1e6 + 0.5
    # float32 against the exact value: the projection is exact (20 * 1 + 0), then sigmoid(-20) (a few ulps),
    # a product, sigmoid(20) * g(0) and a sum: relative error <= ~3 u = 1.8e-7 of h (the 1e6 term is 0.4%
    # of h), 5x inside 1e-6; with 1 - z computed as 1 - sigmoid(20) (= 0 in float32) it is off by 4e-3
    torch.testing.assert_close(h[0, 0].double(), expected, rtol=1e-6, atol=0)
