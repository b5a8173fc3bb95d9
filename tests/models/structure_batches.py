"""Inputs of the structure models' tests: a padded batch whose padding holds junk, the layers to
wrap (every kind: torch.nn-style, bidirectional, projected, a Recurrent that merges its directions),
and each sequence's output computed alone, by hand, as the reference."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit.cells import LayerNormLSTMCell

LENGTHS = torch.tensor([5, 2, 4])
F_IN, H = 3, 4


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops on a shared 2-core machine: one thread avoids thread-pool waits (and is deterministic)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


LAYERS = {
    "gru": lambda bf: rnnkit.GRU(F_IN, H, batch_first=bf),
    "gru-bidirectional": lambda bf: rnnkit.GRU(F_IN, H, bidirectional=True, batch_first=bf),
    "lstm-2-layers-bidirectional": lambda bf: rnnkit.LSTM(F_IN, H, 2, bidirectional=True, batch_first=bf),
    "lstm-projected": lambda bf: rnnkit.LSTM(F_IN, H, proj_size=2, batch_first=bf),
    "rnn": lambda bf: rnnkit.RNN(F_IN, H, batch_first=bf),
    "recurrent-merge-sum": lambda bf: rnnkit.Recurrent(LayerNormLSTMCell, F_IN, H, bidirectional=True,
                                                       merge="sum", batch_first=bf),
}


def layer(name: str, batch_first: bool, seed: int = 0):
    torch.manual_seed(seed)
    return LAYERS[name](batch_first)


def features(batch_first: bool, seed: int = 0, size: int = F_IN):
    """(x, x with other junk in its padding): (B, T, F) or (T, B, F), B = 3, T = 5."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, size, generator=g)
    junk = x.clone()
    for b, n in enumerate(LENGTHS.tolist()):
        junk[b, n:] = 1e3 * torch.randn(5 - n, size, generator=g)
    return (x, junk) if batch_first else (x.transpose(0, 1), junk.transpose(0, 1))


def as_rows(x, batch_first: bool):
    """The input as (B, T, ...) whatever its layout."""
    return x if batch_first else x.transpose(0, 1)


def packed(x, batch_first: bool, enforce_sorted: bool = False):
    """A PackedSequence of x with LENGTHS; sorted (longest first, rows reordered) when enforce_sorted."""
    if not enforce_sorted:
        return pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)
    order = LENGTHS.argsort(descending=True)
    rows = as_rows(x, batch_first)[order]
    return pack_padded_sequence(rows, LENGTHS[order], batch_first=True), order


def alone(layer, x_b):
    """One sequence (L, F) run alone through ``layer``: (output (L, O), h_n)."""
    with torch.no_grad():
        x = x_b.unsqueeze(0) if layer.batch_first else x_b.unsqueeze(1)
        out, h_n = layer(x)
        return (out[0] if layer.batch_first else out[:, 0]), h_n
