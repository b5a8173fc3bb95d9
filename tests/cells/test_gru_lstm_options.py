"""GRUCell(reset_after=False) (Keras' other GRU) and the LSTM forget-gate bias option, with the
torch-exact defaults untouched."""
import pickle

import pytest
import torch
from torch import nn

from cell_cases import ref_gru_reset_before
from rnnkit.cells import (GRU_EQUATIONS, GRU_RESET_BEFORE, LSTM_EQUATIONS, GRUCell, LayerNormLSTMCell, LSTMCell,
                          PeepholeLSTMCell)
from rnnkit.recurrent import Recurrent

LSTM_FAMILY = [LSTMCell, LayerNormLSTMCell, PeepholeLSTMCell]
# Two computations of one value (rnnkit's cell and torch.nn's, the cell and its equations by hand) are
# compared in float64: they round differently, and float64 leaves ~1e-16 of that, far below ATOL
F64, ATOL = torch.float64, 1e-10


def test_reset_after_default_is_torch_exact():
    torch.manual_seed(0)
    ours = GRUCell(4, 5, dtype=F64)
    torch.manual_seed(0)
    ref = nn.GRUCell(4, 5, dtype=F64)
    assert repr(ours) == repr(ref) == "GRUCell(4, 5)"
    assert ours.equations is GRU_EQUATIONS and ours.reset_after is True
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    x, h = torch.randn(3, 4, dtype=F64), torch.randn(3, 5, dtype=F64)
    torch.testing.assert_close(ours(x, h), ref(x, h), atol=ATOL, rtol=0)


def test_reset_before_has_the_same_parameters_and_its_own_equations():
    torch.manual_seed(0)
    after = GRUCell(4, 5, dtype=F64)
    torch.manual_seed(0)
    before = GRUCell(4, 5, reset_after=False, dtype=F64)
    assert repr(before) == "GRUCell(4, 5, reset_after=False)"
    assert repr(GRUCell(4, 5, bias=False, reset_after=False)) == "GRUCell(4, 5, bias=False, reset_after=False)"
    assert before.equations is GRU_RESET_BEFORE and GRU_RESET_BEFORE is not GRU_EQUATIONS
    assert "W_hn (r_t * h_{t-1})" in GRU_RESET_BEFORE.math and GRU_RESET_BEFORE.gates == ("r", "z", "n")
    for (n1, p1), (n2, p2) in zip(after.named_parameters(), before.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    x, h = torch.randn(3, 4, dtype=F64), torch.randn(3, 5, dtype=F64)
    assert not torch.allclose(after(x, h), before(x, h))  # the variants differ where h != 0 ...
    torch.testing.assert_close(before(x, h), ref_gru_reset_before(before, x, (h,))[0], atol=ATOL, rtol=0)
    with torch.no_grad():  # ... and agree when W_hn is zero: r then only scales b_hn in one of them
        for cell in (after, before):
            cell.weight_hh[10:].zero_()
            cell.bias_hh[10:].zero_()
    torch.testing.assert_close(after(x, h), before(x, h), atol=ATOL, rtol=0)


def test_reset_before_runs_as_a_layer_with_cell_kwargs():
    torch.manual_seed(0)
    layer = Recurrent(GRUCell, 4, 5, 2, bidirectional=True, reset_after=False)
    assert all(c.reset_after is False for c in layer.cells)
    out, h_n = layer(torch.randn(6, 2, 4))
    assert out.shape == (6, 2, 10) and h_n.shape == (4, 2, 5)


def test_reset_after_rejects_non_bool_and_is_keyword_only():
    with pytest.raises(TypeError, match="reset_after should be of type bool, got: int"):
        GRUCell(4, 5, reset_after=0)
    with pytest.raises(TypeError):
        GRUCell(4, 5, True, None, None, False)


def test_gru_cells_pickled_before_the_option_still_load():
    cell = GRUCell(4, 5)
    del cell.__dict__["reset_after"]  # as an object saved before the attribute existed
    clone = pickle.loads(pickle.dumps(cell))
    assert clone.equations is GRU_EQUATIONS and repr(clone) == "GRUCell(4, 5)"


def test_lstm_default_is_torch_exact():
    torch.manual_seed(0)
    ours = LSTMCell(4, 5)
    torch.manual_seed(0)
    ref = nn.LSTMCell(4, 5)
    assert repr(ours) == repr(ref) and ours.forget_bias is None and ours.equations is LSTM_EQUATIONS
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), ref.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)


@pytest.mark.parametrize("cls", LSTM_FAMILY)
def test_forget_bias_sets_the_f_rows_after_the_usual_draws(cls):
    torch.manual_seed(0)
    plain = cls(4, 5)
    torch.manual_seed(0)
    cell = cls(4, 5, forget_bias=1.0)
    assert repr(cell) == f"{cls.__name__}(4, 5, forget_bias=1.0)" and repr(plain) == f"{cls.__name__}(4, 5)"
    H = 5
    assert torch.equal(cell.bias_ih[H:2 * H], torch.ones(H))
    assert torch.equal(cell.bias_hh[H:2 * H], torch.zeros(H))
    rows = torch.ones(4 * H, dtype=torch.bool)
    rows[H:2 * H] = False
    assert torch.equal(cell.bias_ih[rows], plain.bias_ih[rows]) and torch.equal(cell.bias_hh[rows], plain.bias_hh[rows])
    for (n1, p1), (n2, p2) in zip(cell.named_parameters(), plain.named_parameters()):
        assert n1 == n2
        if not n1.startswith("bias_"):
            assert torch.equal(p1, p2)
    # the forget gate's total bias is exactly forget_bias: with zero weights, f = sigmoid(forget_bias)
    with torch.no_grad():
        cell.weight_ih.zero_()
        cell.weight_hh.zero_()
    if cls is LSTMCell:
        h, c = cell(torch.randn(2, 4), (torch.zeros(2, H), torch.ones(2, H)))
        i, g = torch.sigmoid(cell.bias_ih[:H] + cell.bias_hh[:H]), torch.tanh(cell.bias_ih[2 * H:3 * H] + cell.bias_hh[2 * H:3 * H])
        # the pre-activations are exact (zero products plus the biases): the two computations differ by
        # at most a couple of roundings of values below 2 (< 5e-7), far inside assert_close's 1e-5
        torch.testing.assert_close(c, (torch.sigmoid(torch.tensor(1.0)) + i * g).expand(2, H))
    # reset_parameters draws again and re-applies it
    cell.reset_parameters()
    assert torch.equal(cell.bias_ih[H:2 * H], torch.ones(H)) and torch.equal(cell.bias_hh[H:2 * H], torch.zeros(H))
    assert not torch.equal(cell.weight_ih, torch.zeros_like(cell.weight_ih))


@pytest.mark.parametrize("cls", LSTM_FAMILY)
def test_forget_bias_bad_values(cls):
    with pytest.raises(TypeError, match="forget_bias should be a real number or None, got: str"):
        cls(4, 5, forget_bias="1")
    with pytest.raises(TypeError, match="got: bool"):
        cls(4, 5, forget_bias=True)
    with pytest.raises(ValueError, match="forget_bias should be finite"):
        cls(4, 5, forget_bias=float("inf"))
    with pytest.raises(ValueError, match="cannot be set with bias=False"):
        cls(4, 5, bias=False, forget_bias=1.0)
    with pytest.raises(TypeError):  # keyword-only
        cls(4, 5, True, None, None, 1.0)


def test_forget_bias_as_a_layer_option():
    layer = Recurrent(LSTMCell, 4, 5, 2, forget_bias=2.0)
    for cell in layer.cells:
        assert torch.equal(cell.bias_ih[5:10], torch.full((5,), 2.0)) and torch.equal(cell.bias_hh[5:10], torch.zeros(5))
    assert layer(torch.randn(3, 2, 4))[0].shape == (3, 2, 5)

