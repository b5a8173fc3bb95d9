"""Users' cells, written with torch alone as people write them, that torch.nn lacks: what the
``custom_`` cases of ``rnnkit bench`` run through ``Recurrent`` on kernels generated from their own
steps (rnnkit/kernels/generator/), against the same cells on the reference loop, and what the kernel
generator's tests hold to the reference (tests/kernels/test_generator_*.py)."""
import torch
from torch import nn

from ..cli.reference import torch_cell_class


class CIFGLSTMCell(nn.Module):
    """A coupled input-forget gate LSTM: i = 1 - f."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.x2h = nn.Linear(input_size, 3 * hidden_size)
        self.h2h = nn.Linear(hidden_size, 3 * hidden_size, bias=False)

    def forward(self, x, hx):
        if hx is None:
            zeros = x.new_zeros(x.size(0), self.hidden_size)
            hx = (zeros, zeros)
        h, c = hx
        f, g, o = (self.x2h(x) + self.h2h(h)).chunk(3, 1)
        f = torch.sigmoid(f)
        c = f * c + (1 - f) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class MGUCell(nn.Module):
    """The minimal gated unit: one forget gate, which also resets the candidate's input."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.f_x = nn.Linear(input_size, hidden_size)
        self.f_h = nn.Linear(hidden_size, hidden_size, bias=False)
        self.n_x = nn.Linear(input_size, hidden_size)
        self.n_h = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x, h):
        h = x.new_zeros(x.size(0), self.hidden_size) if h is None else h
        f = torch.sigmoid(self.f_x(x) + self.f_h(h))
        n = torch.tanh(self.n_x(x) + self.n_h(f * h))
        return (1 - f) * h + f * n


class LayerNormCandidateGRUCell(nn.Module):
    """A GRU with layer norm on the candidate's recurrent part."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.x2h = nn.Linear(input_size, 3 * hidden_size)
        self.h2h = nn.Linear(hidden_size, 3 * hidden_size)
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, x, h):
        h = x.new_zeros(x.size(0), self.hidden_size) if h is None else h
        r_x, z_x, n_x = self.x2h(x).chunk(3, 1)
        r_h, z_h, n_h = self.h2h(h).chunk(3, 1)
        r, z = torch.sigmoid(r_x + r_h), torch.sigmoid(z_x + z_h)
        n = torch.tanh(n_x + r * self.norm(n_h))
        return (1 - z) * n + z * h


# each with its number of recurrent products (matrix products of a state-dependent value with a weight);
# torch.nn.GRUCell itself is a user's cell to Recurrent (not one of rnnkit's): named by cli/reference.py,
# the one module that names torch.nn's recurrent modules; its step runs on the kernel generated from it
USER_CELLS = {"cifg_lstm": (CIFGLSTMCell, 1), "mgu": (MGUCell, 2), "layernorm_candidate_gru": (LayerNormCandidateGRUCell, 1),
              "torch.nn.GRUCell": (torch_cell_class("GRUCell"), 1)}
