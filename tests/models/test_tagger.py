"""rnnkit.models.SequenceTagger (N -> N, aligned): every input form against each sequence computed alone."""
import pytest
import torch
from structure_batches import LAYERS, LENGTHS, alone, as_rows, features, layer, one_thread, packed  # noqa: F401
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

import rnnkit
from rnnkit.models import SequenceTagger

K = 5


def by_hand(model, x, batch_first):
    """(B, T, K): each sequence's outputs alone through the read-out, zeros after its length."""
    expected = torch.zeros(3, 5, K)
    for b, n in enumerate(LENGTHS.tolist()):
        out, _ = alone(model.layer, as_rows(x, batch_first)[b, :n])
        expected[b, :n] = model.out(out)
    return expected


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_input_form_gives_each_sequence_alone(name, batch_first):
    model = SequenceTagger(layer(name, batch_first), K).eval()
    x, junk = features(batch_first)
    with torch.no_grad():
        scores = model(x, LENGTHS)
        assert scores.shape == ((3, 5, K) if batch_first else (5, 3, K))  # the input's layout
        torch.testing.assert_close(as_rows(scores, batch_first), by_hand(model, x, batch_first), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(junk, LENGTHS), scores, atol=0, rtol=0)  # padding never matters
        out = model(packed(x, batch_first))
        assert isinstance(out, PackedSequence) and out.data.shape == (int(LENGTHS.sum()), K)
        padded, lengths = pad_packed_sequence(out, batch_first=batch_first, total_length=5)
        assert torch.equal(lengths, LENGTHS)
        torch.testing.assert_close(padded, scores, atol=1e-6, rtol=0)


def test_no_lengths_means_every_sequence_is_whole():
    model = SequenceTagger(layer("gru-bidirectional", True), K).eval()
    x, _ = features(True)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x, torch.tensor([5, 5, 5])), atol=0, rtol=0)


def test_token_ids_in_both_layouts():
    torch.manual_seed(0)
    model = SequenceTagger(rnnkit.LSTM(3, 4, bidirectional=True), K, vocab_size=9).eval()  # (T, B)
    ids = torch.randint(9, (5, 3))
    with torch.no_grad():
        scores = model(ids, LENGTHS)
        assert scores.shape == (5, 3, K)
        for b, n in enumerate(LENGTHS.tolist()):
            out, _ = alone(model.layer, model.embedding(ids[:n, b]))
            torch.testing.assert_close(scores[:n, b], model.out(out), atol=1e-5, rtol=1e-5)
            assert torch.all(scores[n:, b] == 0)


@pytest.mark.parametrize("call,message", [
    (lambda m: m(torch.randn(3, 5, 4)), "expected 3 features per step"),
    (lambda m: m(torch.randn(3, 5, 3), torch.tensor([6, 1, 1])), r"lengths should lie in \[1, 5\]"),
    (lambda m: m(torch.randn(3, 0, 3)), "at least one sequence and one step"),
    (lambda m: m(torch.randn(3, 5, 3), torch.tensor([5.0, 1.0, 1.0])), "lengths should hold integers"),
])
def test_bad_calls_say_how_to_fix_them(call, message):
    with pytest.raises(ValueError, match=message):
        call(SequenceTagger(layer("gru", True), K))


def test_ids_out_of_the_vocabulary_are_named():
    model = SequenceTagger(layer("gru", True), K, vocab_size=4)
    with pytest.raises(ValueError, match=r"token ids should lie in \[0, 4\)"):
        model(torch.tensor([[1, 2, 7]]))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.randn(1, 3))
