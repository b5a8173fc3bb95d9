"""torch.jit.script of models holding ``Recurrent`` over rnnkit's cells (rnnkit/export/torchscript_recurrent.py):
the scripted twin computes the eager layer's outputs and gradients for every cell of rnnkit.cells (and a user's
cell TorchScript compiles: rnnkit/export/torchscript_user_cell.py), shares its
parameters, loads in a fresh process after `import rnnkit` and runs new shapes there; what it cannot run is
refused clearly, and the model it was scripted from keeps its eager behaviour."""
import io
import subprocess
import sys
from typing import Optional, Tuple

import pytest
import torch
from torch import nn

import rnnkit
import rnnkit.cells
from helpers import flat
from rnnkit.bench.user_cells import USER_CELLS

I, H, T, B = 4, 5, 6, 3
DTYPE = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|save|load)` is deprecated:DeprecationWarning")

CONFIGS = {
    "plain": dict(),
    "stacked_bidirectional_batch_first": dict(num_layers=2, bidirectional=True, batch_first=True),
    "merge_mean": dict(bidirectional=True, merge="mean"),
}


def outputs_and_grads(module, x, hx, params):
    """Every output tensor, and the gradients of a fixed random weighting of them w.r.t. x, hx and params."""
    tensors = flat(module(x, hx))
    gen = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, dtype=t.dtype, generator=gen)).sum() for t in tensors)
    leaves = [x] + ([] if hx is None else flat(hx)) + params
    return tensors, list(torch.autograd.grad(loss, leaves))


def initial_states(model, batched=True, arity=None):
    layers = model.num_layers * (2 if model.bidirectional else 1)
    arity = arity or len(model.cells[0].equations.state_names)
    shape = (layers, B, H) if batched else (layers, H)
    states = tuple(torch.randn(shape, dtype=DTYPE, requires_grad=True) for _ in range(arity))
    return states if arity == 2 else states[0]


def assert_scripted_equals_eager(model, scripted, arity=None):
    """Outputs and gradients equal at batched input with and without hx, and unbatched input with hx (each
    call from one seed, for dropout)."""
    for batched, with_hx in ((True, False), (True, True), (False, True)):
        x = torch.randn(T, B, I, dtype=DTYPE)
        if model.batch_first:
            x = x.transpose(0, 1).contiguous()
        if not batched:
            x = x[0] if model.batch_first else x[:, 0]
        x.requires_grad_()
        hx = initial_states(model, batched, arity) if with_hx else None
        torch.manual_seed(3)
        expected, expected_grads = outputs_and_grads(model, x, hx, list(model.parameters()))
        torch.manual_seed(3)
        got, got_grads = outputs_and_grads(scripted, x, hx, list(scripted.parameters()))
        assert [t.shape for t in got] == [t.shape for t in expected]
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got_grads, expected_grads, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", sorted(rnnkit.cells.CELLS))
def test_the_scripted_recurrent_computes_the_eager_layers_numbers(name, config):
    torch.manual_seed(0)
    model = rnnkit.Recurrent(rnnkit.cells.CELLS[name], I, H, **CONFIGS[config]).to(DTYPE)
    assert_scripted_equals_eager(model, torch.jit.script(model))


class ScriptableCIFGCell(nn.Module):
    """A user's coupled input-forget gate LSTM cell written for TorchScript (its state argument annotated)."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.x2h = nn.Linear(input_size, 3 * hidden_size)
        self.h2h = nn.Linear(hidden_size, 3 * hidden_size, bias=False)

    def forward(self, x: torch.Tensor, hx: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        if hx is None:
            zeros = x.new_zeros(x.size(0), self.hidden_size)
            hx = (zeros, zeros)
        h, c = hx
        f, g, o = (self.x2h(x) + self.h2h(h)).chunk(3, 1)
        f = torch.sigmoid(f)
        c = f * c + (1 - f) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


USER_SCRIPTABLE = {"cifg (h, c)": (ScriptableCIFGCell, 2), "torch.nn.GRUCell (h)": (USER_CELLS["torch.nn.GRUCell"][0], 1),
                   "mgu (h)": (USER_CELLS["mgu"][0], 1)}


@pytest.mark.parametrize("config", list(CONFIGS) + ["dropout_in_training"])
@pytest.mark.parametrize("name", list(USER_SCRIPTABLE))
def test_a_users_scriptable_cell_scripts_with_the_eager_numbers(name, config):
    """A user's cell TorchScript compiles: the twin loops over it in TorchScript (torchscript_user_cell.py), with
    the eager layer's outputs and gradients (the eager layer runs the generated kernel), saved and loaded."""
    cell, arity = USER_SCRIPTABLE[name]
    torch.manual_seed(0)
    options = dict(num_layers=3, dropout=0.5) if config == "dropout_in_training" else CONFIGS[config]
    model = rnnkit.Recurrent(cell, I, H, **options).to(DTYPE)
    model.train(config == "dropout_in_training")
    scripted = torch.jit.script(model)
    assert dict(scripted.named_parameters()).keys() == dict(model.named_parameters()).keys()
    assert_scripted_equals_eager(model, scripted, arity)  # (dropout: both draw their masks in one order)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    x = torch.randn(T + 2, B + 1, I, dtype=DTYPE)
    torch.manual_seed(3)
    expected = flat(model(x))
    torch.manual_seed(3)
    torch.testing.assert_close(flat(loaded(x)), expected, rtol=1e-10, atol=1e-10)


def test_the_scripted_recurrent_holds_the_cells_own_parameters():
    model = rnnkit.Recurrent(rnnkit.cells.LayerNormLSTMCell, I, H, num_layers=2)
    scripted = torch.jit.script(model)
    assert list(scripted.state_dict()) == list(model.state_dict())
    for (name, p), (_, q) in zip(model.named_parameters(), scripted.named_parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    with torch.no_grad():
        model.cells[0].weight_hh.add_(1.0)  # the same Parameter: the scripted layer sees the change
    x = torch.randn(T, B, I)
    torch.testing.assert_close(scripted(x)[0], model(x)[0])


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = rnnkit.Recurrent(rnnkit.cells.LayerNormGRUCell, I, H, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * H, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def test_a_saved_scripted_model_loads_after_import_rnnkit_in_a_fresh_process_and_takes_new_shapes(tmp_path):
    torch.manual_seed(0)
    model = Classifier()
    scripted = torch.jit.script(model)
    scripted(torch.randn(2, 6, I))
    torch.jit.save(scripted, str(tmp_path / "model.pt"))
    x = torch.randn(5, 11, I)  # another batch and length
    torch.save(x, tmp_path / "x.pt")
    code = ("import sys, torch, rnnkit; d = sys.argv[1]; "
            "m = torch.jit.load(d + '/model.pt'); x = torch.load(d + '/x.pt').requires_grad_(); "
            "out = m(x); out.sum().backward(); torch.save([out.detach(), x.grad], d + '/out.pt')")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = torch.load(tmp_path / "out.pt")
    x.requires_grad_()
    expected = model(x)
    expected.sum().backward()
    torch.testing.assert_close(got, [expected.detach(), x.grad])


def test_the_model_you_scripted_keeps_its_eager_recurrent():
    """torch.jit.script puts the twin in the Recurrent's place in the Python model; called eagerly it runs
    the original, lengths and all."""
    torch.manual_seed(0)
    model = Classifier()
    reference = Classifier()
    reference.load_state_dict(model.state_dict())
    torch.jit.script(model)
    x = torch.randn(3, 6, I)
    lengths = torch.tensor([6, 4, 2])
    torch.testing.assert_close(model.rnn(x, lengths=lengths)[0], reference.rnn(x, lengths=lengths)[0])
    torch.testing.assert_close(model(x), reference(x))


def test_what_the_scripted_recurrent_cannot_run_is_refused_clearly():
    # a user's cell TorchScript cannot compile (its (h, c) argument unannotated): TorchScript's reason, and what to do
    with pytest.raises(rnnkit.UnsupportedBackendError, match=r"(?s)compiles the cell itself.*Annotate"):
        torch.jit.script(rnnkit.Recurrent(USER_CELLS["cifg_lstm"][0], I, H))
    with pytest.raises(rnnkit.UnsupportedBackendError, match="without zoneout"):
        torch.jit.script(rnnkit.Recurrent(ScriptableCIFGCell, I, H, zoneout=0.1))
    for option, value in (("return_states", True), ("stateful", True), ("zoneout", 0.1), ("input_dropout", 0.1),
                          ("recurrent_dropout", 0.1)):
        with pytest.raises(rnnkit.UnsupportedBackendError, match=f"without {option}"):
            torch.jit.script(rnnkit.Recurrent(rnnkit.cells.GRUCell, I, H, **{option: value}))
    scripted = torch.jit.script(rnnkit.Recurrent(rnnkit.cells.GRUCell, I, H))
    with pytest.raises(torch.jit.Error, match="full-length sequences"):
        scripted(torch.randn(T, B, I), None, torch.tensor([6, 4, 2]))
    with pytest.raises(torch.jit.Error, match="input.size\\(-1\\) must be equal to input_size"):
        scripted(torch.randn(T, B, I + 1))
    with pytest.raises(torch.jit.Error, match=r"Expected hx\[0\] size"):
        scripted(torch.randn(T, B, I), torch.randn(1, B + 1, H))
