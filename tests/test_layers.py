"""The torch.nn surface of rnnkit's layers: parameters, init, repr, state_dict, attributes, the notes' examples."""
import copy
import io
import pickle

import pytest
import torch
from torch import nn

import rnnkit
from helpers import MODES, TOL, twins

F64 = torch.float64  # the comparisons of two implementations below run in float64: they test the surface
# (loading, stacking, dropout, NaN, backends), not float32 rounding, and float64 leaves ~1e-16 of it

CONFIGS = [
    dict(num_layers=1), dict(num_layers=3, bidirectional=True), dict(num_layers=2, bias=False),
    dict(num_layers=2, batch_first=True, dropout=0.5),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_same_seed_same_parameters_names_order_and_repr(mode, cfg):
    ours, ref = twins(mode, **cfg)
    assert repr(ours) == repr(ref)
    assert list(ours._parameters) == list(ref._parameters)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), ref.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert ours._flat_weights_names == ref._flat_weights_names
    assert [[p.shape for p in ws] for ws in ours.all_weights] == [[p.shape for p in ws] for ws in ref.all_weights]
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size", "mode"):
        assert getattr(ours, attr) == getattr(ref, attr), attr


@pytest.mark.parametrize("mode", MODES)
def test_state_dict_loads_both_ways_strict(mode):
    ours, ref = twins(mode, F64, num_layers=2, bidirectional=True)
    torch.manual_seed(99)
    other_ours, other_ref = twins(mode, F64, seed=5, num_layers=2, bidirectional=True)
    other_ours.load_state_dict(ref.state_dict(), strict=True)
    other_ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(4, 2, 4, dtype=F64)
    torch.testing.assert_close(other_ours(x)[0], ref(x)[0], atol=TOL[F64], rtol=0)
    torch.testing.assert_close(other_ref(x)[0], ours(x)[0], atol=TOL[F64], rtol=0)


def test_notes_reprs():
    assert repr(rnnkit.RNN(100, 10, 3)) == "RNN(100, 10, num_layers=3)"
    assert repr(rnnkit.RNN(input_size=100, hidden_size=20, num_layers=1)) == "RNN(100, 20)"
    assert repr(rnnkit.RNN(100, 20, num_layers=4, bidirectional=True)) == "RNN(100, 20, num_layers=4, bidirectional=True)"
    assert repr(rnnkit.LSTM(100, 20, num_layers=4, bidirectional=True)) == "LSTM(100, 20, num_layers=4, bidirectional=True)"
    assert repr(rnnkit.RNNCell(100, 20)) == "RNNCell(100, 20)"
    assert repr(rnnkit.RNNCell(100, 20, nonlinearity="relu", bias=False)) == repr(
        nn.RNNCell(100, 20, nonlinearity="relu", bias=False))
    assert repr(rnnkit.LSTM(4, 5, backend="reference")) == "LSTM(4, 5, backend='reference')"


def test_notes_parameter_keys_and_shapes():
    rnn = rnnkit.RNN(100, 10, 3)
    assert list(rnn._parameters.keys()) == [
        f"{w}_l{k}" for k in range(3) for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert rnn.weight_ih_l0.shape == (10, 100) and rnn.weight_ih_l1.shape == (10, 10)
    lstm = rnnkit.LSTM(100, 10, 3)
    assert lstm.weight_ih_l0.shape == (40, 100) and lstm.weight_hh_l2.shape == (40, 10)
    cell = rnnkit.LSTMCell(input_size=100, hidden_size=20)
    assert list(cell._parameters.keys()) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    assert (cell.weight_ih.shape, cell.weight_hh.shape, cell.bias_ih.shape) == ((80, 100), (80, 20), (80,))


def test_notes_shape_examples():
    out, h_n = rnnkit.RNN(100, 20, num_layers=4, bidirectional=True)(torch.randn(10, 3, 100))
    assert out.shape == (10, 3, 40) and h_n.shape == (8, 3, 20)
    out, (h, c) = rnnkit.LSTM(input_size=4, hidden_size=5, batch_first=True)(torch.rand(2, 3, 4))
    assert out.shape == (2, 3, 5) and h.shape == (1, 2, 5) and c.shape == (1, 2, 5)
    out, (h, c) = rnnkit.LSTM(100, 20, num_layers=4, bidirectional=True)(torch.randn(10, 3, 100))
    assert (out.shape, h.shape, c.shape) == ((10, 3, 40), (8, 3, 20), (8, 3, 20))
    out, h_n = rnnkit.RNN(4, 3, batch_first=True, bidirectional=True)(torch.rand(1, 2, 4))
    assert out.shape == (1, 2, 6) and h_n.shape == (2, 1, 3)
    out, h_n = rnnkit.RNN(10, 100, batch_first=True, num_layers=2, bidirectional=True)(torch.randn(2, 5, 10))
    assert out.shape == (2, 5, 200) and h_n.shape == (4, 2, 100)
    out, hn = rnnkit.GRU(5, 6, 2)(torch.randn(1, 3, 5), torch.randn(2, 3, 6))
    assert out.shape == (1, 3, 6) and hn.shape == (2, 3, 6)
    out, (hn, cn) = rnnkit.LSTM(5, 6, 2)(torch.randn(1, 3, 5), (torch.randn(2, 3, 6), torch.randn(2, 3, 6)))
    assert out.shape == (1, 3, 6) and hn.shape == cn.shape == (2, 3, 6)


def test_notes_two_stacked_cells_equal_a_two_layer_lstm():
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(100, 20, 2, dtype=F64)
    cell1, cell2 = rnnkit.LSTMCell(100, 20, dtype=F64), rnnkit.LSTMCell(20, 20, dtype=F64)
    for k, cell in enumerate((cell1, cell2)):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).data.copy_(getattr(lstm, f"{name}_l{k}"))
    x = torch.randn(10, 3, 100, dtype=F64)
    h1 = c1 = h2 = c2 = torch.zeros(3, 20, dtype=F64)
    outs = []
    for xt in x:
        h1, c1 = cell1(xt, (h1, c1))
        h2, c2 = cell2(h1, (h2, c2))
        outs.append(h2)
    out, (h_n, c_n) = lstm(x)
    torch.testing.assert_close(out, torch.stack(outs), atol=TOL[F64], rtol=0)
    torch.testing.assert_close(h_n, torch.stack([h1, h2]), atol=TOL[F64], rtol=0)
    torch.testing.assert_close(c_n, torch.stack([c1, c2]), atol=TOL[F64], rtol=0)


def test_hand_written_elman_forward_equals_rnn():
    """The notes' rnn_forward: a bmm-based loop over weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0."""
    def rnn_forward(input, weight_ih, weight_hh, bias_ih, bias_hh, h_prev):
        bs, T, _ = input.shape
        h_out = torch.zeros(bs, T, weight_ih.shape[0], dtype=input.dtype)
        for t in range(T):
            x = input[:, t, :].unsqueeze(2)  # bs x input_size x 1
            w_ih_batch = weight_ih.unsqueeze(0).tile(bs, 1, 1)
            w_hh_batch = weight_hh.unsqueeze(0).tile(bs, 1, 1)
            w_times_x = torch.bmm(w_ih_batch, x).squeeze(-1)
            w_times_h = torch.bmm(w_hh_batch, h_prev.unsqueeze(2)).squeeze(-1)
            h_prev = torch.tanh(w_times_x + bias_ih + w_times_h + bias_hh)
            h_out[:, t, :] = h_prev
        return h_out, h_prev.unsqueeze(0)

    bs, T, input_size, hidden_size = 2, 3, 2, 3
    inp = torch.randn(bs, T, input_size, dtype=F64)
    h_prev = torch.zeros(bs, hidden_size, dtype=F64)
    rnn = rnnkit.RNN(input_size, hidden_size, batch_first=True, dtype=F64)
    out, state = rnn(inp, h_prev.unsqueeze(0))
    mine, mine_state = rnn_forward(inp, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0, h_prev)
    torch.testing.assert_close(out, mine, atol=TOL[F64], rtol=0)
    torch.testing.assert_close(state, mine_state, atol=TOL[F64], rtol=0)


def test_reverse_direction_h_n_is_not_last_output_row():
    rnn = rnnkit.GRU(4, 5, bidirectional=True)
    out, h_n = rnn(torch.randn(6, 2, 4))
    torch.testing.assert_close(h_n[0], out[-1, :, :5])  # forward: the last step
    torch.testing.assert_close(h_n[1], out[0, :, 5:])   # reverse: the first step
    assert not torch.allclose(h_n[1], out[-1, :, 5:])


@pytest.mark.parametrize("mode", MODES)
def test_dropout_between_layers_matches_torch_in_training(mode):
    ours, ref = twins(mode, F64, num_layers=3, dropout=0.4, bidirectional=True)
    x = torch.randn(5, 2, 4, dtype=F64)
    torch.manual_seed(11)
    a = ours(x)[0]
    torch.manual_seed(11)
    b = ref(x)[0]
    torch.testing.assert_close(a, b, atol=TOL[F64], rtol=0)
    ours.eval()
    torch.testing.assert_close(ours(x)[0], ours(x)[0], atol=0, rtol=0)  # no dropout in eval


def test_dropout_is_active_only_in_training_and_never_after_last_layer():
    torch.manual_seed(0)
    rnn = rnnkit.RNN(4, 50, num_layers=1, dropout=0.0)
    deep = rnnkit.RNN(4, 50, num_layers=2, dropout=0.9)
    x = torch.randn(3, 2, 4)
    out1, out2 = deep(x)[0], deep(x)[0]
    assert not torch.equal(out1, out2)  # random masks differ
    deep.eval()
    assert torch.equal(deep(x)[0], deep(x)[0])
    assert torch.equal(rnn(x)[0], rnn(x)[0])


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        rnnkit.LSTM(4, 5, dropout=0.5)


@pytest.mark.parametrize("mode", MODES)
def test_nan_propagates_like_torch(mode):
    ours, ref = twins(mode, F64, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, 4, dtype=F64)
    x[2, 1, 0] = float("nan")
    a, b = ours(x), ref(x)
    from helpers import flat
    for u, v in zip(flat(a), flat(b)):
        assert torch.equal(torch.isnan(u), torch.isnan(v))
        torch.testing.assert_close(u, v, equal_nan=True, atol=TOL[F64], rtol=0)


def test_to_double_and_dtype_argument():
    lstm = rnnkit.LSTM(4, 5, 2).double()
    assert all(p.dtype == torch.float64 for p in lstm.parameters())
    out, (h, c) = lstm(torch.randn(3, 2, 4, dtype=torch.float64))
    assert out.dtype == h.dtype == c.dtype == torch.float64
    gru = rnnkit.GRU(4, 5, dtype=torch.float64)
    assert gru.weight_ih_l0.dtype == torch.float64
    gru.to(torch.float32)
    assert gru(torch.randn(3, 2, 4))[0].dtype == torch.float32


def test_flatten_parameters_is_a_no_op_and_functional_call_works():
    lstm = rnnkit.LSTM(4, 5)
    before = {k: v.clone() for k, v in lstm.state_dict().items()}
    lstm.flatten_parameters()
    assert all(torch.equal(before[k], v) for k, v in lstm.state_dict().items())
    x = torch.randn(3, 2, 4)
    params = {k: torch.zeros_like(v) for k, v in lstm.named_parameters()}
    out, _ = torch.func.functional_call(lstm, params, (x,))
    assert torch.equal(out, torch.zeros_like(out))


def test_pickle_and_deepcopy():
    lstm = rnnkit.LSTM(4, 5, 2, bidirectional=True, proj_size=2)
    x = torch.randn(3, 2, 4)
    for clone in (copy.deepcopy(lstm), pickle.loads(pickle.dumps(lstm))):
        torch.testing.assert_close(clone(x)[0], lstm(x)[0], atol=0, rtol=0)
    buf = io.BytesIO()
    torch.save(lstm.state_dict(), buf)
    buf.seek(0)
    fresh = rnnkit.LSTM(4, 5, 2, bidirectional=True, proj_size=2)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(fresh(x)[0], lstm(x)[0], atol=0, rtol=0)


def test_backend_argument():
    x = torch.randn(3, 2, 4, dtype=F64)
    torch.manual_seed(0)
    a = rnnkit.GRU(4, 5, backend="reference", dtype=F64)
    torch.manual_seed(0)
    b = rnnkit.GRU(4, 5, dtype=F64)
    torch.testing.assert_close(a(x)[0], b(x)[0], atol=TOL[F64], rtol=0)
    with pytest.raises(ValueError, match="backend should be one of"):
        rnnkit.GRU(4, 5, backend="fastest")
    with pytest.raises(TypeError):
        rnnkit.GRU(4, 5, 1, True, False, 0.0, False, None, None, "reference")  # backend is keyword-only


def test_output_is_contiguous_in_time_major_and_batch_first():
    for bf in (False, True):
        out, _ = rnnkit.LSTM(4, 5, batch_first=bf)(torch.randn(3, 2, 4))
        assert out.shape == (3, 2, 5)
