"""Every construction or call torch.nn rejects, rnnkit rejects with the same exception type and a clear message."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit

x = torch.randn(5, 3, 4)
packed = pack_padded_sequence(torch.randn(5, 3, 4), [5, 3, 2])

# (id, builder taking the library (torch.nn or rnnkit), phrase the rnnkit message must contain)
CASES = [
    # construction
    ("rnn-float-size", lambda L: L.RNN(4.0, 6), "input_size should be of type int, got: float"),
    ("lstm-hidden-float", lambda L: L.LSTM(4, 6.5), "hidden_size should be of type int"),
    ("gru-hidden-zero", lambda L: L.GRU(4, 0), "hidden_size must be greater than zero"),
    ("gru-hidden-negative", lambda L: L.GRU(4, -3), "hidden_size must be greater than zero"),
    ("rnn-input-zero", lambda L: L.RNN(0, 6), "input_size must be greater than zero"),
    ("rnn-layers-zero", lambda L: L.RNN(4, 6, 0), "num_layers must be greater than zero"),
    ("rnn-layers-negative", lambda L: L.RNN(4, 6, -1), "num_layers must be greater than zero"),
    ("rnn-layers-float", lambda L: L.RNN(4, 6, 2.0), "num_layers should be of type int"),
    ("rnn-dropout-bool", lambda L: L.RNN(4, 6, dropout=True), "dropout should be a number in range [0, 1]"),
    ("rnn-dropout-2", lambda L: L.RNN(4, 6, dropout=2), "dropout should be a number in range [0, 1]"),
    ("rnn-dropout-negative", lambda L: L.GRU(4, 6, dropout=-0.1), "dropout should be a number in range [0, 1]"),
    ("rnn-nonlinearity", lambda L: L.RNN(4, 6, nonlinearity="sigmoid"), "Unknown nonlinearity 'sigmoid'"),
    ("rnn-nonlinearity-positional", lambda L: L.RNN(4, 6, 1, "gelu"), "Unknown nonlinearity 'gelu'"),
    ("rnn-proj", lambda L: L.RNN(4, 6, proj_size=2), "only supported for LSTM"),
    ("gru-proj", lambda L: L.GRU(4, 6, proj_size=2), "only supported for LSTM"),
    ("lstm-proj-negative", lambda L: L.LSTM(4, 6, proj_size=-1), "proj_size should be a positive integer or zero"),
    ("lstm-proj-equal", lambda L: L.LSTM(4, 6, proj_size=6), "proj_size has to be smaller than hidden_size"),
    ("lstm-proj-larger", lambda L: L.LSTM(4, 6, proj_size=9), "proj_size has to be smaller than hidden_size"),
    ("lstm-proj-float", lambda L: L.LSTM(4, 6, proj_size=2.0), "proj_size should be of type int"),
    ("lstm-bias-str", lambda L: L.LSTM(4, 6, bias="yes"), "bias should be of type bool, got: str"),
    ("lstm-batch-first-int", lambda L: L.LSTM(4, 6, batch_first=1), "batch_first should be of type bool"),
    ("lstm-unknown-kwarg", lambda L: L.LSTM(4, 6, foo=1), "foo"),
    ("cell-float-size", lambda L: L.RNNCell(4.0, 6), "input_size should be of type int"),
    ("cell-negative-size", lambda L: L.LSTMCell(4, -1), "hidden_size must be non-negative"),
    # layer calls
    ("rnn-4d-input", lambda L: L.RNN(4, 6)(torch.randn(1, 5, 3, 4)), "Expected input to be 2D or 3D, got 4D"),
    ("lstm-1d-input", lambda L: L.LSTM(4, 6)(torch.randn(4)), "Expected input to be 2D or 3D, got 1D"),
    ("gru-4d-input", lambda L: L.GRU(4, 6)(torch.randn(1, 5, 3, 4)), "Expected input to be 2D or 3D"),
    ("rnn-feature-size", lambda L: L.RNN(4, 6)(torch.randn(5, 3, 5)), "Expected 4, got 5"),
    ("lstm-feature-size-unbatched", lambda L: L.LSTM(4, 6)(torch.randn(5, 7)), "Expected 4, got 7"),
    ("rnn-input-dtype", lambda L: L.RNN(4, 6)(x.double()), "does not match weight dtype"),
    ("gru-input-int", lambda L: L.GRU(4, 6)(torch.ones(5, 3, 4, dtype=torch.long)), "does not match weight dtype"),
    ("rnn-hx-dtype", lambda L: L.RNN(4, 6)(x, torch.zeros(1, 3, 6, dtype=torch.float64)), "dtype"),
    ("lstm-cx-dtype", lambda L: L.LSTM(4, 6)(x, (torch.zeros(1, 3, 6), torch.zeros(1, 3, 6, dtype=torch.float64))), "dtype"),
    ("gru-hx-batch", lambda L: L.GRU(4, 6)(x, torch.zeros(1, 2, 6)), "Expected hidden size (1, 3, 6), got [1, 2, 6]"),
    ("rnn-hx-layers", lambda L: L.RNN(4, 6, 2)(x, torch.zeros(1, 3, 6)), "Expected hidden size (2, 3, 6)"),
    ("rnn-hx-bidirectional", lambda L: L.RNN(4, 6, bidirectional=True)(x, torch.zeros(1, 3, 6)), "Expected hidden size (2, 3, 6)"),
    ("gru-hx-hidden", lambda L: L.GRU(4, 6)(x, torch.zeros(1, 3, 5)), "Expected hidden size (1, 3, 6)"),
    ("lstm-h0-proj", lambda L: L.LSTM(4, 6, proj_size=2)(x, (torch.zeros(1, 3, 6), torch.zeros(1, 3, 6))),
     "Expected hidden[0] size (1, 3, 2)"),
    ("lstm-c0-proj", lambda L: L.LSTM(4, 6, proj_size=2)(x, (torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))),
     "Expected hidden[1] size (1, 3, 6)"),
    ("rnn-unbatched-hx-3d", lambda L: L.RNN(4, 6)(torch.randn(5, 4), torch.zeros(1, 1, 6)),
     "For unbatched 2-D input, hx should also be 2-D but got 3-D tensor"),
    ("rnn-batched-hx-2d", lambda L: L.RNN(4, 6)(x, torch.zeros(3, 6)),
     "For batched 3-D input, hx should also be 3-D but got 2-D tensor"),
    ("gru-batched-hx-2d", lambda L: L.GRU(4, 6)(x, torch.zeros(3, 6)), "should also be 3-D"),
    ("lstm-batched-hx-2d", lambda L: L.LSTM(4, 6)(x, (torch.zeros(3, 6), torch.zeros(3, 6))),
     "hx and cx should also be 3-D but got (2-D, 2-D)"),
    ("lstm-unbatched-hx-3d", lambda L: L.LSTM(4, 6)(torch.randn(5, 4), (torch.zeros(1, 1, 6), torch.zeros(1, 1, 6))),
     "hx and cx should also be 2-D"),
    ("packed-hx-batch", lambda L: L.GRU(4, 6)(packed, torch.zeros(1, 2, 6)), "Expected hidden size (1, 3, 6)"),
    ("packed-feature-size", lambda L: L.GRU(5, 6)(packed), "Expected 5, got 4"),
    ("lstm-input-dtype", lambda L: L.LSTM(4, 6)(x.double()),
     "RNN input dtype (torch.float64) does not match weight dtype (torch.float32)"),
    ("gru-input-dtype", lambda L: L.GRU(4, 6).double()(x), "RNN input dtype (torch.float32)"),
    ("empty-sequence", lambda L: L.RNN(4, 6)(torch.randn(0, 3, 4)), "Expected sequence length to be larger than 0"),
    ("empty-sequence-lstm-bidirectional", lambda L: L.LSTM(4, 6, bidirectional=True)(torch.randn(0, 3, 4)),
     "Expected sequence length to be larger than 0 in RNN"),
    ("empty-sequence-gru-unbatched", lambda L: L.GRU(4, 6)(torch.randn(0, 4)), "Expected sequence length"),
    ("empty-sequence-batch-first", lambda L: L.RNN(4, 6, batch_first=True)(torch.randn(3, 0, 4)),
     "Expected sequence length"),
    # torch.nn checks hx before it finds the sequence empty
    ("empty-sequence-bad-hx", lambda L: L.LSTM(4, 6)(torch.randn(0, 3, 4), (torch.zeros(1, 2, 6), torch.zeros(1, 2, 6))),
     "Expected hidden[0] size (1, 3, 6), got [1, 2, 6]"),
    # cell calls
    ("cell-3d-input", lambda L: L.RNNCell(4, 6)(torch.randn(1, 3, 4)), "Expected input to be 1D or 2D, got 3D"),
    ("lstmcell-3d-input", lambda L: L.LSTMCell(4, 6)(torch.randn(1, 3, 4)), "Expected input to be 1D or 2D"),
    ("grucell-3d-hidden", lambda L: L.GRUCell(4, 6)(torch.randn(3, 4), torch.randn(1, 3, 6)), "Expected hidden to be 1D or 2D"),
    ("lstmcell-3d-hx1", lambda L: L.LSTMCell(4, 6)(torch.randn(3, 4), (torch.randn(3, 6), torch.randn(1, 3, 6))),
     "Expected hx[1] to be 1D or 2D"),
    ("cell-input-size", lambda L: L.RNNCell(4, 6)(torch.randn(3, 5)), "input has inconsistent input_size: got 5 expected 4"),
    ("grucell-input-size", lambda L: L.GRUCell(4, 6)(torch.randn(3, 5)), "inconsistent input_size"),
    ("cell-hx-batch", lambda L: L.RNNCell(4, 6)(torch.randn(3, 4), torch.randn(2, 6)),
     "Input batch size 3 doesn't match hidden0 batch size 2"),
    ("cell-hx-size", lambda L: L.RNNCell(4, 6)(torch.randn(3, 4), torch.randn(3, 5)),
     "hidden0 has inconsistent hidden_size: got 5, expected 6"),
    ("cell-batched-input-unbatched-hx", lambda L: L.GRUCell(4, 6)(torch.randn(3, 4), torch.randn(6)), "batch size"),
    ("cell-unbatched-input-batched-hx", lambda L: L.RNNCell(4, 6)(torch.randn(4), torch.randn(1, 6)),
     "inconsistent hidden_size"),
    ("lstmcell-cx-size", lambda L: L.LSTMCell(4, 6)(torch.randn(3, 4), (torch.randn(3, 6), torch.randn(3, 5))),
     "hidden1 has inconsistent hidden_size: got 5, expected 6"),
    ("lstmcell-hx-batch", lambda L: L.LSTMCell(4, 6)(torch.randn(3, 4), (torch.randn(2, 6), torch.randn(3, 6))),
     "doesn't match hidden0 batch size 2"),
    ("cell-input-dtype", lambda L: L.RNNCell(4, 6)(torch.randn(3, 4, dtype=torch.float64)), "dtype"),
    # torch.nn's cells check every size before any dtype: a float64 call to a float32 cell
    # with a wrong-sized state reports the size
    ("cell-double-input-hx-size", lambda L: L.RNNCell(10, 20)(torch.randn(3, 10).double(), torch.randn(3, 21).double()),
     "hidden0 has inconsistent hidden_size: got 21, expected 20"),
    ("grucell-double-input-hx-batch", lambda L: L.GRUCell(10, 20)(torch.randn(3, 10).double(), torch.randn(5, 20).double()),
     "Input batch size 3 doesn't match hidden0 batch size 5"),
    ("lstmcell-h0-dtype-c0-size", lambda L: L.LSTMCell(4, 6)(torch.randn(3, 4), (torch.randn(3, 6).double(), torch.randn(3, 5))),
     "hidden1 has inconsistent hidden_size: got 5, expected 6"),
    ("cell-hx-dtype", lambda L: L.GRUCell(4, 6)(torch.randn(3, 4), torch.randn(3, 6, dtype=torch.float64)), "dtype"),
]


def outcome(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the type is what we compare
        return e
    return None


@pytest.mark.parametrize("build,phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rejected_like_torch(build, phrase):
    theirs = outcome(lambda: build(nn))
    ours = outcome(lambda: build(rnnkit))
    assert theirs is not None, "torch.nn accepts this: the case is wrong"
    assert ours is not None, f"rnnkit accepted what torch rejects with {theirs!r}"
    assert type(ours) is type(theirs), (ours, theirs)
    assert phrase in str(ours), str(ours)


# Rejections whose message rnnkit takes word for word from torch.nn (PyTorch's own tests match
# several of them): the whole message must stay equal, not only the phrase above.
TORCH_WORDED = [
    "rnn-float-size", "lstm-hidden-float", "rnn-nonlinearity", "rnn-nonlinearity-positional", "rnn-proj", "gru-proj",
    "lstm-bias-str", "lstm-batch-first-int", "rnn-4d-input", "rnn-feature-size", "lstm-feature-size-unbatched",
    "rnn-input-dtype", "gru-input-int", "lstm-input-dtype", "gru-input-dtype",
    "gru-hx-batch", "rnn-hx-layers", "rnn-hx-bidirectional", "gru-hx-hidden", "lstm-h0-proj", "lstm-c0-proj",
    "rnn-unbatched-hx-3d", "rnn-batched-hx-2d", "gru-batched-hx-2d", "lstm-batched-hx-2d", "lstm-unbatched-hx-3d",
    "packed-hx-batch", "packed-feature-size",
    "empty-sequence", "empty-sequence-lstm-bidirectional", "empty-sequence-gru-unbatched", "empty-sequence-batch-first",
    "empty-sequence-bad-hx",
    "cell-3d-input", "lstmcell-3d-input", "grucell-3d-hidden", "lstmcell-3d-hx1", "cell-input-size", "grucell-input-size",
    "cell-hx-batch", "cell-hx-size", "cell-batched-input-unbatched-hx", "cell-unbatched-input-batched-hx",
    "lstmcell-cx-size", "lstmcell-hx-batch",
    "cell-double-input-hx-size", "grucell-double-input-hx-batch", "lstmcell-h0-dtype-c0-size",
]


@pytest.mark.parametrize("build", [c[1] for c in CASES if c[0] in TORCH_WORDED],
                         ids=[c[0] for c in CASES if c[0] in TORCH_WORDED])
def test_message_is_torchs(build):
    theirs, ours = outcome(lambda: build(nn)), outcome(lambda: build(rnnkit))
    assert (type(ours), str(ours)) == (type(theirs), str(theirs))


def test_torch_worded_cases_exist():
    assert set(TORCH_WORDED) <= {c[0] for c in CASES}


# Where torch's own rejection is an accident of its implementation, rnnkit gives a clearer one.
DELIBERATE = [
    # torch accepts an unknown nonlinearity when building the cell and fails at its first call
    ("cell-nonlinearity", lambda: rnnkit.RNNCell(4, 6, nonlinearity="sigmoid"), ValueError, "Unknown nonlinearity"),
    # torch takes hidden_size=True as 1 for cells (but rejects it for layers)
    ("cell-bool-size", lambda: rnnkit.GRUCell(4, True), TypeError, "hidden_size should be of type int"),
    # torch indexes a lone tensor as (h, c): IndexError, or silently wrong when its first axis is 2
    ("lstm-hx-not-tuple", lambda: rnnkit.LSTM(4, 6)(x, torch.zeros(1, 3, 6)), TypeError, "tuple (h_0, c_0)"),
    ("lstm-hx-one-element", lambda: rnnkit.LSTM(4, 6)(x, (torch.zeros(1, 3, 6),)), TypeError, "tuple (h_0, c_0)"),
    ("lstmcell-hx-not-tuple", lambda: rnnkit.LSTMCell(4, 6)(torch.randn(3, 4), torch.zeros(3, 6)), TypeError, "tuple"),
    ("gru-hx-tuple", lambda: rnnkit.GRU(4, 6)(x, (torch.zeros(1, 3, 6),)), TypeError, "expected hx to be a Tensor"),
]


@pytest.mark.parametrize("fn,exc,phrase", [c[1:] for c in DELIBERATE], ids=[c[0] for c in DELIBERATE])
def test_clearer_than_torch(fn, exc, phrase):
    with pytest.raises(exc, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        fn()


def test_rejected_call_changes_no_parameter():
    lstm = rnnkit.LSTM(4, 6, 2)
    before = {k: v.clone() for k, v in lstm.state_dict().items()}
    for bad in (torch.randn(5, 3, 5), torch.randn(5, 3, 4, dtype=torch.float64)):
        with pytest.raises((RuntimeError, ValueError)):
            lstm(bad)
    with pytest.raises(RuntimeError):
        lstm(x, (torch.zeros(1, 3, 6), torch.zeros(1, 3, 6)))
    assert all(torch.equal(before[k], v) for k, v in lstm.state_dict().items())
