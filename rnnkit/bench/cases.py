"""The benchmark grid: what is built and run for each (mode, shape, pass)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit

SHAPES = [(100, 1, 32, 32), (200, 16, 64, 64), (100, 32, 256, 256), (50, 64, 512, 512)]  # T, B, I, H
MODES = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
DEFAULT_MODES = ["lstm", "gru", "rnn_tanh"]
# users' cells (bench/user_cells.py) through Recurrent on their generated kernels (issue 18)
CUSTOM_CELLS = {"custom_cifg_lstm": "cifg_lstm", "custom_mgu": "mgu",
                "custom_layernorm_gru": "layernorm_candidate_gru", "custom_grucell": "torch.nn.GRUCell"}
EXTRAS = ["lstm_packed", "lstm_bi2", "transformer", "layernorm_lstm", "min_gru", "min_gru_scan", *CUSTOM_CELLS]
# Each extra at its shapes: T, B, I, H; for the Transformer encoder layer: sequence 128, batch 32,
# d_model 256, 8 heads.
EXTRA_SHAPES = {
    "lstm_packed": [(200, 16, 64, 64)],
    "lstm_bi2": [(200, 16, 64, 64)],
    "transformer": [(128, 32, 256, 8)],
    "layernorm_lstm": [(100, 1, 32, 32), (200, 16, 64, 64), (100, 32, 256, 256)],  # issue 4's sizes
    "min_gru": [(4096, 16, 64, 64), (4096, 16, 256, 256)],
    "min_gru_scan": [(4096, 16, 64, 64)],
    **{mode: [(100, 1, 32, 32), (200, 16, 64, 64), (100, 32, 256, 256)] for mode in CUSTOM_CELLS},  # issue 18's
}
# What rnnkit is timed against, where it is not torch.nn's layer of the same mode.
BASELINES = {
    "transformer": "torch.nn.TransformerEncoderLayer",
    "layernorm_lstm": "torch.nn.LSTM",  # a layer-normalised LSTM against torch's plain one, same sizes
    "min_gru": "rnnkit.GRU (fused)",  # minGRU (auto: the fused sequential kernel) against rnnkit's GRU
    "min_gru_scan": "rnnkit.GRU (fused)",  # minGRU on backend="scan" (the log-space parallel scan)
    **{mode: "reference loop" for mode in CUSTOM_CELLS},  # the same cell on backend="reference"
}
PASSES = ["fwd", "fwd+bwd"]


@dataclass
class Case:
    mode: str
    shape: tuple
    pass_: str
    seed: int = 0
    key: str = field(init=False)

    def __post_init__(self):
        T, B, I, H = self.shape
        if self.mode == "transformer":
            self.key = f"{self.mode} S={T} B={B} d_model={I} heads={H} {self.pass_}"
        else:
            self.key = f"{self.mode} T={T} B={B} I={I} H={H} {self.pass_}"

    @property
    def family(self) -> str:
        if self.mode in CUSTOM_CELLS:
            return "custom_cell"
        if self.mode in BASELINES:  # its own family, the scan counted with its cell
            return "min_gru" if self.mode == "min_gru_scan" else self.mode
        return "lstm" if self.mode.startswith("lstm") else ("gru" if self.mode == "gru" else "rnn")

    @property
    def baseline(self) -> str:
        return BASELINES.get(self.mode, "torch.nn")


def build_layer(mode: str, input_size: int, hidden_size: int) -> torch.nn.Module:
    if mode in ("lstm", "lstm_packed"):
        return rnnkit.LSTM(input_size, hidden_size)
    if mode == "lstm_bi2":
        return rnnkit.LSTM(input_size, hidden_size, num_layers=2, bidirectional=True)
    if mode == "gru":
        return rnnkit.GRU(input_size, hidden_size)
    if mode in ("rnn_tanh", "rnn_relu"):
        return rnnkit.RNN(input_size, hidden_size, nonlinearity=mode[4:])
    if mode == "layernorm_lstm":
        return rnnkit.Recurrent(rnnkit.cells.LayerNormLSTMCell, input_size, hidden_size)
    if mode in ("min_gru", "min_gru_scan"):
        backend = "scan" if mode == "min_gru_scan" else "auto"
        return rnnkit.Recurrent(rnnkit.cells.MinGRUCell, input_size, hidden_size, backend=backend)
    if mode in CUSTOM_CELLS:
        from .user_cells import USER_CELLS
        return rnnkit.Recurrent(USER_CELLS[CUSTOM_CELLS[mode]][0], input_size, hidden_size, backend="generated")
    raise ValueError(f"unknown mode {mode!r}")


def build_baseline(mode: str, layer: torch.nn.Module, input_size: int, hidden_size: int) -> torch.nn.Module:
    """The layer rnnkit's is timed against (see BASELINES): torch.nn's twin by default."""
    from rnnkit.cli.reference import torch_twin

    if mode == "layernorm_lstm":
        return torch_twin(rnnkit.LSTM(input_size, hidden_size))
    if mode in ("min_gru", "min_gru_scan"):
        return rnnkit.GRU(input_size, hidden_size, backend="fused")
    if mode in CUSTOM_CELLS:
        from .user_cells import USER_CELLS
        reference = rnnkit.Recurrent(USER_CELLS[CUSTOM_CELLS[mode]][0], input_size, hidden_size, backend="reference")
        reference.load_state_dict(layer.state_dict())
        return reference
    return torch_twin(layer)


def make_runners(case: Case):
    """(rnnkit_fn, torch_fn, inputs): zero-argument callables running one pass on the same data."""
    from rnnkit.cli.reference import torch_transformer_layer

    if case.mode == "transformer":
        return transformer_runners(case, torch_transformer_layer)
    T, B, I, H = case.shape
    torch.manual_seed(case.seed)
    layer = build_layer(case.mode, I, H)
    twin = build_baseline(case.mode, layer, I, H)
    gen = torch.Generator().manual_seed(case.seed + 1)
    x = torch.randn(T, B, I, generator=gen)
    if case.mode == "lstm_packed":
        lengths = torch.randint(1, T + 1, (B,), generator=gen)
        lengths[0] = T
        make_input = lambda xx: pack_padded_sequence(xx, lengths, enforce_sorted=False)  # noqa: E731
    else:
        make_input = lambda xx: xx  # noqa: E731
    backward = case.pass_ == "fwd+bwd"

    def runner(module):
        def run():
            if backward:
                xx = x.detach().requires_grad_(True)
                out, _ = module(make_input(xx))
                data = out.data if hasattr(out, "batch_sizes") else out
                data.sum().backward()
                module.zero_grad(set_to_none=False)
            else:
                with torch.no_grad():
                    module(make_input(x))
        return run

    return runner(layer), runner(twin)


def transformer_runners(case: Case, build):
    """The encoder layer in training mode (dropout 0.1, as torch.nn's default), batch_first input."""
    S, B, D, heads = case.shape
    ours, ref = build(D, heads, batch_first=True, seed=case.seed)
    x = torch.randn(B, S, D, generator=torch.Generator().manual_seed(case.seed + 1))
    backward = case.pass_ == "fwd+bwd"

    def runner(module):
        def run():
            if backward:
                xx = x.detach().requires_grad_(True)
                module(xx).sum().backward()
                module.zero_grad(set_to_none=False)
            else:
                with torch.no_grad():
                    module(x)
        return run

    return runner(ours), runner(ref)


def grid(modes, shapes, passes, extras) -> list:
    cases = [Case(m, tuple(s), p) for m in modes for s in shapes for p in passes]
    cases += [Case(m, shape, p) for m in extras for shape in EXTRA_SHAPES[m] for p in passes]
    return cases
