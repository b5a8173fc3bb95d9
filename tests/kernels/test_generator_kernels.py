"""Issue 18, step 2: kernels generated from a cell's own equations (rnnkit/kernels/generator/), run in
the generic C++ loop (rnnkit::generated_forward/backward).  Generated = reference: outputs, final
states and every gradient, for rnnkit's nine cells and the users' cells of rnnkit/bench/user_cells.py, packed,
both directions, float64 (to rounding) and float32 (within float32's), through Recurrent (layers,
directions) and gradcheck; ops the generator lacks make backend="auto" run the reference loop and a
named backend raise, naming the op."""
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import rnnkit
import rnnkit.cells
from rnnkit.errors import UnsupportedBackendError
from rnnkit.kernels import BACKENDS, REFERENCE
from rnnkit.kernels.ops import extension
from rnnkit.bench.user_cells import USER_CELLS

pytestmark = pytest.mark.skipif(not extension.available(), reason="rnnkit._C is not built")
BATCH_SIZES = [3, 3, 2, 1]
TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=2e-5, atol=2e-5)}


def _vary(module):
    torch.manual_seed(0)
    for p in module.parameters():  # layer norm's gains and shifts start at 1 and 0: vary them
        p.data.add_(0.1 * torch.randn_like(p))
    return module


def _out_and_states(model, x, **kwargs):
    """A layer's (output, final states as a tuple), whether it returns one state or several."""
    out, h_n = model(x, **kwargs)
    return out, h_n if isinstance(h_n, tuple) else (h_n,)


def _outputs_and_grads(run, inputs):
    out, final = run()
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    loss = (out * weights).sum() + sum((s * s).sum() for s in final)
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [out, *final, *[g if g is not None else torch.zeros_like(i) for g, i in zip(grads, inputs)]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", sorted(rnnkit.cells.CELLS))
def test_every_rnnkit_cell_on_its_generated_kernel_equals_the_reference(name, reverse, dtype):
    cell = _vary(rnnkit.cells.CELLS[name](3, 4, dtype=dtype))
    arity = len(cell.equations.state_names)
    x = torch.randn(sum(BATCH_SIZES), 3, dtype=dtype, requires_grad=True)
    state0 = tuple(torch.randn(3, 4, dtype=dtype, requires_grad=True) for _ in range(arity))
    params = list(cell.parameters())

    def on(kernel):
        return lambda: kernel.layer(cell.equations, x, BATCH_SIZES, state0, cell.cell_weights(), reverse)

    got = _outputs_and_grads(on(BACKENDS["generated"]), [x, *state0, *params])
    want = _outputs_and_grads(on(REFERENCE), [x, *state0, *params])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("name", sorted(USER_CELLS))
def test_a_users_cell_in_recurrent_runs_generated_and_equals_the_reference(name, bidirectional, dtype):
    cls, _ = USER_CELLS[name]
    generated = _vary(rnnkit.Recurrent(cls, 3, 4, num_layers=2, bidirectional=bidirectional, backend="generated"))
    generated = generated.to(dtype)
    reference = rnnkit.Recurrent(cls, 3, 4, num_layers=2, bidirectional=bidirectional, backend="reference").to(dtype)
    reference.load_state_dict(generated.state_dict())
    x = torch.randn(5, 3, 3, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([5, 3, 2])
    for kwargs in ({}, {"lengths": lengths}):
        got = _outputs_and_grads(lambda: _out_and_states(generated, x, **kwargs), [x, *generated.parameters()])
        want = _outputs_and_grads(lambda: _out_and_states(reference, x, **kwargs), [x, *reference.parameters()])
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **TOLERANCE[dtype])


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("mode", ["rnn_relu", "rnn_tanh", "lstm", "gru"])
def test_torch_nn_families_on_backend_generated_equal_the_reference(mode, bias):
    """rnnkit's layers with backend="generated": without a bias the step's products feed the activations
    directly (rnn_relu without a bias once lost gradient elements to a g++ 12 vectorizer error on a
    select over a load, which emit_cpp.py now avoids)."""
    cls = {"lstm": rnnkit.LSTM, "gru": rnnkit.GRU}.get(mode, rnnkit.RNN)
    extra = {"nonlinearity": mode[4:]} if mode.startswith("rnn") else {}
    torch.manual_seed(0)
    generated = cls(3, 6, num_layers=2, bias=bias, bidirectional=True, backend="generated", **extra)
    reference = cls(3, 6, num_layers=2, bias=bias, bidirectional=True, backend="reference", **extra)
    reference.load_state_dict(generated.state_dict())
    for shape in ((1, 4, 3), (5, 4, 3)):
        x = torch.randn(*shape, requires_grad=True)
        got = _outputs_and_grads(lambda: _out_and_states(generated, x), [x, *generated.parameters()])
        want = _outputs_and_grads(lambda: _out_and_states(reference, x), [x, *reference.parameters()])
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("name", sorted(USER_CELLS))
def test_an_inference_forward_equals_the_reference(name):
    """Under no_grad the loop keeps one step's rows of what a step hands on (generated_loop.cpp's step
    buffers) instead of all rows: packed, both directions, two layers."""
    cls, _ = USER_CELLS[name]
    generated = _vary(rnnkit.Recurrent(cls, 3, 4, num_layers=2, bidirectional=True, backend="generated"))
    reference = rnnkit.Recurrent(cls, 3, 4, num_layers=2, bidirectional=True, backend="reference")
    reference.load_state_dict(generated.state_dict())
    x = torch.randn(6, 5, 3)
    with torch.no_grad():
        for kwargs in ({}, {"lengths": torch.tensor([6, 5, 3, 3, 1])}):
            (out, h_n), (want, want_h) = generated(x, **kwargs), reference(x, **kwargs)
            torch.testing.assert_close(out, want)
            for a, b in zip(h_n if isinstance(h_n, tuple) else (h_n,), want_h if isinstance(want_h, tuple) else (want_h,)):
                torch.testing.assert_close(a, b)


def test_auto_picks_the_generated_kernel_for_a_users_cell():
    model = rnnkit.Recurrent(USER_CELLS["mgu"][0], 3, 4)
    model(torch.randn(4, 2, 3))
    from rnnkit.kernels.generator.layer import _STEPS, GeneratedStep
    assert all(isinstance(step, GeneratedStep) for cell in model.cells for step in _STEPS[cell].values())


class DropoutInputCell(torch.nn.Module):
    """A user's cell drawing random numbers in training (the generator has no dropout: the reference loop)."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.linear = torch.nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h=None):
        h = x.new_zeros(x.size(0), self.linear.out_features) if h is None else h
        return torch.tanh(self.linear(torch.cat([torch.nn.functional.dropout(x, 0.3, self.training), h], 1)))


def test_a_cell_without_a_generated_kernel_is_traced_once_and_draws_only_its_own_random_numbers(monkeypatch):
    """backend="auto" over a cell the generator refuses: the refusal is kept (tracing again cost ~1.5 ms a
    call), and neither the attempt nor Recurrent's probe of the cell draws the caller's random numbers, so
    one seed gives the first call the numbers of every later one, and of backend="reference"."""
    from rnnkit.kernels.generator import layer
    attempts = []
    compile_step = layer._compile
    monkeypatch.setattr(layer, "_compile", lambda *args: attempts.append(1) or compile_step(*args))
    torch.manual_seed(0)
    model = rnnkit.Recurrent(DropoutInputCell, 3, 4, num_layers=2)
    reference = rnnkit.Recurrent(DropoutInputCell, 3, 4, num_layers=2, backend="reference")
    reference.load_state_dict(model.state_dict())
    x = torch.randn(5, 2, 3)
    outputs = []
    for module in (model, model, model, reference):
        torch.manual_seed(1)
        outputs.append(module(x)[0])
    assert all(torch.equal(outputs[0], out) for out in outputs[1:])
    assert len(attempts) == 2  # once per cell (two layers), not once per call
    with pytest.raises(UnsupportedBackendError, match="bernoulli"):
        rnnkit.Recurrent(DropoutInputCell, 3, 4, backend="generated")(x)


@pytest.mark.parametrize("name", sorted(USER_CELLS))
def test_gradcheck_of_a_users_cell_on_its_generated_kernel(name):
    cls, _ = USER_CELLS[name]
    model = _vary(rnnkit.Recurrent(cls, 3, 4, bidirectional=True, backend="generated").double())
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    params = list(model.parameters())

    def f(x, *ps):
        out, _ = torch.func.functional_call(model, {n: p for (n, _), p in zip(model.named_parameters(), ps)}, (x,))
        return out

    assert torch.autograd.gradcheck(f, (x, *params))


def test_double_backward_through_a_generated_kernel_gets_every_term():
    model = _vary(rnnkit.Recurrent(USER_CELLS["layernorm_candidate_gru"][0], 3, 4, backend="generated").double())
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    params = list(model.parameters())

    def f(x, *ps):
        out, _ = torch.func.functional_call(model, {n: p for (n, _), p in zip(model.named_parameters(), ps)}, (x,))
        return out

    assert torch.autograd.gradgradcheck(f, (x, *params))


@pytest.mark.parametrize("name", ["cifg_lstm", "mgu"])
def test_vectorized_jacobian_and_hessian_of_a_users_cell_equal_the_reference(name):
    """torch.autograd.functional's vectorize=True takes batched output gradients (is_grads_batched), which
    vmap's fallback refuses for the loop's operators (they take lists of tensors): the loop's autograd
    kernel takes them apart itself, the Hessian's through the differentiable backward."""
    results = {}
    for backend in ("generated", "reference"):
        torch.manual_seed(0)
        model = _vary(rnnkit.Recurrent(USER_CELLS[name][0], 3, 4, backend=backend).double())
        x = torch.randn(5, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        jacobian = torch.autograd.functional.jacobian(lambda x: model(x)[0].pow(2).sum(-1), x, vectorize=True)
        hessian = torch.autograd.functional.hessian(lambda x: model(x)[0].pow(3).sum(), x, vectorize=True)
        results[backend] = (jacobian, hessian)
    for got, want in zip(results["generated"], results["reference"]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


class SortCell(nn.Module):
    """A step with an op the generator does not handle (a sort along the features)."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h=None):
        h = x.new_zeros(x.size(0), self.lin.out_features) if h is None else h
        return torch.tanh(self.lin(torch.cat([x, h], 1))).sort(1).values


def test_an_op_the_generator_lacks_falls_back_under_auto_and_raises_when_named():
    x = torch.randn(4, 2, 3)
    auto = rnnkit.Recurrent(SortCell, 3, 4)
    reference = rnnkit.Recurrent(SortCell, 3, 4, backend="reference")
    reference.load_state_dict(auto.state_dict())
    torch.testing.assert_close(auto(x)[0], reference(x)[0])
    with pytest.raises(UnsupportedBackendError, match="sort"):
        rnnkit.Recurrent(SortCell, 3, 4, backend="generated")(x)


def test_tracing_exporting_and_autocast_run_a_users_cell_on_the_reference_loop():
    """The generated loop calls code by its address in this process, so a recorded graph must not hold it:
    under torch.jit.trace and autocast, backend="auto" runs the reference loop (plain torch
    ops, which those record and cast), torch.export a scan over the cell's forward, and
    backend="generated" says why it cannot run."""
    cell = USER_CELLS["mgu"][0]
    model = rnnkit.Recurrent(cell, 3, 4).eval()
    x = torch.randn(5, 2, 3)
    traced = torch.jit.trace(model, (x,), check_trace=False)
    assert "generated" not in str(traced.graph)
    torch.testing.assert_close(traced(x)[0], model(x)[0])
    program = torch.export.export(model, (x,))  # a scan over the cell's own forward: no generated code in it
    assert "generated" not in str(program.graph)
    torch.testing.assert_close(program.module()(x)[0], model(x)[0])
    reference = rnnkit.Recurrent(cell, 3, 4, backend="reference").eval()
    reference.load_state_dict(model.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(model(x)[0], reference(x)[0], rtol=0, atol=0)  # the cell's own autocast
        with pytest.raises(UnsupportedBackendError, match="autocast"):
            rnnkit.Recurrent(cell, 3, 4, backend="generated")(x)
    with pytest.raises(UnsupportedBackendError, match="torch.jit.trace"):
        torch.jit.trace(rnnkit.Recurrent(cell, 3, 4, backend="generated"), (x,), check_trace=False)


class BranchingCell(nn.Module):
    """A step whose Python control flow depends on values: no single graph computes it."""
    # each way Python reads a value: through an aten op (bool, item) or straight from memory (tolist, numpy)
    READS = {"bool": lambda y: y.sum() > 0, "item": lambda y: y[0, 0].item() > 0,
             "tolist": lambda y: y.tolist()[0][0] > 0, "numpy": lambda y: y.detach().numpy()[0, 0] > 0}
    read = "bool"

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h=None):
        h = x.new_zeros(x.size(0), self.lin.out_features) if h is None else h
        y = torch.tanh(self.lin(torch.cat([x, h], 1)))
        return y * 2 if self.READS[self.read](y) else y


class ScaledCell(nn.Module):
    """A step that reads a plain attribute, which tracing freezes into the generated step."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)
        self.scale = 1.0

    def forward(self, x, h=None):
        h = x.new_zeros(x.size(0), self.lin.out_features) if h is None else h
        return torch.tanh(self.lin(torch.cat([x, h], 1))) * self.scale


@pytest.mark.parametrize("read", list(BranchingCell.READS))
def test_value_dependent_control_flow_is_refused_not_frozen(read):
    cell = type("Branching", (BranchingCell,), {"read": read})
    x = torch.randn(5, 3, 4)
    auto = rnnkit.Recurrent(cell, 4, 6)
    reference = rnnkit.Recurrent(cell, 4, 6, backend="reference")
    reference.load_state_dict(auto.state_dict())
    torch.testing.assert_close(auto(x)[0], reference(x)[0], rtol=0, atol=0)  # auto: the reference loop
    with pytest.raises(UnsupportedBackendError, match="reads a tensor.s value into Python"):
        rnnkit.Recurrent(cell, 4, 6, backend="generated")(x)


def test_a_changed_attribute_or_mode_generates_the_step_again():
    x = torch.randn(5, 3, 4)
    generated = rnnkit.Recurrent(ScaledCell, 4, 6, backend="generated")
    reference = rnnkit.Recurrent(ScaledCell, 4, 6, backend="reference")
    reference.load_state_dict(generated.state_dict())
    torch.testing.assert_close(generated(x)[0], reference(x)[0])
    for cell in [*generated.cells, *reference.cells]:
        cell.scale = 0.5
    torch.testing.assert_close(generated(x)[0], reference(x)[0])


def test_a_replaced_parameter_a_new_attribute_and_a_mode_change_reach_the_generated_step():
    """The step's parameters and frozen attributes are read from a snapshot of the cell that stands
    while the cell is made of the same objects (generator/snapshot.py): each change is seen."""
    x = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    generated = rnnkit.Recurrent(ScaledCell, 4, 6, backend="generated").double()
    reference = rnnkit.Recurrent(ScaledCell, 4, 6, backend="reference").double()
    reference.load_state_dict(generated.state_dict())

    def agree():
        out, ref = generated(x)[0], reference(x)[0]
        torch.testing.assert_close(out, ref)
        grads = torch.autograd.grad(out.sum(), [x, generated.cells[0].lin.weight])
        torch.testing.assert_close(grads, torch.autograd.grad(ref.sum(), [x, reference.cells[0].lin.weight]))

    agree()
    weight = torch.randn(6, 10, dtype=torch.float64)
    for model in (generated, reference):
        model.cells[0].lin.weight = nn.Parameter(weight.clone())  # a new Parameter object
    agree()
    for model in (generated, reference):
        model.cells[0].lin.weight.data.mul_(2)  # in place: the same object, the step reads it anew
    agree()
    for model in (generated, reference):
        model.cells[0].scale = 3  # the same value's new object, then a new value
        model.cells[0].lin.extra = 1.5  # an attribute the step does not read: harmless
    agree()
    for model in (generated, reference):
        model.cells[0].lin = nn.Linear(10, 6, dtype=torch.float64)  # a new submodule
    reference.cells[0].lin.load_state_dict(generated.cells[0].lin.state_dict())
    agree()
    generated.eval(), reference.eval()
    agree()


def test_a_users_cell_is_freed_with_its_layer():
    """The generator's per-cell caches (steps, snapshots) hold a cell weakly: none keeps it alive."""
    import gc
    import weakref

    model = rnnkit.Recurrent(USER_CELLS["cifg_lstm"][0], 4, 6, backend="generated")
    model(torch.randn(3, 2, 4, requires_grad=True))[0].sum().backward()
    cell = weakref.ref(model.cells[0])
    del model
    gc.collect()
    assert cell() is None


def test_the_backward_reads_saved_activations_and_the_gates_stay_one_hoisted_slot():
    """LSTM and GRU laid out for the loop: W_ih x_t + b_ih is one hoisted slot (its gates split inside
    the step, not copied out per call), and the backward computes no activation again (it reads the
    forward's, saved): no exp in any backward function, and no gradient buffer for the saved slots."""
    for name in ("LSTMCell", "GRUCell"):
        model = rnnkit.Recurrent(getattr(rnnkit.cells, name), 7, 9, backend="generated")  # sizes no other test uses
        model(torch.randn(3, 2, 7))
        (step, _), = [v for k, v in BACKENDS["generated"]._steps.items()
                      if k[0] is model.cells[0].equations and k[1] is torch.float32 and k[2] == 7]
        kinds = [slot.kind for slot in step.layout.slots]
        assert kinds.count("hoisted") == 1 and "value" not in kinds, kinds
        saved = [s for s, slot in enumerate(step.layout.slots) if slot.kind == "saved"]
        assert len(saved) == (5 if name == "LSTMCell" else 3)
        assert all(step.layout.gradient_starts[s] == 2 for s in saved)
        backward = step.source[step.source.index("void backward_"):step.source.index("}  // namespace")]
        assert "rk_exp(" not in backward and "rk_sigmoid(" not in backward and "rk_tanh(" not in backward


class TailCell(nn.Module):
    """A cell whose hoisted part has a pointwise tail (a gate of x_t alone, a scaled relu of x_t) beside a
    block of W_ih x_t + b that the step reads with the state, and a constant reshaped for the tail."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.ih = nn.Linear(input_size, 3 * hidden_size)
        self.hh = nn.Linear(hidden_size, 2 * hidden_size, bias=False)
        self.scale = nn.Parameter(torch.randn(hidden_size))

    def forward(self, x, h):
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_size)
        a, b, c = self.ih(x).chunk(3, 1)
        gate = torch.sigmoid(a * self.scale.view(1, -1))  # x_t's alone: the prologue
        r, n = self.hh(h).chunk(2, 1)
        return gate * h + (1 - gate) * torch.tanh(b + r * n) + 0.1 * c.relu()


def _generated_step(equations_or_cell, input_size):
    (step, _), = [v for k, v in BACKENDS["generated"]._steps.items()
                  if k[0] is equations_or_cell and k[2] == input_size]
    return step


@pytest.mark.parametrize("name", ["MinGRUCell", "MinLSTMCell", "LayerNormLSTMCell", "LayerNormGRUCell"])
def test_what_does_not_read_the_state_is_the_steps_prologue(name):
    """The pointwise tail of the hoisted part (the min cells' gates, the layer norm of W_ih x_t) runs in
    the generated loop, first at each step, not as torch ops over all rows: torch computes only the
    products with x_t.  Gradient buffers a step alone reads hold one step's rows; the layer norms'
    parameters' gradients are added up in one row per sequence."""
    model = rnnkit.Recurrent(getattr(rnnkit.cells, name), 11, 9, backend="generated")  # sizes no other test uses
    model(torch.randn(3, 2, 11))
    step = _generated_step(model.cells[0].equations, 11)
    assert step.layout.prologue
    assert "prologue" in [slot.kind for slot in step.layout.slots]
    hoisted_ops = {n.target for n in step.plan.hoisted.graph.nodes if n.op == "call_function"}
    assert hoisted_ops <= {torch.ops.aten.addmm.default, torch.ops.aten.mm.default, torch.ops.aten.t.default,
                           torch.ops.aten.permute.default}, hoisted_ops
    assert step.layout.step_rows, "no gradient buffer of one step's rows"
    if name.startswith("LayerNorm"):
        assert step.layout.accumulated


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_hoisted_tail_beside_a_block_the_step_reads_equals_the_reference(dtype):
    generated = _vary(rnnkit.Recurrent(TailCell, 3, 4, num_layers=2, bidirectional=True, backend="generated"))
    generated = generated.to(dtype)
    reference = rnnkit.Recurrent(TailCell, 3, 4, num_layers=2, bidirectional=True, backend="reference").to(dtype)
    reference.load_state_dict(generated.state_dict())
    x = torch.randn(5, 3, 3, dtype=dtype, requires_grad=True)
    for kwargs in ({}, {"lengths": torch.tensor([5, 3, 2])}):
        got = _outputs_and_grads(lambda: _out_and_states(generated, x, **kwargs), [x, *generated.parameters()])
        want = _outputs_and_grads(lambda: _out_and_states(reference, x, **kwargs), [x, *reference.parameters()])
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **TOLERANCE[dtype])
    from rnnkit.kernels.generator.layer import _STEPS
    assert all(step.layout.prologue for step in _STEPS[generated.cells[0]].values())


def test_a_first_call_draws_nothing_from_torchs_random_generator():
    """Tracing a step (the first call of a cell, in every process) uses no random examples: a seeded run
    draws the same numbers after it as without it."""
    fresh = type("FreshTailCell", (TailCell,), {})  # a class no other test traced
    for layer in (rnnkit.Recurrent(fresh, 13, 6, backend="generated"),
                  rnnkit.Recurrent(rnnkit.cells.MinGRUCell, 13, 6, backend="generated")):
        x = torch.randn(3, 2, 13)
        torch.manual_seed(0)
        expected = torch.rand(4)
        torch.manual_seed(0)
        layer(x)[0].sum().backward()
        assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("make", ["rnnkit cell", "user cell"])
def test_a_step_first_built_under_inference_mode_has_its_whole_backward(make):
    """A step is built once per cell and kept: built on a call under torch.inference_mode() (an evaluation
    before training), its backward must still be the whole reverse mode of the step."""
    torch.manual_seed(0)
    cell = rnnkit.cells.LayerNormLSTMCell if make == "rnnkit cell" else type("FreshTail", (TailCell,), {})
    generated = _vary(rnnkit.Recurrent(cell, 7, 3, backend="generated")).double()  # sizes no other test uses
    reference = rnnkit.Recurrent(cell, 7, 3, backend="reference").double()
    reference.load_state_dict(generated.state_dict())
    x = torch.randn(4, 2, 7, dtype=torch.float64, requires_grad=True)
    with torch.inference_mode():
        generated(x.detach())
    got = _outputs_and_grads(lambda: _out_and_states(generated, x), [x, *generated.parameters()])
    want = _outputs_and_grads(lambda: _out_and_states(reference, x), [x, *reference.parameters()])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOLERANCE[torch.float64])


def test_a_cell_with_buffers_runs_on_the_reference_loop():
    cell = USER_CELLS["mgu"][0]

    class WithBuffer(cell):
        def __init__(self, input_size, hidden_size):
            super().__init__(input_size, hidden_size)
            self.register_buffer("offset", torch.zeros(hidden_size))

        def forward(self, x, h):
            return super().forward(x, h) + self.offset

    x = torch.randn(5, 3, 4)
    with pytest.raises(UnsupportedBackendError, match="buffers"):
        rnnkit.Recurrent(WithBuffer, 4, 6, backend="generated")(x)
    rnnkit.Recurrent(WithBuffer, 4, 6)(x)  # auto: the reference loop


def test_a_one_row_step_and_an_empty_batch():
    model = rnnkit.Recurrent(USER_CELLS["mgu"][0], 3, 4, backend="generated")
    reference = rnnkit.Recurrent(USER_CELLS["mgu"][0], 3, 4, backend="reference")
    reference.load_state_dict(model.state_dict())
    for shape in ((1, 1, 3), (6, 1, 3)):
        x = torch.randn(*shape)
        torch.testing.assert_close(model(x)[0], reference(x)[0])


def test_a_new_process_runs_a_cached_cell_without_torch_compilers_import(tmp_path):
    """The step is recorded by rnnkit's own dispatch mode (generator/record.py): a process that finds the
    kernel compiled on disk traces, loads and runs it without importing torch._dynamo (make_fx and
    FakeTensorMode import it, 1.4-1.8 s, most of a first use's time)."""
    script = (
        "import sys, torch, rnnkit\n"
        "from rnnkit.bench.user_cells import USER_CELLS\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "for cls, _ in USER_CELLS.values():\n"
        "    model = rnnkit.Recurrent(cls, 5, 6, backend='generated')\n"
        "    model(torch.randn(4, 2, 5, requires_grad=True))[0].sum().backward()\n"
        "print('torch._dynamo' in sys.modules)\n")
    environment = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    for run in ("compiles", "finds the cache"):
        done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "False", run
    assert list((tmp_path / "rnnkit" / "generated").iterdir())


ACTIVATIONS = {  # each op the generator decomposes (generator/decompose.py) or keeps whole
    "gelu": F.gelu, "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"), "silu": F.silu,
    "softplus": F.softplus, "softplus_beta2_threshold1": lambda v: F.softplus(v, beta=2, threshold=1),
    "hardtanh": F.hardtanh, "logsigmoid": F.logsigmoid, "logaddexp": lambda v: torch.logaddexp(v, 0.5 * v),
    "elu": lambda v: F.elu(v, alpha=0.7), "selu": F.selu, "leaky_relu": lambda v: F.leaky_relu(v, 0.2),
    "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "layer_norm": lambda v: F.layer_norm(v, v.shape[-1:], eps=1e-3),
}


class ActivationCell(nn.Module):
    """h' = act(W [x, h] + b), with act each of ACTIVATIONS."""
    act = "gelu"

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.lin = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, h=None):
        h = x.new_zeros(x.size(0), self.hidden_size) if h is None else h
        return ACTIVATIONS[self.act](2 * self.lin(torch.cat([x, h], 1)))


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_each_activation_generated_equals_the_reference(act):
    """Outputs and all gradients to float64 rounding, inputs spread over both sides of each kink."""
    cell = type("Activation", (ActivationCell,), {"act": act})
    generated = rnnkit.Recurrent(cell, 3, 5, backend="generated").double()
    reference = rnnkit.Recurrent(cell, 3, 5, backend="reference").double()
    reference.load_state_dict(generated.state_dict())
    x = 3 * torch.randn(6, 4, 3, dtype=torch.float64, requires_grad=True)
    got = _outputs_and_grads(lambda: generated(x), [x, *generated.parameters()])
    want = _outputs_and_grads(lambda: reference(x), [x, *reference.parameters()])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOLERANCE[torch.float64])
