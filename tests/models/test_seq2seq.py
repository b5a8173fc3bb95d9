"""rnnkit.models.Seq2Seq: shapes, padding, attention weights, greedy and beam search, learning."""
import itertools

import pytest
import torch

import rnnkit
from rnnkit.models import Seq2Seq
from rnnkit.recurrent import Recurrent

PAD, BOS, EOS = 0, 1, 2
V = 9  # 3 specials + 6 symbols
ATTENTIONS = ["additive", "dot", "general", "notes", "none"]
MAX_SRC = 7


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops on a shared 2-core machine: one thread avoids thread-pool waits (and is deterministic)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def model(attention="additive", cell="gru", encoder=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    encoder = encoder if encoder is not None else rnnkit.GRU(6, 8, bidirectional=True, batch_first=True)
    return Seq2Seq(encoder, V, V, attention=attention, cell=cell, max_src_len=MAX_SRC, **kwargs)


def task(n, generator, reverse=True, lo=2, hi=5):
    """Random symbol strings; target = the string (reversed), framed bos ... eos and padded."""
    lengths = torch.randint(lo, hi + 1, (n,), generator=generator)
    src = torch.zeros(n, int(lengths.max()), dtype=torch.long)
    tgt = torch.zeros(n, int(lengths.max()) + 2, dtype=torch.long)
    for i, n_i in enumerate(lengths.tolist()):
        x = torch.randint(3, V, (n_i,), generator=generator)
        src[i, :n_i] = x
        tgt[i, 0], tgt[i, 1:n_i + 1], tgt[i, n_i + 1] = BOS, x.flip(0) if reverse else x, EOS
    return src, lengths, tgt


def padded_batch(seed=0):
    """src (3, 6) with lengths [6, 3, 4]; the padding holds junk ids (it must not matter)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, V, (3, 6), generator=g)
    tgt_in = torch.cat([torch.full((3, 1), BOS), torch.randint(3, V, (3, 4), generator=g)], dim=1)
    return src, torch.tensor([6, 3, 4]), tgt_in


# ----- shapes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention,cell", list(itertools.product(ATTENTIONS, ["gru", "lstm"])))
def test_shapes_of_everything(attention, cell):
    m = model(attention, cell)
    src, lengths, tgt_in = padded_batch()
    logits, attn = m(src, lengths, tgt_in, return_attention=True)
    assert logits.shape == (3, 5, V)
    assert torch.equal(m(src, lengths, tgt_in), logits)
    tokens, weights = m.greedy(src, lengths, max_len=4)
    tokens_b, weights_b = m.beam_search(src, lengths, max_len=4, beam_size=3)
    assert tokens.dtype == tokens_b.dtype == torch.long
    assert tokens.shape[0] == tokens_b.shape[0] == 3 and 1 <= tokens.shape[1] <= 4 and 1 <= tokens_b.shape[1] <= 4
    if attention == "none":
        assert attn is None and weights is None and weights_b is None
    else:
        assert attn.shape == (3, 5, 6)
        assert weights.shape == (3, tokens.shape[1], 6) and weights_b.shape == (3, tokens_b.shape[1], 6)


# ----- padding ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_each_row_is_independent_of_padding_and_batch(attention, cell):
    m = model(attention, cell).double()
    src, lengths, tgt_in = padded_batch()
    logits, attn = m(src, lengths, tgt_in, return_attention=True)
    for b, n in enumerate(lengths.tolist()):
        alone, attn_alone = m(src[b:b + 1, :n], lengths[b:b + 1], tgt_in[b:b + 1], return_attention=True)
        torch.testing.assert_close(logits[b:b + 1], alone)
        if attn is not None:
            torch.testing.assert_close(attn[b:b + 1, :, :n], attn_alone)
    src2 = src.clone()
    src2[1, 3:] = PAD  # other junk in the padding
    torch.testing.assert_close(m(src2, lengths, tgt_in), logits)


@pytest.mark.parametrize("attention", ["additive", "dot", "general", "notes"])
def test_attention_weights_are_distributions_with_zero_on_padding(attention):
    m = model(attention)
    src, lengths, tgt_in = padded_batch()
    _, attn = m(src, lengths, tgt_in, return_attention=True)  # (B, T, S)
    pad = torch.arange(6)[None, :] >= lengths[:, None]  # (B, S)
    assert torch.all(attn.masked_select(pad[:, None, :].expand_as(attn)) == 0)
    # a float32 softmax over <= 6 keys sums to 1 within ~10 roundings of 1 (< 1e-6), by construction
    # inside assert_close's 1e-5 on every machine
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 5))


def test_src_lengths_none_means_full_length():
    m = model().double()  # float64: with and without lengths are other code paths (other roundings)
    src, _, tgt_in = padded_batch()
    torch.testing.assert_close(m(src, None, tgt_in), m(src, torch.full((3,), 6), tgt_in))


# ----- encoders ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,encoder", [
    ("rnn", lambda: rnnkit.RNN(6, 8)),
    ("lstm_proj_bi", lambda: rnnkit.LSTM(6, 8, proj_size=3, bidirectional=True, batch_first=True)),
    ("gru_2layer_bi", lambda: rnnkit.GRU(6, 8, num_layers=2, bidirectional=True)),
    ("lstm_2layer", lambda: rnnkit.LSTM(6, 5, num_layers=2, batch_first=True)),
    ("recurrent_lstm_bi", lambda: Recurrent(rnnkit.LSTMCell, 6, 8, bidirectional=True)),
    ("recurrent_gru_sum", lambda: Recurrent(rnnkit.GRUCell, 6, 8, 2, bidirectional=True, merge="sum")),
])
@pytest.mark.parametrize("attention", ["additive", "dot", "notes"])
def test_any_rnnkit_recurrent_layer_as_encoder(name, encoder, attention):
    m = model(attention, "lstm", encoder=encoder()).double()
    src, lengths, tgt_in = padded_batch()
    logits = m(src, lengths, tgt_in)
    assert logits.shape == (3, 5, V) and torch.isfinite(logits).all()
    alone = m(src[1:2, :3], lengths[1:2], tgt_in[1:2])
    torch.testing.assert_close(logits[1:2], alone)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_every_parameter_gets_a_gradient(attention):
    m = model(attention, "lstm", dropout=0.0)
    src, lengths, tgt = task(8, torch.Generator().manual_seed(1))
    m.loss(src, lengths, tgt).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name not in ("src_embed.weight", "tgt_embed.weight"):  # only used rows get gradients
            assert p.grad.abs().sum() > 0, name


# ----- decoding -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_beam_of_one_is_greedy(attention, cell):
    # float64: the two decoders compute the same logits by other code; an argmax between two logits within
    # float32's rounding of each other would be a coin toss of the machine's rounding, in float64 ~1e-16
    m = model(attention, cell).double().eval()
    src, lengths, _ = padded_batch(3)
    tokens, weights = m.greedy(src, lengths, max_len=6)
    tokens_b, weights_b = m.beam_search(src, lengths, max_len=6, beam_size=1)
    assert torch.equal(tokens_b, tokens)
    if weights is not None:
        torch.testing.assert_close(weights_b, weights)


def beam_rounding(m, src, lengths, tokens, scores, max_len):
    """The largest error of beam_search's scores on a float64 model: it takes each step's log-softmax in
    float32 (rnnkit/models/seq2seq.py: logits.float()) and sums them in float32.  A step's log p_i =
    z_i - max z - log sum_j exp(z_j - max z) errs by at most u (|z_i| + |max z|) (the logits' rounding to
    float32) + u |z_i - max z| + (V + 3) u (the exps, their sum, the log) + u |log p_i|: <= u (5 max|z| + V +
    4 + |log p|), and each of <= max_len additions to a score rounds once more (u |score|).  First order in
    u = 2^-24, twice over for a margin: a bound by construction, for every machine."""
    u = 2.0 ** -24
    tgt_in = torch.cat([torch.full((tokens.size(0), 1), BOS), tokens[:, :-1]], dim=1)
    z = m(src, lengths, tgt_in).abs().max().item()
    per_step = u * (5 * z + m.out.out_features + 4 + scores.abs().max().item())
    return 2 * max_len * (per_step + u * scores.abs().max().item())


def log_prob(m, src, lengths, tokens):
    """Summed log-probability of each row's tokens (up to and including its first eos), by teacher forcing."""
    tgt_in = torch.cat([torch.full((tokens.size(0), 1), BOS), tokens[:, :-1]], dim=1)
    logp = torch.log_softmax(m(src, lengths, tgt_in).double(), -1).gather(2, tokens.unsqueeze(2)).squeeze(2)
    ended = torch.cumsum((tokens == EOS).long(), dim=1)
    keep = (ended == 0) | ((ended == 1) & (tokens == EOS))  # steps up to the first eos
    return (logp * keep).sum(1)


def test_beam_search_scores_are_the_log_probabilities_of_its_tokens():
    # a float64 model: the scores' only rounding is the beam's own float32 log-softmax and sums (beam_rounding;
    # with a float32 model a fixed 1e-4 held for the two float32 computations by one machine's rounding)
    m = model("additive", "lstm", seed=2).double().eval()
    src, lengths, _ = padded_batch(4)
    tokens, _, scores = m.beam_search(src, lengths, max_len=6, beam_size=4, return_scores=True)
    bound = beam_rounding(m, src, lengths, tokens, scores, 6)
    torch.testing.assert_close(scores.double(), log_prob(m, src, lengths, tokens), atol=bound, rtol=0)


@pytest.mark.parametrize("attention", ["additive", "notes"])
def test_wide_beam_is_exhaustive_search(attention):
    """With beam_size >= V ** max_len nothing is pruned: the beam finds the best sequence of all."""
    torch.manual_seed(0)
    vocab, max_len = 4, 3  # pad, bos, eos, one symbol
    m = Seq2Seq(rnnkit.GRU(3, 4, batch_first=True), vocab, vocab, attention=attention, max_src_len=4).double().eval()
    src, lengths = torch.tensor([[3, 3, 3], [3, 3, 0]]), torch.tensor([3, 2])
    tokens, _, scores = m.beam_search(src, lengths, max_len=max_len, beam_size=vocab ** max_len, return_scores=True)
    best = torch.full((2,), float("-inf"), dtype=torch.float64)
    for t in range(1, max_len + 1):
        for seq in itertools.product(range(vocab), repeat=t):
            if EOS in seq[:-1] or (t < max_len and seq[-1] != EOS):
                continue  # a hypothesis ends at its first eos, or is cut at max_len
            cand = torch.tensor([list(seq) + [PAD] * (max_len - t)] * 2)
            best = torch.maximum(best, log_prob(m, src, lengths, cand))
    # a float64 model: the beam's scores carry only its own float32 rounding (beam_rounding), teacher
    # forcing's log-probabilities float64's (~1e-15)
    torch.testing.assert_close(scores.double(), best, atol=beam_rounding(m, src, lengths, tokens, scores, max_len),
                               rtol=0)
    torch.testing.assert_close(log_prob(m, src, lengths, torch.nn.functional.pad(
        tokens, (0, max_len - tokens.size(1)), value=PAD)), best, atol=1e-10, rtol=1e-10)


def test_decoded_rows_end_with_eos_then_pad_and_zero_attention():
    m = model("general", "gru", seed=5).eval()
    # make eos likely so that rows finish at different steps
    with torch.no_grad():
        m.out.bias[EOS] += 2.0
    src, lengths, _ = padded_batch(6)
    for tokens, weights in (m.greedy(src, lengths, max_len=8), m.beam_search(src, lengths, max_len=8, beam_size=3)):
        for b in range(tokens.size(0)):
            row = tokens[b].tolist()
            if EOS in row:
                end = row.index(EOS)
                assert all(t == PAD for t in row[end + 1:])
                assert torch.all(weights[b, end + 1:] == 0)
                # a float32 softmax over <= 6 keys sums to 1 within ~10 roundings (< 1e-6): by construction
                torch.testing.assert_close(weights[b, :end + 1].sum(-1), torch.ones(end + 1))


def test_teacher_forcing_ratio_zero_feeds_back_greedy_predictions():
    m = model("dot", "lstm", seed=3).double().eval()  # float64: argmaxes of other code paths, no near ties
    src, lengths, tgt_in = padded_batch(2)
    tokens, _ = m.greedy(src, lengths, max_len=5)
    logits = m(src, lengths, torch.full((3, 5), BOS), teacher_forcing_ratio=0.0)
    predicted = logits.argmax(-1)
    for b in range(3):
        row = tokens[b].tolist()
        n = row.index(EOS) + 1 if EOS in row else len(row)
        assert predicted[b, :n].tolist() == row[:n]


# ----- learning -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention,cell,encoder,reverse", [
    ("additive", "gru", lambda: rnnkit.GRU(16, 24, bidirectional=True, batch_first=True), True),
    ("dot", "lstm", lambda: rnnkit.LSTM(16, 24, bidirectional=True), False),
    ("notes", "gru", lambda: rnnkit.GRU(16, 24, bidirectional=True, batch_first=True), True),
])
def test_learns_a_short_copy_or_reverse_task(attention, cell, encoder, reverse):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    m = Seq2Seq(encoder(), V, V, attention=attention, cell=cell, max_src_len=5)
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    for _ in range(120):
        src, lengths, tgt = task(64, g, reverse=reverse)
        loss = m.loss(src, lengths, tgt)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    m.eval()
    src, lengths, tgt = task(200, torch.Generator().manual_seed(123), reverse=reverse)
    tokens, weights = m.greedy(src, lengths, max_len=7)
    correct = [tokens[i, :n + 1].tolist() == tgt[i, 1:n + 2].tolist() for i, n in enumerate(lengths.tolist())]
    accuracy = sum(correct) / len(correct)
    assert accuracy >= 0.9, f"{attention}/{cell}: exact-match accuracy {accuracy:.2f} after 120 steps"
    beam_tokens, _ = m.beam_search(src, lengths, max_len=7, beam_size=3)
    beam_correct = [beam_tokens[i, :n + 1].tolist() == tgt[i, 1:n + 2].tolist() for i, n in enumerate(lengths.tolist())]
    assert sum(beam_correct) / len(beam_correct) >= 0.9
    if reverse and attention != "notes":
        # reversing: output step t looks mostly at source position n-1-t
        hits = [int(weights[i, t].argmax()) == n - 1 - t for i, n in enumerate(lengths.tolist()) for t in range(n)]
        assert sum(hits) / len(hits) >= 0.8


# ----- bad input ----------------------------------------------------------------------------------------
def test_constructor_rejects_bad_arguments_with_clear_messages():
    enc = rnnkit.GRU(6, 8, bidirectional=True)
    with pytest.raises(ValueError, match="attention should be one of .*'none'.*got 'luong'"):
        Seq2Seq(enc, V, V, attention="luong")
    with pytest.raises(ValueError, match="cell should be one of"):
        Seq2Seq(enc, V, V, cell="rnn")
    with pytest.raises(ValueError, match=r"hidden_size \(8\).*encoder output size \(16\)"):
        Seq2Seq(enc, V, V, attention="dot", hidden_size=8)
    with pytest.raises(ValueError, match="max_src_len"):
        Seq2Seq(enc, V, V, attention="notes")
    with pytest.raises(TypeError, match="recurrent layer"):
        Seq2Seq(torch.nn.Linear(3, 3), V, V)
    with pytest.raises(ValueError, match="eos_id"):
        Seq2Seq(enc, V, V, eos_id=V)
    assert Seq2Seq(enc, V, V, attention="general", hidden_size=8).hidden_size == 8


def test_calls_reject_bad_input_with_clear_messages():
    m = model("notes")
    src, lengths, tgt_in = padded_batch()
    with pytest.raises(ValueError, match=r"src_lengths should lie in \[1, 6\].*max 7"):
        m(src, torch.tensor([7, 3, 4]), tgt_in)
    with pytest.raises(ValueError, match=r"src_lengths should lie in \[1, 6\].*min 0"):
        m(src, torch.tensor([0, 3, 4]), tgt_in)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        m(src, torch.tensor([6, 3]), tgt_in)
    with pytest.raises(ValueError, match="max_src_len=7.*8 steps"):
        m(torch.randint(3, V, (3, 8)), None, tgt_in)
    with pytest.raises(ValueError, match=r"src should be a \(B, S\) tensor of token ids"):
        m(src.float(), lengths, tgt_in)
    with pytest.raises(ValueError, match=r"tgt_in should be \(B, T\) with B = 3"):
        m(src, lengths, tgt_in[:2])
    with pytest.raises(ValueError, match="max_len should be a positive int"):
        m.greedy(src, lengths, max_len=0)
    with pytest.raises(ValueError, match="beam_size should be a positive int"):
        m.beam_search(src, lengths, beam_size=0)
