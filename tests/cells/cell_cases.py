"""The cells under test, each with a reference step written here in plain torch from its paper's
equations (independent of rnnkit's code), and the hand loops the layer tests compare against."""
from __future__ import annotations

import torch

import rnnkit.cells as C


def layer_norm(v, gain, shift, eps=1e-5):
    mean = v.mean(-1, keepdim=True)
    var = ((v - mean) ** 2).mean(-1, keepdim=True)  # biased, as layer norm's
    out = (v - mean) / torch.sqrt(var + eps) * gain
    return out if shift is None else out + shift


def lin(x, w, b=None):
    return x @ w.T if b is None else x @ w.T + b


def ref_layernorm_lstm(cell, x, state):
    h, c = state
    a = (layer_norm(x @ cell.weight_ih.T, cell.gamma_ih, cell.bias_ih)
         + layer_norm(h @ cell.weight_hh.T, cell.gamma_hh, cell.bias_hh))
    H = cell.hidden_size
    i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(layer_norm(c, cell.gamma_c, cell.beta_c))
    return h, c


def ref_layernorm_gru(cell, x, state):
    (h,) = state
    H = cell.hidden_size
    a = layer_norm(x @ cell.weight_ih.T, cell.gamma_ih, cell.bias_ih)
    u = layer_norm(h @ cell.weight_hh.T, cell.gamma_hh, cell.bias_hh)
    r = torch.sigmoid(a[:, :H] + u[:, :H])
    z = torch.sigmoid(a[:, H:2 * H] + u[:, H:2 * H])
    n = torch.tanh(a[:, 2 * H:] + r * u[:, 2 * H:])
    return ((1 - z) * n + z * h,)


def ref_peephole_lstm(cell, x, state):
    h, c = state
    H = cell.hidden_size
    a = lin(x, cell.weight_ih, cell.bias_ih) + lin(h, cell.weight_hh, cell.bias_hh)
    i = torch.sigmoid(a[:, :H] + cell.weight_ci * c)
    f = torch.sigmoid(a[:, H:2 * H] + cell.weight_cf * c)
    g = torch.tanh(a[:, 2 * H:3 * H])
    c_new = f * c + i * g
    o = torch.sigmoid(a[:, 3 * H:] + cell.weight_co * c_new)
    return o * torch.tanh(c_new), c_new


def ref_indrnn(cell, x, state):
    (h,) = state
    u = cell.weight_hh
    if cell.recurrent_max_abs is not None:
        u = torch.clamp(u, -cell.recurrent_max_abs, cell.recurrent_max_abs)
    act = torch.relu if cell.nonlinearity == "relu" else torch.tanh
    return (act(lin(x, cell.weight_ih, cell.bias_ih) + u * h),)


def paper_g(v):
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def ref_min_gru(cell, x, state):
    (h,) = state
    H = cell.hidden_size
    k = lin(x, cell.weight_ih, cell.bias_ih)
    z = torch.sigmoid(k[:, :H])
    return ((1 - z) * h + z * paper_g(k[:, H:]),)


def ref_min_lstm(cell, x, state):
    (h,) = state
    H = cell.hidden_size
    k = lin(x, cell.weight_ih, cell.bias_ih)
    f, i = torch.sigmoid(k[:, :H]), torch.sigmoid(k[:, H:2 * H])
    return (f / (f + i) * h + i / (f + i) * paper_g(k[:, 2 * H:]),)


def ref_gru_reset_before(cell, x, state):
    (h,) = state
    H = cell.hidden_size
    W, U = cell.weight_ih, cell.weight_hh
    bi = cell.bias_ih if cell.bias_ih is not None else torch.zeros(3 * H, dtype=x.dtype)
    bh = cell.bias_hh if cell.bias_hh is not None else torch.zeros(3 * H, dtype=x.dtype)
    r = torch.sigmoid(x @ W[:H].T + bi[:H] + h @ U[:H].T + bh[:H])
    z = torch.sigmoid(x @ W[H:2 * H].T + bi[H:2 * H] + h @ U[H:2 * H].T + bh[H:2 * H])
    n = torch.tanh(x @ W[2 * H:].T + bi[2 * H:] + (r * h) @ U[2 * H:].T + bh[2 * H:])
    return ((1 - z) * n + z * h,)


# name: (cell class, constructor kwargs, reference step, number of state tensors)
CASES = {
    "layernorm_lstm": (C.LayerNormLSTMCell, {}, ref_layernorm_lstm, 2),
    "layernorm_lstm_nobias": (C.LayerNormLSTMCell, {"bias": False}, ref_layernorm_lstm, 2),
    "layernorm_gru": (C.LayerNormGRUCell, {}, ref_layernorm_gru, 1),
    "peephole_lstm": (C.PeepholeLSTMCell, {}, ref_peephole_lstm, 2),
    "indrnn_relu": (C.IndRNNCell, {}, ref_indrnn, 1),
    "indrnn_tanh_clipped": (C.IndRNNCell, {"nonlinearity": "tanh", "recurrent_max_abs": 0.5}, ref_indrnn, 1),
    "min_gru": (C.MinGRUCell, {}, ref_min_gru, 1),
    "min_lstm": (C.MinLSTMCell, {}, ref_min_lstm, 1),
    "min_lstm_nobias": (C.MinLSTMCell, {"bias": False}, ref_min_lstm, 1),
    "gru_reset_before": (C.GRUCell, {"reset_after": False}, ref_gru_reset_before, 1),
    "gru_reset_before_nobias": (C.GRUCell, {"reset_after": False, "bias": False}, ref_gru_reset_before, 1),
}


def make_cell(name, input_size=4, hidden_size=5, dtype=torch.float32, seed=0):
    """The cell with every parameter moved off its initial value (gains away from 1, shifts and
    peepholes away from 0, some recurrent weights beyond a clip bound), so each one matters."""
    cls, kwargs, _, _ = CASES[name]
    torch.manual_seed(seed)
    cell = cls(input_size, hidden_size, dtype=dtype, **kwargs)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.5 * torch.randn(p.shape, dtype=dtype, generator=gen))
    return cell


def as_state(result):
    return result if isinstance(result, tuple) else (result,)


def hx_arg(state):
    return state[0] if len(state) == 1 else tuple(state)


