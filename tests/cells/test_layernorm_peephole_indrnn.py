"""What is particular to the layer-norm, peephole and IndRNN cells: initialisation, where each piece of
the math lives, the IndRNN clip."""
import pytest
import torch

from cell_cases import make_cell, ref_indrnn
from rnnkit.cells import (INDRNN_RELU, INDRNN_TANH, LAYERNORM_GRU, LAYERNORM_LSTM, PEEPHOLE_LSTM, GRUCell, IndRNNCell,
                          LayerNormGRUCell, LayerNormLSTMCell, LSTMCell, PeepholeLSTMCell)
from rnnkit.recurrent import Recurrent


@pytest.mark.parametrize("cls,base,gains,shifts", [
    (LayerNormLSTMCell, LSTMCell, ("gamma_ih", "gamma_hh", "gamma_c"), ("beta_c",)),
    (LayerNormGRUCell, GRUCell, ("gamma_ih", "gamma_hh"), ()),
])
def test_layernorm_init_gains_one_shifts_zero_and_torch_draws(cls, base, gains, shifts):
    torch.manual_seed(0)
    cell = cls(4, 5)
    torch.manual_seed(0)
    ref = base(4, 5)
    for name, p in ref.named_parameters():  # same draws, same order as the torch.nn cell
        assert torch.equal(getattr(cell, name), p)
    bound = 1 / 5 ** 0.5
    assert all(getattr(cell, n).abs().max() <= bound for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    for name in gains:
        assert torch.equal(getattr(cell, name), torch.ones_like(getattr(cell, name)))
    for name in shifts:
        assert torch.equal(getattr(cell, name), torch.zeros_like(getattr(cell, name)))
    nobias = cls(4, 5, bias=False)
    assert nobias.bias_ih is None and nobias.bias_hh is None and getattr(nobias, "beta_c", None) is None
    assert repr(nobias) == f"{cls.__name__}(4, 5, bias=False)"


@pytest.mark.parametrize("name,eq", [("layernorm_lstm", LAYERNORM_LSTM), ("layernorm_gru", LAYERNORM_GRU)])
def test_layernorm_input_projection_is_normalised_before_the_loop(name, eq):
    """project() normalises each row of all steps at once: rows are independent of each other."""
    cell = make_cell(name, dtype=torch.float64)
    assert cell.equations is eq
    x = torch.randn(7, 4, dtype=torch.float64)
    whole = eq.project(x, cell.cell_weights())
    G = whole.size(1)
    rows = torch.cat([eq.project(x[t:t + 1], cell.cell_weights()) for t in range(7)])
    torch.testing.assert_close(whole, rows, atol=1e-12, rtol=0)
    # with unit gain and no shift, each row has mean 0 and (biased) variance 1 over all the gates together
    plain = type(cell)(4, 5, bias=False, dtype=torch.float64)
    with torch.no_grad():
        plain.weight_ih.copy_(cell.weight_ih)
    p = eq.project(x, plain.cell_weights())
    assert p.shape == (7, G)
    torch.testing.assert_close(p.mean(1), torch.zeros(7, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(p.var(1, unbiased=False), torch.ones(7, dtype=torch.float64), atol=1e-3, rtol=0)


def test_layernorm_lstm_carries_the_unnormalised_cell_state():
    cell = make_cell("layernorm_lstm", dtype=torch.float64)
    x, h, c = (torch.randn(2, n, dtype=torch.float64) for n in (4, 5, 5))
    _, c_new = cell(x, (h, c))
    a = cell.equations.project(x, cell.cell_weights())
    a = a + torch.nn.functional.layer_norm(h @ cell.weight_hh.T, (20,), cell.gamma_hh, cell.bias_hh)
    i, f, g, _ = a.chunk(4, 1)
    torch.testing.assert_close(c_new, f.sigmoid() * c + i.sigmoid() * g.tanh(), atol=1e-12, rtol=0)


def test_peephole_with_zero_peepholes_is_the_lstm_cell():
    torch.manual_seed(0)
    peep = PeepholeLSTMCell(4, 5, dtype=torch.float64)
    torch.manual_seed(0)
    lstm = LSTMCell(4, 5, dtype=torch.float64)
    assert peep.equations is PEEPHOLE_LSTM
    assert [n for n, _ in peep.named_parameters()] == ["weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                                       "weight_ci", "weight_cf", "weight_co"]
    bound = 1 / 5 ** 0.5
    assert all(p.abs().max() <= bound for p in peep.parameters())
    x, h, c = (torch.randn(3, n, dtype=torch.float64) for n in (4, 5, 5))
    assert not torch.allclose(peep(x, (h, c))[0], lstm(x, (h, c))[0])
    with torch.no_grad():
        for name in ("weight_ci", "weight_cf", "weight_co"):
            getattr(peep, name).zero_()
    for a, b in zip(peep(x, (h, c)), lstm(x, (h, c))):  # two cells' ops, in float64: ~1e-16 apart
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_peephole_gates_see_the_right_cell_state():
    """i and f read c_{t-1}, o reads c_t: with the input and recurrent weights zero and the biases
    zero, each gate is sigmoid(peephole * the state it sees)."""
    cell = PeepholeLSTMCell(2, 3, dtype=torch.float64)
    with torch.no_grad():
        for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh):
            p.zero_()
        cell.weight_ci.fill_(1.0)
        cell.weight_cf.fill_(2.0)
        cell.weight_co.fill_(3.0)
    c = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    h_new, c_new = cell(torch.zeros(1, 2, dtype=torch.float64), (torch.zeros(1, 3, dtype=torch.float64), c))
    i, f, g = torch.sigmoid(c), torch.sigmoid(2 * c), torch.tanh(torch.zeros(1))
    torch.testing.assert_close(c_new, f * c + i * g)
    torch.testing.assert_close(h_new, torch.sigmoid(3 * c_new) * torch.tanh(c_new))


def test_indrnn_parameters_repr_and_equations():
    cell = IndRNNCell(4, 5)
    assert [(n, tuple(p.shape)) for n, p in cell.named_parameters()] == [
        ("weight_ih", (5, 4)), ("weight_hh", (5,)), ("bias_ih", (5,))]
    assert cell.equations is INDRNN_RELU and IndRNNCell(4, 5, nonlinearity="tanh").equations is INDRNN_TANH
    assert repr(cell) == "IndRNNCell(4, 5)"
    assert repr(IndRNNCell(4, 5, False, "tanh", recurrent_max_abs=2)) == \
        "IndRNNCell(4, 5, bias=False, nonlinearity=tanh, recurrent_max_abs=2.0)"
    assert [n for n, _ in IndRNNCell(4, 5, bias=False).named_parameters()] == ["weight_ih", "weight_hh"]
    assert all(p.abs().max() <= 1 / 5 ** 0.5 for p in cell.parameters())


def test_indrnn_units_are_independent():
    """Each unit sees only its own past: perturbing h[:, k] changes only output k."""
    cell = make_cell("indrnn_relu", dtype=torch.float64)
    x, h = torch.randn(2, 4, dtype=torch.float64), torch.rand(2, 5, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda h: cell(x, h), h)  # (2, 5, 2, 5)
    off_diagonal = jac.clone()
    for b in range(2):
        for k in range(5):
            off_diagonal[b, k, b, k] = 0
    assert torch.count_nonzero(off_diagonal) == 0


def test_indrnn_clips_the_recurrent_weights_where_they_are_read():
    cell = IndRNNCell(3, 4, dtype=torch.float64, recurrent_max_abs=0.5)
    with torch.no_grad():
        cell.weight_hh.copy_(torch.tensor([2.0, -3.0, 0.25, -0.1], dtype=torch.float64))
    u = cell.cell_weights().w_hh
    torch.testing.assert_close(u, torch.tensor([0.5, -0.5, 0.25, -0.1], dtype=torch.float64))
    assert cell.weight_hh[0] == 2.0  # the parameter itself is left as it is
    x, h = torch.randn(2, 3, dtype=torch.float64), torch.rand(2, 4, dtype=torch.float64)
    out = cell(x, h)
    torch.testing.assert_close(out, ref_indrnn(cell, x, (h,))[0])
    out.sum().backward()
    assert cell.weight_hh.grad[0] == 0 and cell.weight_hh.grad[1] == 0  # beyond the bound: no gradient
    assert (cell.weight_hh.grad[2:] != 0).any()
    # the layer reads the clipped weights too
    layer = Recurrent(IndRNNCell, 3, 4, recurrent_max_abs=0.5, dtype=torch.float64)
    layer.cells[0].load_state_dict(cell.state_dict())
    seq = torch.randn(5, 2, 3, dtype=torch.float64)
    h, outs = torch.zeros(2, 4, dtype=torch.float64), []
    for t in range(5):
        h = ref_indrnn(cell, seq[t], (h,))[0]
        outs.append(h)
    torch.testing.assert_close(layer(seq)[0], torch.stack(outs))


def test_indrnn_bad_options():
    with pytest.raises(ValueError, match="Unknown nonlinearity 'sigmoid'. Select from 'relu' or 'tanh'"):
        IndRNNCell(4, 5, nonlinearity="sigmoid")
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="recurrent_max_abs should be a positive finite number"):
            IndRNNCell(4, 5, recurrent_max_abs=bad)
    for bad in ("1", True):
        with pytest.raises(TypeError, match="recurrent_max_abs should be a positive number or None"):
            IndRNNCell(4, 5, recurrent_max_abs=bad)
