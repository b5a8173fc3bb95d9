"""torch.autograd.gradcheck in float64 for every cell and every layer mode."""
import pytest
import torch
from torch.autograd import gradcheck
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from helpers import MODES


@pytest.mark.parametrize("cls,kw", [(rnnkit.RNNCell, {}), (rnnkit.RNNCell, {"nonlinearity": "relu"}),
                                    (rnnkit.LSTMCell, {}), (rnnkit.GRUCell, {})])
def test_gradcheck_cells(cls, kw):
    torch.manual_seed(0)
    cell = cls(3, 4, dtype=torch.float64, **kw)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    states = [torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
              for _ in range(2 if cls is rnnkit.LSTMCell else 1)]
    params = list(cell.parameters())

    def f(x, *rest):
        sts, ps = rest[:len(states)], rest[len(states):]
        out = torch.func.functional_call(cell, dict(zip([n for n, _ in cell.named_parameters()], ps)),
                                         (x, tuple(sts) if len(sts) == 2 else sts[0]))
        return out
    assert gradcheck(f, (x, *states, *params))


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_layers(mode, packed):
    ours_cls, _, extra = MODES[mode]
    torch.manual_seed(0)
    layer = ours_cls(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, **extra)
    names = [n for n, _ in layer.named_parameters()]
    x = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    state_sizes = layer._state_sizes()
    states = [torch.randn(4, 3, s, dtype=torch.float64, requires_grad=True) for s in state_sizes]

    def f(x, *rest):
        sts, ps = rest[:len(states)], rest[len(states):]
        inp = pack_padded_sequence(x, [4, 2, 1], enforce_sorted=False) if packed else x
        hx = tuple(sts) if len(sts) == 2 else sts[0]
        out, hn = torch.func.functional_call(layer, dict(zip(names, ps)), (inp, hx))
        out = out.data if packed else out
        return (out,) + (hn if isinstance(hn, tuple) else (hn,))
    assert gradcheck(f, (x, *states, *layer.parameters()))
