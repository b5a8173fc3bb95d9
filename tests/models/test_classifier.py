"""rnnkit.models.SequenceClassifier (N -> 1): every input form against each sequence computed alone."""
import pytest
import torch
from structure_batches import LAYERS, LENGTHS, alone, as_rows, features, layer, one_thread, packed  # noqa: F401
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit.models import SequenceClassifier

C = 6


def by_hand(model, x, batch_first):
    """Each sequence alone: the pooled summary, then the read-out (B, C)."""
    rows = []
    for b, n in enumerate(LENGTHS.tolist()):
        out, h_n = alone(model.layer, as_rows(x, batch_first)[b, :n])
        if model.pooling == "last":
            h = h_n[0] if isinstance(h_n, tuple) else h_n
            d = 2 if model.layer.bidirectional else 1
            summary = h[-d:, 0].reshape(-1)  # forward state after the last step, then the reverse one
        else:
            weights = torch.softmax(model.score(torch.tanh(model.score_hidden(out))).squeeze(-1), dim=0)
            summary = weights @ out
        rows.append(model.out(summary))
    return torch.stack(rows)


@pytest.mark.parametrize("pooling", ["last", "attention"])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_input_form_gives_each_sequence_alone(name, batch_first, pooling):
    model = SequenceClassifier(layer(name, batch_first), C, pooling=pooling).eval()
    x, junk = features(batch_first)
    with torch.no_grad():
        scores = model(x, LENGTHS)
        assert scores.shape == (3, C)
        torch.testing.assert_close(scores, by_hand(model, x, batch_first), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(junk, LENGTHS), scores, atol=0, rtol=0)  # padding never matters
        torch.testing.assert_close(model(packed(x, batch_first)), scores, atol=1e-6, rtol=0)
        sorted_input, order = packed(x, batch_first, enforce_sorted=True)
        torch.testing.assert_close(model(sorted_input), scores[order], atol=1e-6, rtol=0)


def test_summary_sizes_by_hand():
    torch.manual_seed(0)
    bi = rnnkit.LSTM(3, 4, 2, bidirectional=True, proj_size=2, batch_first=True)
    assert SequenceClassifier(bi, 5).summary_size == 2 * 2  # directions * proj_size
    merged = rnnkit.Recurrent(rnnkit.cells.GRUCell, 3, 4, bidirectional=True, merge="mean")
    assert SequenceClassifier(merged, 5, pooling="last").summary_size == 8  # two final states side by side
    assert SequenceClassifier(merged, 5, pooling="attention").summary_size == 4  # outputs merged: H


def test_attention_weights_sum_to_one_over_real_steps_only():
    model = SequenceClassifier(layer("gru-bidirectional", True), C, pooling="attention")
    x, _ = features(True)
    scores, weights = model(x, LENGTHS, return_weights=True)
    assert weights.shape == (3, 5)
    torch.testing.assert_close(weights.sum(1), torch.ones(3))
    for b, n in enumerate(LENGTHS.tolist()):
        assert torch.all(weights[b, n:] == 0)


def test_token_ids_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = SequenceClassifier(rnnkit.GRU(3, 4, batch_first=True), C, vocab_size=7, pooling="attention")
    ids = torch.randint(7, (3, 5))
    junk = ids.clone()
    junk[1, 2:] = 99  # out of the vocabulary, but padding: never read
    scores = model(ids, LENGTHS)
    torch.testing.assert_close(model(junk, LENGTHS), scores, atol=0, rtol=0)
    scores.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("call,message", [
    (lambda m: m(torch.randn(3, 5, 2)), "expected 3 features per step"),
    (lambda m: m(torch.randn(3, 5)), r"expected a padded \(B, T, input_size\) tensor"),
    (lambda m: m(torch.randint(3, (3, 5, 3))), "floating-point features"),
    (lambda m: m(torch.randn(3, 5, 3), torch.tensor([5, 0, 2])), r"lengths should lie in \[1, 5\]"),
    (lambda m: m(torch.randn(3, 5, 3), [5, 2]), r"shape \(3,\)"),
    (lambda m: m(pack_padded_sequence(torch.randn(3, 5, 3), LENGTHS, batch_first=True, enforce_sorted=False),
                 LENGTHS), "a PackedSequence carries its own"),
    (lambda m: m(torch.randn(3, 5, 3), return_weights=True), "needs pooling='attention'"),
])
def test_bad_calls_say_how_to_fix_them(call, message):
    model = SequenceClassifier(layer("gru", True), C)
    with pytest.raises(ValueError, match=message):
        call(model)


def test_bad_construction():
    with pytest.raises(TypeError, match="rnnkit recurrent layer"):
        SequenceClassifier(torch.nn.Linear(3, 4), C)
    with pytest.raises(ValueError, match="pooling should be one of"):
        SequenceClassifier(layer("gru", True), C, pooling="max")
    with pytest.raises(ValueError, match="return_states=False"):
        SequenceClassifier(rnnkit.Recurrent(rnnkit.cells.GRUCell, 3, 4, return_states=True), C)
    with pytest.raises(ValueError, match="num_classes should be a positive int"):
        SequenceClassifier(layer("gru", True), 0)
