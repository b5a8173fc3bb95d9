"""Every cell beyond torch.nn's: equal to its paper's equations written by hand, gradcheck in float64,
Recurrent over it equal to a hand loop (layers, directions, lengths, packing), streaming equal to the
whole-sequence call, and the same rejections of bad input as rnnkit's torch.nn cells."""
import pytest
import torch
from torch.autograd import gradcheck
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cell_cases import CASES, as_state, hx_arg, make_cell
from helpers import TOL, assert_within_rounding, float64_truth_of, hand_loop
from rnnkit.recurrent import Recurrent

DTYPES = [torch.float32, torch.float64]
# Recurrent against hand loops over its cells, in float64: the layer (a fused kernel, the whole sequence)
# and the loop (the cells' steps) round differently, and float64 leaves ~1e-16 of that (1e-13 where a
# layer norm over few features amplifies it), far below CLOSE; float32's rounding is the kernel tests'
F64 = torch.float64
CLOSE = dict(atol=TOL[F64], rtol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("form", ["batched", "unbatched", "batched_nohx", "unbatched_nohx"])
@pytest.mark.parametrize("name", CASES)
def test_cell_equals_its_equations_written_by_hand(name, form, dtype):
    _, _, reference, arity = CASES[name]
    cell = make_cell(name, dtype=dtype)
    gen = torch.Generator().manual_seed(2)
    batched = form.startswith("batched")
    x = torch.randn(3 if batched else 1, 4, dtype=dtype, generator=gen)
    state = tuple(torch.randn(x.size(0), 5, dtype=dtype, generator=gen) for _ in range(arity))
    h = x if batched else x[0]
    if form.endswith("nohx"):
        got = as_state(cell(h))
        state = tuple(torch.zeros_like(s) for s in state)
    else:
        got = as_state(cell(h, hx_arg(state if batched else tuple(s[0] for s in state))))
    with torch.no_grad():
        want = reference(cell, x, state)
    assert len(got) == arity
    for a, b in zip(got, want):
        b = b if batched else b[0]
        assert a.shape == b.shape and a.dtype == dtype
        if dtype == torch.float64:  # two float64 computations agree to ~1e-15 of these magnitudes
            torch.testing.assert_close(a, b, atol=TOL[dtype] * 10, rtol=0)
    if dtype == torch.float32:
        # the cell and the equations in float32, each within float32's rounding of the equations in
        # float64 (helpers: a bound derived from the computation's sensitivity to rounding, not fitted to
        # one machine's rounding; a layer norm over few features amplifies rounding, and the bound with it)
        truth, sensitivities = float64_truth_of(lambda c, x, *s: reference(c, x, s), cell, [x, *state], grad=False)
        assert_within_rounding([a if batched else a[None] for a in got], truth, sensitivities, dtype, who="cell")
        assert_within_rounding(list(want), truth, sensitivities, dtype, who="equations in float32")


@pytest.mark.parametrize("name", CASES)
def test_gradcheck_float64(name):
    _, _, _, arity = CASES[name]
    cell = make_cell(name, input_size=3, hidden_size=4, dtype=torch.float64)
    names = [n for n, _ in cell.named_parameters()]
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    states = [torch.randn(2, 4, dtype=torch.float64, generator=gen, requires_grad=True) for _ in range(arity)]

    def f(x, *rest):
        sts, ps = rest[:arity], rest[arity:]
        return torch.func.functional_call(cell, dict(zip(names, ps)), (x, hx_arg(sts)))
    assert gradcheck(f, (x, *states, *cell.parameters()))


def _recurrent(name, num_layers, bidirectional, dtype=torch.float32, **kw):
    cls, kwargs, _, _ = CASES[name]
    torch.manual_seed(0)
    layer = Recurrent(cls, 4, 5, num_layers, bidirectional=bidirectional, dtype=dtype, **kwargs, **kw)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # off the initial values, as make_cell
        for p in layer.parameters():
            p.add_(0.5 * torch.randn(p.shape, dtype=dtype, generator=gen))
    return layer


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("name", CASES)
def test_recurrent_equals_hand_loop_over_its_cells(name, num_layers, bidirectional):
    layer = _recurrent(name, num_layers, bidirectional, dtype=F64)
    x = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    out, h_n = layer(x)
    ref_out, ref_states = hand_loop(layer, x, 2 if bidirectional else 1)
    torch.testing.assert_close(out, ref_out, **CLOSE)
    got = as_state(h_n)
    assert len(got) == len(ref_states)
    for a, b in zip(got, ref_states):
        torch.testing.assert_close(a, b, **CLOSE)


@pytest.mark.parametrize("name", CASES)
def test_lengths_and_packed_equal_each_sequence_alone(name):
    layer = _recurrent(name, 2, True, dtype=F64, batch_first=True)
    x = torch.randn(3, 7, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    lengths = [3, 7, 5]
    out, h_n = layer(x, lengths=lengths)
    packed_out, packed_h = layer(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    padded, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=7)
    torch.testing.assert_close(out, padded)
    h_n, packed_h = as_state(h_n), as_state(packed_h)
    for a, b in zip(h_n, packed_h):
        torch.testing.assert_close(a, b)
    for b, n in enumerate(lengths):
        alone_out, alone_states = hand_loop(layer, x[b, :n].unsqueeze(1), 2)
        torch.testing.assert_close(out[b, :n], alone_out[:, 0], **CLOSE)
        assert torch.all(out[b, n:] == 0)
        for s, a in zip(h_n, alone_states):
            torch.testing.assert_close(s[:, b], a[:, 0], **CLOSE)


@pytest.mark.parametrize("name", CASES)
def test_streaming_one_token_at_a_time_equals_the_whole_sequence_call(name):
    """Two layers, fed token by token (the cells' own forward in a stateful layer) and in chunks."""
    layer = _recurrent(name, 2, False, dtype=F64, stateful=True)
    x = torch.randn(9, 2, 4, generator=torch.Generator().manual_seed(4), dtype=F64)
    whole, h_whole = layer(x)
    layer.reset_state()
    tokens = torch.cat([layer(x[t:t + 1])[0] for t in range(9)])
    torch.testing.assert_close(tokens, whole, **CLOSE)
    layer.reset_state()
    chunks = torch.cat([layer(chunk)[0] for chunk in x.split(4)])
    torch.testing.assert_close(chunks, whole, **CLOSE)
    for a, b in zip(layer._carry, as_state(h_whole)):
        torch.testing.assert_close(a, b.detach(), **CLOSE)


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_rejected_with_a_clear_message(name):
    cls, kwargs, _, arity = CASES[name]
    cell = cls(4, 5, **kwargs)
    cname = cls.__name__
    with pytest.raises(ValueError, match=f"{cname}: Expected input to be 1D or 2D, got 3D"):
        cell(torch.randn(1, 3, 4))
    with pytest.raises(RuntimeError, match="input has inconsistent input_size: got 6 expected 4"):
        cell(torch.randn(3, 6))
    with pytest.raises(RuntimeError, match=r"input dtype \(torch.float64\) does not match weight dtype"):
        cell(torch.randn(3, 4, dtype=torch.float64))
    good = tuple(torch.zeros(3, 5) for _ in range(arity))
    bad_size = (torch.zeros(3, 6),) + good[1:]
    with pytest.raises(RuntimeError, match="hidden0 has inconsistent hidden_size: got 6, expected 5"):
        cell(torch.randn(3, 4), hx_arg(bad_size))
    bad_batch = (torch.zeros(2, 5),) + good[1:]
    with pytest.raises(RuntimeError, match="Input batch size 3 doesn't match hidden0 batch size 2"):
        cell(torch.randn(3, 4), hx_arg(bad_batch))
    if arity == 2:
        with pytest.raises(TypeError, match=r"expected hx to be a tuple \(h_0, c_0\)"):
            cell(torch.randn(3, 4), torch.zeros(3, 5))
    else:
        with pytest.raises(TypeError, match="expected hx to be a Tensor"):
            cell(torch.randn(3, 4), (torch.zeros(3, 5),))
    with pytest.raises(TypeError, match="hidden_size should be of type int, got: float"):
        cls(4, 5.0, **kwargs)
    with pytest.raises(RuntimeError, match="input_size must be non-negative"):
        cls(-1, 5, **kwargs)


@pytest.mark.parametrize("name", CASES)
def test_parameters_travel_by_state_dict_and_dtype(name):
    cls, kwargs, _, _ = CASES[name]
    a, b = make_cell(name, seed=0), make_cell(name, seed=1)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(2, 4)
    for u, v in zip(as_state(a(x)), as_state(b(x))):
        assert torch.equal(u, v)
    c = cls(4, 5, **kwargs).double()
    assert all(p.dtype == torch.float64 for p in c.parameters())
    assert as_state(c(x.double()))[0].dtype == torch.float64
