"""The int8 layers take every input form of the float layer and give its results within the
quantization error."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit.quantization import DynamicQuantizedGRU, DynamicQuantizedLSTM, quantize_dynamic

from quantization_helpers import FAMILIES, float_layer, relative_error, set_product

# The int8 outputs of these 6 -> 12 models differ from float by 0.3-1.6% in norm (measured: largest
# 1.6e-2, with the VNNI product on the GRU); 5% leaves room and still catches a wrong gate or step.
TOL = 0.05


def close(result, reference):
    if isinstance(result, tuple):
        for r, f in zip(result, reference):
            close(r, f)
        return
    assert result.shape == reference.shape
    assert relative_error(result, reference) < TOL


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_padded_and_states(family, layers, bidirectional, batch_first, product):
    f = float_layer(family, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    q = set_product(quantize_dynamic(f), product)
    assert type(q) is (DynamicQuantizedLSTM if family.startswith("lstm") else DynamicQuantizedGRU)
    torch.manual_seed(1)
    x = torch.randn(4, 7, 6) if batch_first else torch.randn(7, 4, 6)
    D = 2 if bidirectional else 1
    h0 = torch.randn(D * layers, 4, f.proj_size or 12) * 0.5
    hx = (h0, torch.randn(D * layers, 4, 12) * 0.5) if family.startswith("lstm") else h0
    with torch.no_grad():
        close(q(x), f(x))
        close(q(x, hx), f(x, hx))
        close(q(x[0] if batch_first else x[:, 0]), f(x[0] if batch_first else x[:, 0]))  # unbatched


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_sequence(family, enforce_sorted, product):
    f = float_layer(family, num_layers=2, bidirectional=True)
    q = set_product(quantize_dynamic(f), product)
    torch.manual_seed(2)
    x = torch.randn(8, 4, 6)
    lengths = [8, 5, 3, 1] if enforce_sorted else [3, 8, 1, 5]
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    with torch.inference_mode():
        (qo, qs), (fo, fs) = q(packed), f(packed)
    assert torch.equal(qo.batch_sizes, fo.batch_sizes)
    close(qo.data, fo.data)
    close(qs, fs)
    padded, _ = pad_packed_sequence(qo)
    assert padded[5:, 2].abs().sum() == 0  # nothing computed past a sequence's end


def test_a_whole_model_and_the_decoder():
    torch.manual_seed(3)
    model = torch.nn.Sequential()
    model.rnn = rnnkit.GRU(6, 16, batch_first=True)
    model.eval()
    q = quantize_dynamic(model)
    decoder = torch.nn.Linear(16, 30).eval()
    qd = quantize_dynamic(torch.nn.Sequential(decoder))[0]
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        assert relative_error(qd(x), decoder(x)) < TOL
        assert qd(x).shape == (3, 5, 30)
        assert relative_error(q.rnn(x[..., :6])[0], model.rnn(x[..., :6])[0]) < TOL


def test_state_dict_copy_and_pickle_round_trip(tmp_path):
    import copy
    import pickle

    q = quantize_dynamic(float_layer("lstm_proj", num_layers=2, bidirectional=True))
    x = torch.randn(5, 2, 6)
    with torch.no_grad():
        expected = q(x)[0]
        fresh = DynamicQuantizedLSTM(6, 12, 2, bidirectional=True, proj_size=5)
        fresh.load_state_dict(q.state_dict())
        for other in (fresh, copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
            assert torch.equal(other(x)[0], expected)
    assert {k for k in q.state_dict() if k.endswith("_int8")} and all(
        v.dtype == torch.int8 for k, v in q.state_dict().items() if k.endswith("_int8"))
    with pytest.raises(RuntimeError, match="Missing key"):
        fresh.load_state_dict(float_layer("lstm_proj", num_layers=2, bidirectional=True).state_dict())


class _LanguageModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(50, 16)
        self.lstm = rnnkit.LSTM(16, 32, num_layers=2)
        self.gru = rnnkit.GRU(32, 8)
        self.head = torch.nn.Linear(8, 50)

    def forward(self, tokens):
        y, _ = self.lstm(self.embedding(tokens))
        y, _ = self.gru(y)
        return self.head(y)


@pytest.mark.parametrize("compiler", ["eager", "inductor"])
def test_a_quantized_model_compiles_and_equals_eager(compiler):
    """torch.compile of a quantized model: its int8 layers and Linear run eagerly (graph breaks, as
    torch's own quantized LSTM does), the rest compiled; the result equals eager's."""
    torch.manual_seed(0)
    model = quantize_dynamic(_LanguageModel().eval())
    tokens = torch.randint(0, 50, (7, 3))
    with torch.no_grad():
        want = model(tokens)
        got = torch.compile(model, backend=compiler)(tokens)
    torch._dynamo.reset()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_quantized_model_refuses_export_clearly():
    torch.manual_seed(0)
    model = quantize_dynamic(_LanguageModel().eval())
    tokens = torch.randint(0, 50, (7, 3))
    with torch.no_grad():
        model(tokens)  # the Linear's packed weight exists: export must still reach the clear error
    with pytest.raises(RuntimeError, match="cannot be exported"):
        torch.export.export(model, (tokens,))


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_split_across_threads_give_one_threads_numbers(family, product):
    # The int8 loops and the input projection (where it is rnnkit's) run each thread's share of the batch
    # rows (kernels/cpu/split.py): every row's arithmetic is the same, so the results are bitwise one
    # thread's, packed sequences of different lengths included.
    import numba

    from rnnkit.quantization.layer_base import row_plan, step_layout

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here: nothing to split")
    f = float_layer(family, num_layers=2, bidirectional=True)
    q = set_product(quantize_dynamic(f), product)
    torch.manual_seed(4)
    x = torch.randn(9, 16, 6)
    packed = pack_padded_sequence(x, [9, 9, 8, 8, 7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 1], enforce_sorted=True)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            steps = tuple(packed.batch_sizes.tolist())
            assert row_plan(steps, *step_layout(steps)).parts == n  # two threads: the rows split in two
            with torch.inference_mode():
                results.append((q(x), q(packed)))
    finally:
        torch.set_num_threads(threads)
    (padded_1, packed_1), (padded_2, packed_2) = results
    assert torch.equal(padded_1[0], padded_2[0]) and torch.equal(packed_1[0].data, packed_2[0].data)
    for a, b in zip(padded_1[1] if isinstance(padded_1[1], tuple) else (padded_1[1],),
                    padded_2[1] if isinstance(padded_2[1], tuple) else (padded_2[1],)):
        assert torch.equal(a, b)
    close(packed_2[0].data, f(packed)[0].data)
