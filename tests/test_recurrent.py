"""rnnkit.Recurrent: any cell as a full layer."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
import rnnkit.bench.user_cells
from rnnkit.recurrent import Recurrent

from helpers import TOL, hand_loop

# Where Recurrent is compared with another computation of the same values (a hand loop, another batch,
# rnnkit's layers, a merge by hand) the comparison runs in float64: the two round differently (another
# batch or length is another matrix product), and float64 leaves ~1e-16 of that, far below ATOL.
F64 = torch.float64
ATOL = TOL[F64]


class TinyLSTM(nn.Module):
    """A user's cell with a tuple state, written without rnnkit: what people write by hand."""

    def __init__(self, input_size, hidden_size, scale=1.0):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, 4 * hidden_size)
        self.hidden_size, self.scale = hidden_size, scale

    def forward(self, x, hx=None):
        if hx is None:
            hx = (x.new_zeros(x.size(0), self.hidden_size),) * 2
        h, c = hx
        i, f, g, o = self.lin(torch.cat([x, h], 1)).chunk(4, 1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh() * self.scale
        return o.sigmoid() * c.tanh(), c


@pytest.mark.parametrize("cell", [TinyLSTM, nn.GRUCell, rnnkit.LSTMCell, rnnkit.GRUCell, rnnkit.RNNCell])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True), (3, False)])
def test_equals_hand_loop_over_cells(cell, num_layers, bidirectional):
    torch.manual_seed(0)
    layer = Recurrent(cell, 4, 5, num_layers, bidirectional=bidirectional).double()
    x = torch.randn(6, 3, 4, dtype=F64)
    out, h_n = layer(x)
    ref_out, ref_states = hand_loop(layer, x, 2 if bidirectional else 1)
    torch.testing.assert_close(out, ref_out, atol=ATOL, rtol=0)
    got = h_n if isinstance(h_n, tuple) else (h_n,)
    for a, b in zip(got, ref_states):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cell", [TinyLSTM, rnnkit.GRUCell])
def test_packed_and_lengths_equal_each_sequence_alone(cell):
    torch.manual_seed(0)
    layer = Recurrent(cell, 4, 5, 2, bidirectional=True, batch_first=True).double()
    x = torch.randn(3, 7, 4, dtype=F64)
    lengths = [3, 7, 5]
    out, h_n = layer(x, lengths=lengths)
    packed_out, packed_h = layer(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    padded, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=7)
    torch.testing.assert_close(out, padded)
    h_n = h_n if isinstance(h_n, tuple) else (h_n,)
    for b, n in enumerate(lengths):
        alone_out, alone_h = layer(x[b:b + 1, :n])
        alone_h = alone_h if isinstance(alone_h, tuple) else (alone_h,)
        torch.testing.assert_close(out[b, :n], alone_out[0], atol=ATOL, rtol=0)
        assert torch.all(out[b, n:] == 0)
        for s, a in zip(h_n, alone_h):
            torch.testing.assert_close(s[:, b], a[:, 0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("cell,layer_cls", [(rnnkit.LSTMCell, rnnkit.LSTM), (rnnkit.GRUCell, rnnkit.GRU),
                                            (rnnkit.RNNCell, rnnkit.RNN)])
def test_rnnkit_cells_match_the_torch_exact_layers(cell, layer_cls):
    """Recurrent over rnnkit's cells is the same computation as rnnkit.LSTM/GRU/RNN (and so torch.nn)."""
    torch.manual_seed(0)
    rec = Recurrent(cell, 4, 5, 2, bidirectional=True, dtype=F64)
    layer = layer_cls(4, 5, 2, bidirectional=True, dtype=F64)
    state = {}
    for k in range(2):
        for d, suffix in enumerate(("", "_reverse")):
            for name, p in rec.cells[2 * k + d].named_parameters():
                state[f"{name}_l{k}{suffix}"] = p.detach()
    layer.load_state_dict(state)
    x = torch.randn(5, 3, 4, dtype=F64)
    torch.testing.assert_close(rec(x)[0], layer(x)[0], atol=ATOL, rtol=0)


def test_unbatched_and_hx_given():
    torch.manual_seed(0)
    layer = Recurrent(rnnkit.LSTMCell, 4, 5, 2)
    x = torch.randn(6, 4)
    h0, c0 = torch.randn(2, 5), torch.randn(2, 5)
    out, (h, c) = layer(x, (h0, c0))
    assert out.shape == (6, 5) and h.shape == c.shape == (2, 5)
    out_b, (hb, cb) = layer(x.unsqueeze(1), (h0.unsqueeze(1), c0.unsqueeze(1)))
    torch.testing.assert_close(out, out_b[:, 0])
    torch.testing.assert_close(h, hb[:, 0])


@pytest.mark.parametrize("merge,combine", [("sum", lambda a, b: a + b), ("mean", lambda a, b: (a + b) / 2),
                                           ("mul", lambda a, b: a * b)])
def test_merge_modes(merge, combine):
    torch.manual_seed(0)
    layer = Recurrent(rnnkit.GRUCell, 4, 5, 2, bidirectional=True, merge=merge, dtype=F64)
    assert layer.cells[2].input_size == 5
    x = torch.randn(6, 2, 4, dtype=F64)
    out, h_n = layer(x)
    assert out.shape == (6, 2, 5) and h_n.shape == (4, 2, 5)
    # the last layer's two directions, recomputed by hand from the first layer's merged output
    first = combine(*[hand_loop_single(layer.cells[d], x, d) for d in (0, 1)])
    expected = combine(*[hand_loop_single(layer.cells[2 + d], first, d) for d in (0, 1)])
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


def hand_loop_single(cell, x, reverse):
    h, seq = None, [None] * x.size(0)
    for t in (range(x.size(0) - 1, -1, -1) if reverse else range(x.size(0))):
        h = cell(x[t], h)
        seq[t] = h
    return torch.stack(seq)


def test_return_states_gives_every_c_t():
    torch.manual_seed(0)
    layer = Recurrent(rnnkit.LSTMCell, 4, 5, 1, return_states=True, batch_first=True, dtype=F64)
    x = torch.randn(2, 6, 4, dtype=F64)
    out, (h_n, c_n), (hs, cs) = layer(x)
    assert hs.shape == cs.shape == (2, 6, 5)
    torch.testing.assert_close(hs, out)
    torch.testing.assert_close(cs[:, -1], c_n[0])
    h = c = torch.zeros(2, 5, dtype=F64)
    for t in range(6):
        h, c = layer.cells[0](x[:, t], (h, c))
        torch.testing.assert_close(cs[:, t], c, atol=ATOL, rtol=0)


def test_stateful_streaming_equals_one_long_call_and_reset():
    torch.manual_seed(0)
    layer = Recurrent(rnnkit.GRUCell, 4, 5, 2, stateful=True, dtype=F64)
    x = torch.randn(12, 3, 4, dtype=F64)
    whole, h_whole = layer(x)
    layer.reset_state()
    parts = [layer(chunk)[0] for chunk in x.split(4)]
    torch.testing.assert_close(torch.cat(parts), whole, atol=ATOL, rtol=0)
    assert not layer._carry[0].requires_grad  # truncated BPTT: the carried state is detached
    torch.testing.assert_close(layer._carry[0], h_whole.detach(), atol=ATOL, rtol=0)
    layer.reset_state()
    torch.testing.assert_close(layer(x[:4])[0], parts[0])
    with pytest.raises(RuntimeError, match="reset_state"):
        layer(torch.randn(4, 2, 4, dtype=F64))


def test_dropouts_and_zoneout_are_deterministic_in_eval_and_keep_the_expectation_in_training():
    torch.manual_seed(0)
    x = torch.randn(5, 2, 4)
    for kwargs in (dict(input_dropout=0.5), dict(recurrent_dropout=0.5), dict(dropout=0.5)):
        layer = Recurrent(rnnkit.RNNCell, 4, 6, 2, **kwargs).eval()
        plain = Recurrent(rnnkit.RNNCell, 4, 6, 2).eval()
        plain.load_state_dict(layer.state_dict())
        torch.testing.assert_close(layer(x)[0], plain(x)[0])  # eval: identity, no noise
        layer.train()
        assert not torch.equal(layer(x)[0], layer(x)[0])  # training: random masks
    # expectation: with a linear (identity-activation) cell, the mean over masks equals the eval output
    torch.manual_seed(1)
    layer = Recurrent(LinearCell, 3, 3, 1, input_dropout=0.3)
    x = torch.randn(4, 1, 3)
    expect = layer.eval()(x)[0]
    layer.train()
    mean = torch.stack([layer(x.expand(4, 2000, 3))[0] for _ in range(5)]).mean((0, 2))
    # 0.05 is 20 standard errors of this mean (2.5e-3 at most, from the samples' spread): a bound that
    # holds for any draw of the masks, not one that the seeded stream happens to meet
    torch.testing.assert_close(mean, expect[:, 0], atol=0.05, rtol=0)


def test_zoneout_training_mixes_states_and_eval_uses_expectation():
    torch.manual_seed(0)
    layer = Recurrent(LinearCell, 3, 3, 1, zoneout=0.25)
    x = torch.randn(3, 1, 3)
    eval_out = layer.eval()(x)[0]
    # by hand: h = 0.25 * h_prev + 0.75 * cell(x, h_prev)
    h = torch.zeros(1, 3)
    for t in range(3):
        h = 0.25 * h + 0.75 * layer.cells[0](x[t], h)
        torch.testing.assert_close(eval_out[t], h)
    layer.train()
    outs = torch.stack([layer(x.expand(3, 4000, 3))[0] for _ in range(3)]).mean((0, 2))
    # linear cell: same expectation; 0.05 is 16 standard errors of this mean (3.1e-3 at most)
    torch.testing.assert_close(outs, eval_out[:, 0], atol=0.05, rtol=0)


class LinearCell(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)
        self.hidden_size = hidden_size

    def forward(self, x, h=None):
        h = x.new_zeros(x.size(0), self.hidden_size) if h is None else h
        return self.lin(torch.cat([x, h], 1))


class ReturnsList(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.h = h

    def forward(self, x, hx=None):
        return [x.new_zeros(x.size(0), self.h)]


class WrongSize(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.h = h

    def forward(self, x, hx=None):
        return x.new_zeros(x.size(0), self.h + 1)


class AtanCell(nn.Module):
    """A cell whose step uses an op the kernel generator does not handle (atan)."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h=None):
        h = x.new_zeros(x.size(0), self.lin.out_features) if h is None else h
        return torch.atan(self.lin(torch.cat([x, h], 1)))


def test_bad_cells_give_errors_naming_the_cell():
    x = torch.randn(3, 2, 4)
    with pytest.raises(TypeError, match="ReturnsList"):
        Recurrent(ReturnsList, 4, 5)(x)
    with pytest.raises(ValueError, match=r"WrongSize.*\(1, 6\).*expected \(1, 5\)"):
        Recurrent(WrongSize, 4, 5)(x)
    with pytest.raises(TypeError, match="cell class"):
        Recurrent(nn.GRUCell(4, 5), 4, 5)
    with pytest.raises(TypeError, match="could not build TinyLSTM"):
        Recurrent(TinyLSTM, 4, 5, bogus=1)
    with pytest.raises(ValueError, match="merge should be one of"):
        Recurrent(nn.GRUCell, 4, 5, merge="max")
    with pytest.raises(rnnkit.UnsupportedBackendError, match="AtanCell.*atan"):  # no generated kernel: says why
        Recurrent(AtanCell, 4, 5, backend="fused")(x)
    with pytest.raises(RuntimeError, match="input_size"):
        Recurrent(nn.GRUCell, 4, 5)(torch.randn(3, 2, 7))
    with pytest.raises(RuntimeError, match=r"Expected hx\[0\] size"):
        Recurrent(nn.GRUCell, 4, 5)(x, torch.zeros(1, 3, 5))
    with pytest.raises(ValueError, match="lengths should hold 2 values"):
        Recurrent(nn.GRUCell, 4, 5)(x, lengths=[3, 4])


def test_gradients_flow_to_every_cell_parameter_and_gradcheck():
    torch.manual_seed(0)
    layer = Recurrent(TinyLSTM, 2, 2, 2, bidirectional=True).double()
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in layer.named_parameters()]

    def f(x, *params):
        out, (h, c) = torch.func.functional_call(layer, dict(zip(names, params)), (x,), {"lengths": [3, 2]})
        return out, h, c
    assert torch.autograd.gradcheck(f, (x, *layer.parameters()))


@pytest.mark.parametrize("cell_class,hooked_name", [
    (rnnkit.bench.user_cells.CIFGLSTMCell, "cells.0.x2h"),  # a user's cell: a Linear inside it
    (rnnkit.cells.LayerNormLSTMCell, "cells.0"),  # an rnnkit cell: the cell itself
], ids=["a user's cell", "an rnnkit cell"])
def test_hooks_on_a_cell_run_at_every_step_whenever_they_are_registered(cell_class, hooked_name):
    # Recurrent calls its cell at every step (the documented equivalent loop), so a cell's hooks run there,
    # those registered after the layer's first call included: a hooked cell runs the loop that calls it
    # (a fused or generated kernel never does; one traced before the hook came would run without it)
    torch.manual_seed(0)
    layer = Recurrent(cell_class, 6, 8)  # backend "auto": a fast kernel while no hook is there
    reference = Recurrent(cell_class, 6, 8, backend="reference")
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(5, 3, 6)
    before = layer(x)[0]
    torch.testing.assert_close(before, reference(x)[0], rtol=1e-5, atol=1e-5)
    calls = []

    def doubled(module, args, output):  # changes the result, and counts the calls
        calls.append(module)
        return output * 2 if isinstance(output, torch.Tensor) else tuple(o * 2 for o in output)

    handle = layer.get_submodule(hooked_name).register_forward_hook(doubled)
    reference.get_submodule(hooked_name).register_forward_hook(doubled)
    hooked = layer(x)[0]
    assert len(calls) == 5  # once per step
    assert not torch.allclose(hooked, before)
    torch.testing.assert_close(hooked, reference(x)[0], rtol=1e-5, atol=1e-5)
    layer.backend = "fused"
    with pytest.raises(rnnkit.UnsupportedBackendError, match="hooks"):
        layer(x)
    layer.backend = "auto"
    handle.remove()  # the fast kernel again, as before the hook
    torch.testing.assert_close(layer(x)[0], before, rtol=0, atol=0)
