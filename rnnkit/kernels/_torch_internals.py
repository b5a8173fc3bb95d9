"""The one place the kernels read a private part of torch; tests/kernels/test_torch_internals.py pins it.

``any_batched``: whether a backward's output gradients are vmap's batched tensors (what
``torch.autograd.grad(..., is_grads_batched=True)`` hands each node's backward).  Such tensors have no
storage of their own, so a kernel that reads memory directly (numba, Triton) cannot take them, and
torch has no public test for them.

``in_functorch_transform``: whether a torch.func transform (vmap, grad, jacrev, jacfwd, jvp, hessian)
is running.  Its tensors are wrappers without storage of their own, and an autograd.Function under
it needs vmap and jvp rules; the fused kernels have neither, so they refuse and ``backend="auto"``
runs the reference loop, plain torch ops that every transform handles.  torch has no public test.

``forward_ad_active``: whether a ``torch.autograd.forward_ad.dual_level`` is open (forward-mode AD
outside torch.func), read from the module's level counter: the one cheap test (``unpack_dual`` on
every tensor of every call would cost microseconds, paid by every call).

``autograd_inside_operator``: a context in which torch ops record autograd graphs again, inside the
implementation of a ``torch.library.custom_op`` (which runs with the Autograd dispatch keys excluded, so
``torch.autograd.grad`` there would see no graph).  rnnkit::fused_layer_backward (kernels/opaque.py) takes
a kernel's gradients by running it again under autograd: the torch ops a kernel runs around its fused
loop (a layer norm's projection) must be recorded too.  torch has no public way to lift the exclusion.

``DispatchMode`` and ``fake_tensor_mode``: the kernel generator records a cell's step op by op
(generator/record.py) in a dispatch mode (torch's documented extension point for seeing every aten op,
under a private module path) on meta tensors.  make_fx (and FakeTensorMode) would do, but import
torch._dynamo on their first call (1.4-1.8 s, paid by a process's first generated cell); so does a
TorchDispatchMode subclass unless it opts out of torch.compile's wrapper, as ``DispatchMode`` does.

``module_tables``: an nn.Module's own attribute, parameter, buffer and submodule dicts, what
``named_parameters(recurse=False)``, ``named_buffers(recurse=False)`` and ``named_children()`` iterate.  A
user cell's generated step checks on every call that none of them changed (generator/snapshot.py): the
public iterators build generators and dedup sets, 4x the time of comparing the dicts themselves.

``has_hooks``: whether a module or one inside it has forward or backward hooks, its own or the global ones,
read from the dicts nn.Module keeps them in (``register_forward_hook``, ``register_module_forward_hook`` and
their kin add to them; the handles remove).
torch has no public way to list a module's hooks.  Recurrent calls a cell at every step (its documented
equivalent loop), so a hooked cell runs the loop that does (see Recurrent._runners): a fused or generated
kernel never calls the cell, and one traced from a hooked cell would run the hook once, while tracing.

``constant_for_dynamo``: what ``torch.compiler.assume_constant_result`` does to a function (dynamo then
calls it while it traces and records its result as a constant), without importing torch._dynamo, which that
public function does (1.2-1.8 s, paid by ``import rnnkit`` where the decorated functions are defined).

``tracing_paused``: a context in which torch.jit's tracer records nothing, so that a step can be traced by
itself while torch.onnx.export(..., dynamo=False) traces the model around it (export/onnx_loop.py: the
tracer refuses to nest).  torch.jit's own tracer saves and restores the same state; there is no public way.
"""
from __future__ import annotations

import contextlib

import torch
from torch._C import _functorch
from torch.autograd import forward_ad as _forward_ad
from torch.utils._python_dispatch import TorchDispatchMode


def any_batched(tensors) -> bool:
    return any(t is not None and (_functorch.is_batchedtensor(t) or _functorch.is_legacy_batchedtensor(t))
               for t in tensors)


def in_functorch_transform() -> bool:
    return _functorch.maybe_current_level() is not None


def forward_ad_active() -> bool:
    return _forward_ad._current_level >= 0


class DispatchMode(TorchDispatchMode):
    """TorchDispatchMode without torch.compile's guard: torch wraps each subclass's __torch_dispatch__ in
    ``torch._disable_dynamo``, whose first call imports torch._dynamo (1.4-1.8 s).  rnnkit's recorder runs
    eagerly, outside any compiled region, so it opts out (the classmethod torch reads for this)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False


def module_tables(module: torch.nn.Module) -> tuple:
    """(attributes, parameters, buffers, submodules): the module's own dicts, by name."""
    return module.__dict__, module._parameters, module._buffers, module._modules


_HOOK_TABLES = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")


def has_hooks(module: torch.nn.Module) -> bool:
    """Whether ``module`` or a module inside it has forward (pre-)hooks or backward (pre-)hooks, its own or
    the global ones every module runs (``torch.nn.modules.module.register_module_forward_hook`` and kin)."""
    from torch.nn.modules import module as module_py

    if any(getattr(module_py, "_global" + name, None) for name in _HOOK_TABLES):
        return True
    stack = [module]
    while stack:  # (an explicit walk: modules() builds a generator and a set, several times the cost)
        m = stack.pop()
        tables = m.__dict__
        if any(tables.get(name) for name in _HOOK_TABLES):
            return True
        stack.extend(child for child in m._modules.values() if child is not None)
    return False


def autograd_inside_operator():
    return torch._C._SetExcludeDispatchKeyGuard(torch._C.DispatchKey.AutogradFunctionality, False)


def constant_for_dynamo(fn):
    fn._dynamo_marked_constant = True
    return fn


@contextlib.contextmanager
def tracing_paused():
    outer = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(outer)


__all__ = ["constant_for_dynamo", "tracing_paused", "any_batched", "in_functorch_transform", "forward_ad_active", "autograd_inside_operator", "DispatchMode",
           "module_tables", "has_hooks"]
