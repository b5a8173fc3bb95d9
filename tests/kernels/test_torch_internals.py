"""Pins the private parts of torch that rnnkit/kernels/_torch_internals.py reads: if a torch release
moves them, this fails, not a silent wrong choice of kernel."""
import subprocess
import sys

import torch
import torch.autograd.forward_ad as fwAD
from torch.func import grad, jvp, vmap

from rnnkit.kernels import _torch_internals as internals


def test_any_batched_sees_the_gradients_of_is_grads_batched():
    seen = []

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x * 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, g):
            seen.append(internals.any_batched([g]))
            return g * 2

    x = torch.randn(3, requires_grad=True)
    y = Probe.apply(x)
    torch.autograd.grad(y, x, torch.eye(3), retain_graph=True, is_grads_batched=True)
    torch.autograd.grad(y, x, torch.ones(3))
    assert seen == [True, False]
    assert not internals.any_batched([None, torch.randn(2)])


def test_in_functorch_transform_inside_each_transform_only():
    inside = []

    def probe(t):
        inside.append(internals.in_functorch_transform())
        return (t * 2).sum()

    x = torch.randn(3)
    probe(x)
    vmap(probe)(torch.randn(2, 3))
    grad(probe)(x)
    jvp(probe, (x,), (x,))
    assert inside == [False, True, True, True]
    assert not internals.in_functorch_transform()


def test_forward_ad_active_inside_a_dual_level_only():
    assert not internals.forward_ad_active()
    with fwAD.dual_level():
        assert internals.forward_ad_active()
    assert not internals.forward_ad_active()


def test_autograd_inside_operator_records_the_ops_a_custom_op_runs():
    """Inside a custom operator's implementation torch ops record no graph (the Autograd keys are
    excluded); inside autograd_inside_operator they do, and the exclusion is back afterwards."""
    seen = []

    @torch.library.custom_op("rnnkit_test::probe_autograd", mutates_args=())
    def probe(x: torch.Tensor) -> torch.Tensor:
        leaf = x.detach().requires_grad_()
        with torch.enable_grad():
            seen.append((leaf * 2).requires_grad)
            with internals.autograd_inside_operator():
                y = torch.nn.functional.layer_norm(leaf * 2, (3,)).pow(2).sum()
                seen.append(y.requires_grad)
                g, = torch.autograd.grad(y, leaf)
            seen.append((leaf * 2).requires_grad)
        return g

    x = torch.randn(3, dtype=torch.float64)
    got = probe(x)
    want, = torch.autograd.grad(torch.nn.functional.layer_norm(x.requires_grad_() * 2, (3,)).pow(2).sum(), x)
    assert seen == [False, True, False]
    torch.testing.assert_close(got, want)


def test_a_dispatch_mode_sees_each_aten_op_without_importing_torch_dynamo():
    """torch wraps a TorchDispatchMode subclass's __torch_dispatch__ in torch._disable_dynamo unless
    _should_skip_dynamo says no; the wrapper's first call imports torch._dynamo (1.4-1.8 s)."""
    script = (
        "import sys, torch\n"
        "from rnnkit.kernels._torch_internals import DispatchMode\n"
        "seen = []\n"
        "class Seen(DispatchMode):\n"
        "    def __torch_dispatch__(self, func, types, args=(), kwargs=None):\n"
        "        seen.append(str(func))\n"
        "        return func(*args, **(kwargs or {}))\n"
        "with Seen():\n"
        "    torch.sigmoid(torch.ones(2) + 1)\n"
        "print(seen, 'torch._dynamo' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "'aten.add.Tensor', 'aten.sigmoid.default'] False" in done.stdout


def test_module_tables_are_what_the_public_iterators_read():
    module = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    module.scale = 0.5
    for m in (module, module[0], module[1]):
        attributes, parameters, buffers, submodules = internals.module_tables(m)
        assert list(parameters.items()) == list(m.named_parameters(recurse=False))
        assert list(buffers.items()) == list(m.named_buffers(recurse=False))
        assert list(submodules.items()) == list(m.named_children())
        assert attributes is vars(m)
    assert internals.module_tables(module)[0]["scale"] == 0.5
    module[0].weight = torch.nn.Parameter(torch.zeros(3, 2))  # a new parameter: in the same dict
    assert internals.module_tables(module[0])[1]["weight"] is module[0].weight


def test_tracing_paused_records_nothing_and_lets_a_trace_run_inside_a_trace():
    seen = []

    def inner(x):
        return x * 3

    def outer(x):
        with internals.tracing_paused():
            seen.append(torch.jit.is_tracing())
            nested = torch.jit.trace(inner, torch.zeros(2))  # the tracer refuses to nest unless paused
            torch.sin(x)  # not recorded
        seen.append(torch.jit.is_tracing())
        return nested(x) + 1

    traced = torch.jit.trace(outer, torch.zeros(2), check_trace=False)
    assert seen == [False, True]
    assert "aten::sin" not in str(traced.graph)
    torch.testing.assert_close(traced(torch.ones(2)), torch.full((2,), 4.0))


def test_constant_for_dynamo_marks_as_assume_constant_result_does():
    def public(x):
        return x

    def ours(x):
        return x

    marked = torch.compiler.assume_constant_result(public)
    internals.constant_for_dynamo(ours)
    added = {k: v for k, v in vars(marked).items()}
    assert added and added == vars(ours)


def test_has_hooks_sees_every_kind_of_module_hook_inside_a_module_until_removed():
    outer = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sequential(torch.nn.Tanh()))
    inner = outer[1][0]
    assert not internals.has_hooks(outer)
    for register in (lambda m: m.register_forward_hook(lambda *a: None),
                     lambda m: m.register_forward_hook(lambda *a, **k: None, with_kwargs=True),
                     lambda m: m.register_forward_pre_hook(lambda *a: None),
                     lambda m: m.register_full_backward_hook(lambda *a: None),
                     lambda m: m.register_full_backward_pre_hook(lambda *a: None)):
        handle = register(inner)
        assert internals.has_hooks(outer) and internals.has_hooks(inner) and not internals.has_hooks(outer[0])
        handle.remove()
        assert not internals.has_hooks(outer)
    from torch.nn.modules import module as module_py  # the global hooks, which every module runs

    for register in (module_py.register_module_forward_hook, module_py.register_module_forward_pre_hook,
                     module_py.register_module_full_backward_hook, module_py.register_module_full_backward_pre_hook):
        handle = register(lambda *a: None)
        assert internals.has_hooks(outer[0])
        handle.remove()
        assert not internals.has_hooks(outer)
