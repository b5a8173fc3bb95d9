"""rnnkit.models.SequenceGenerator (1 -> N): teacher forcing against step-by-step decoding, every input
form, greedy, sampling and beam search."""
import pytest
import torch
import torch.nn.functional as F
from structure_batches import LENGTHS, one_thread  # noqa: F401
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit.cells import LayerNormGRUCell
from rnnkit.models import SequenceGenerator

C, E, V = 4, 3, 8
PAD, BOS, EOS = 0, 1, 2

DECODERS = {
    "gru": lambda bf: rnnkit.GRU(E + C, 6, batch_first=bf),
    "lstm-2-layers": lambda bf: rnnkit.LSTM(E + C, 6, 2, batch_first=bf),
    "lstm-projected": lambda bf: rnnkit.LSTM(E + C, 6, proj_size=3, batch_first=bf),
    "recurrent": lambda bf: rnnkit.Recurrent(LayerNormGRUCell, E + C, 6, batch_first=bf),
}


def generator(name="gru", batch_first=True, seed=0):
    torch.manual_seed(seed)
    return SequenceGenerator(DECODERS[name](batch_first), C, V).eval()


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    condition = torch.randn(3, C, generator=g)
    tokens = torch.randint(3, V, (3, 5), generator=g)
    tokens[:, 0] = BOS
    return condition, tokens


def by_hand(model, condition, tokens):
    """(B, T, V): step() one token at a time for each row alone, zeros after its length."""
    expected = torch.zeros(3, 5, V)
    with torch.no_grad():
        for b, n in enumerate(LENGTHS.tolist()):
            state = None
            for t in range(n):
                scores, state = model.step(tokens[b, t:t + 1], condition[b:b + 1], state)
                expected[b, t] = scores[0]
    return expected


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("name", sorted(DECODERS))
def test_teacher_forcing_equals_stepping_one_token_at_a_time(name, batch_first):
    model = generator(name, batch_first)
    condition, tokens = inputs()
    laid_out = tokens if batch_first else tokens.t()
    with torch.no_grad():
        scores = model(condition, laid_out, LENGTHS)
        assert scores.shape == ((3, 5, V) if batch_first else (5, 3, V))
        rows = scores if batch_first else scores.transpose(0, 1)
        torch.testing.assert_close(rows, by_hand(model, condition, tokens), atol=1e-5, rtol=1e-5)
        junk = laid_out.clone()
        for b, n in enumerate(LENGTHS.tolist()):
            (junk[b, n:] if batch_first else junk[n:, b]).fill_(V - 1)
        torch.testing.assert_close(model(condition, junk, LENGTHS), scores, atol=0, rtol=0)  # padding never matters
        packed = pack_padded_sequence(laid_out, LENGTHS, batch_first=batch_first, enforce_sorted=False)
        out = model(condition, packed)
        assert isinstance(out, PackedSequence) and out.data.shape == (int(LENGTHS.sum()), V)
        order = LENGTHS.argsort(descending=True)  # a sorted PackedSequence: its rows are in that order
        sorted_packed = pack_padded_sequence(tokens[order], LENGTHS[order], batch_first=True)
        padded, _ = pad_packed_sequence(model(condition[order], sorted_packed), batch_first=True, total_length=5)
        torch.testing.assert_close(padded, rows[order], atol=1e-6, rtol=0)


def test_greedy_takes_the_argmax_of_each_step_and_stops_at_eos():
    model = generator("lstm-2-layers")
    condition, _ = inputs(1)
    tokens = model.greedy(condition, max_len=6)
    assert tokens.dim() == 2 and tokens.size(0) == 3 and tokens.size(1) <= 6
    for b in range(3):
        state, previous = None, torch.tensor([BOS])
        for t in range(tokens.size(1)):
            scores, state = model.step(previous, condition[b:b + 1], state)
            previous = scores.argmax(-1)
            assert int(tokens[b, t]) == int(previous)
            if int(previous) == EOS:
                assert torch.all(tokens[b, t + 1:] == PAD)
                break


def test_beam_search_of_one_is_greedy_and_a_wider_beam_scores_at_least_as_well():
    model = generator("gru", seed=3)
    condition, _ = inputs(2)
    greedy = model.greedy(condition, max_len=5)
    one = model.beam_search(condition, max_len=5, beam_size=1)
    assert torch.equal(one, greedy)
    tokens, scores = model.beam_search(condition, max_len=5, beam_size=4, return_scores=True)
    _, greedy_scores = model.beam_search(condition, max_len=5, beam_size=1, return_scores=True)
    assert tokens.size(0) == 3 and scores.shape == (3,)
    assert torch.all(scores >= greedy_scores - 1e-5)
    # the returned score is the summed log-probability of the returned tokens, by hand
    with torch.no_grad():
        sums = [summed_log_probability(model, condition[b:b + 1], tokens[b]) for b in range(3)]
    assert sums == pytest.approx(scores.tolist(), abs=1e-4)


def summed_log_probability(model, condition, tokens) -> float:
    state, previous, total = None, torch.tensor([BOS]), 0.0
    for t in range(tokens.size(0)):
        step_scores, state = model.step(previous, condition, state)
        token = int(tokens[t])
        total += float(F.log_softmax(step_scores, -1)[0, token])
        if token == EOS:
            break
        previous = tokens[t:t + 1]
    return total


def test_sampling_is_seeded_and_a_cold_temperature_is_greedy():
    model = generator("gru", seed=4)
    condition, _ = inputs(3)
    draw = lambda: model.sample(condition, 6, temperature=1.0, generator=torch.Generator().manual_seed(7))  # noqa
    assert torch.equal(draw(), draw())
    cold = model.sample(condition, 6, temperature=1e-4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(cold, model.greedy(condition, 6))


@pytest.mark.parametrize("build,message", [
    (lambda: SequenceGenerator(rnnkit.GRU(E + C, 6, bidirectional=True), C, V), "bidirectional=False"),
    (lambda: SequenceGenerator(rnnkit.GRU(C, 6), C, V), r"input_size = E \+ 4"),
    (lambda: SequenceGenerator(rnnkit.GRU(E + C, 6), C, V, eos_id=V), r"eos_id should be a token id in \[0, 8\)"),
])
def test_bad_construction_says_how_to_fix_it(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("call,message", [
    (lambda m: m.greedy(torch.randn(3, C + 1)), r"condition should be a float \(B, 4\) tensor"),
    (lambda m: m(torch.randn(2, C), torch.ones(3, 5, dtype=torch.long)), "condition has 2 rows for 3 sequences"),
    (lambda m: m(torch.randn(3, C), torch.full((3, 5), V)), r"token ids should lie in \[0, 8\)"),
    (lambda m: m.sample(torch.randn(3, C), temperature=0), "temperature should be a number above 0"),
    (lambda m: m.beam_search(torch.randn(3, C), beam_size=0), "beam_size should be a positive int"),
    (lambda m: m.greedy(torch.randn(3, C), max_len=0), "max_len should be a positive int"),
])
def test_bad_calls_say_how_to_fix_them(call, message):
    with pytest.raises(ValueError, match=message):
        call(generator())
