"""rnnkit against PyTorch's own samples of its recurrent modules (module_db in torch's testing package).

PyTorch describes how to build and call each module it tests, and which calls it must reject
(with which exception and message), in ``torch.testing._internal.common_modules.module_db``.
For RNN, LSTM, GRU and the three cells, rnnkit's module built from the same arguments with the
same seed must hold the same parameters, print the same, return the same outputs and
gradients, and reject the same calls with an exception of the same type whose message matches
PyTorch's pattern.

torch's testing package changes global state when imported (it freezes torch.backends flags,
reseeds, parses sys.argv), so the samples are read in a child process and handed over as plain
tensors, tuples and strings; this process never imports it.
"""
import builtins
import copy
import io
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

import rnnkit
from helpers import assert_within_rounding, rounding_sensitivity

MODULES = ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell")
DTYPES = (torch.float32, torch.float64)

# Runs in the child process: module_db's samples of the six modules, as plain data.
_READ_MODULE_DB = textwrap.dedent("""
    import sys, types, unittest
    import torch
    try:
        import expecttest  # noqa: F401  (torch's testing package imports it)
    except ImportError:  # it only needs the names below to import; no test runs here
        stub = types.ModuleType("expecttest")
        stub.TestCase, stub.ACCEPT = unittest.TestCase, False
        sys.modules["expecttest"] = stub
    from torch.testing._internal.common_modules import module_db

    wanted = {getattr(torch.nn, name): name for name in %r}
    samples = {}
    for info in module_db:
        name = wanted.get(info.module_cls)
        if name is None:
            continue
        for dtype in (torch.float32, torch.float64):
            inputs = [
                ((s.constructor_input.args, s.constructor_input.kwargs),
                 (s.forward_input.args, s.forward_input.kwargs))
                for s in info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=False,
                                                 training=True)
            ]
            errors = []
            for e in info.module_error_inputs_func(info, device="cpu", dtype=dtype, requires_grad=False,
                                                   training=True):
                s = e.module_error_input
                forward = None if s.forward_input is None else (s.forward_input.args, s.forward_input.kwargs)
                errors.append((e.error_on.name, e.error_type.__name__, e.error_regex,
                               (s.constructor_input.args, s.constructor_input.kwargs), forward))
            samples[name, str(dtype)] = {"inputs": inputs, "errors": errors}
    torch.save(samples, sys.argv[1])
""" % (MODULES,))


@pytest.fixture(scope="module")
def module_db_samples(tmp_path_factory):
    path = tmp_path_factory.mktemp("module_db") / "samples.pt"
    subprocess.run([sys.executable, "-c", _READ_MODULE_DB, str(path)], check=True)
    samples = torch.load(path, weights_only=False)
    assert set(samples) == {(name, str(dtype)) for name in MODULES for dtype in DTYPES}
    return samples


def twins(name, args, kwargs, seed=0):
    """torch.nn's module and rnnkit's, built from the same arguments after the same seed."""
    torch.manual_seed(seed)
    theirs = getattr(nn, name)(*args, **kwargs)
    torch.manual_seed(seed)
    ours = getattr(rnnkit, name)(*args, **kwargs)
    return theirs, ours


def fresh_leaves(args, kwargs):
    """The call's tensors as new leaves that require grad (floating ones), so grads can be compared."""
    def leaf(x):
        if isinstance(x, torch.Tensor):
            return x.detach().clone().requires_grad_(x.is_floating_point())
        return x
    return tree_map(leaf, args), tree_map(leaf, kwargs)


def run_with_grads(module, args, kwargs, grad_seed=1, params=None, call_seed=2):
    """Outputs of one call, and the gradients of a fixed random projection of them w.r.t. the
    call's tensors and the module's parameters (in registration order).  ``params`` (a list in that
    order) replaces the module's own; the call runs after ``call_seed``, so dropout draws the same
    masks each time (and the same in torch.nn and rnnkit)."""
    args, kwargs = fresh_leaves(args, kwargs)
    named = dict(module.named_parameters())
    params = list(named.values()) if params is None else [p.detach().requires_grad_() for p in params]
    torch.manual_seed(call_seed)
    out = torch.func.functional_call(module, dict(zip(named, params)), tuple(args), kwargs)
    outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
    g = torch.Generator().manual_seed(grad_seed)
    grad_outputs = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in outs]
    wrt = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad(outs, wrt + params, grad_outputs, allow_unused=True)
    return out, grads


def float64_results(module, args, kwargs):
    """(truth, sensitivities) of a float32 call's outputs and gradients: torch.nn's module run in
    float64 on the same values, and how far each result moves when every value of the data is
    perturbed by float32's rounding (helpers.rounding_sensitivity: the scale of any correct float32
    implementation's error, computed in float64, so the same on every machine)."""
    module = copy.deepcopy(module).double()
    tensors, spec = tree_flatten((args, kwargs))
    floating = [k for k, t in enumerate(tensors) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    params = [p.detach() for p in module.parameters()]

    def results_of(data):
        call = list(tensors)
        for k, t in zip(floating, data):
            call[k] = t
        a, kw = tree_unflatten(call, spec)
        out, grads = run_with_grads(module, a, kw, params=data[len(floating):])
        return [t for t in tree_flatten(out)[0] + list(grads) if isinstance(t, torch.Tensor)]

    data = [tensors[k].double() for k in floating] + params
    return rounding_sensitivity(results_of, data)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", MODULES)
def test_same_module_outputs_and_gradients(module_db_samples, name, dtype, training):
    inputs = module_db_samples[name, str(dtype)]["inputs"]
    assert inputs, "module_db has no sample of this module"
    for (c_args, c_kwargs), (f_args, f_kwargs) in inputs:
        theirs, ours = twins(name, c_args, c_kwargs)
        for m in (theirs, ours):
            m.to(dtype).train(training)
        assert repr(ours) == repr(theirs)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        torch.testing.assert_close(ours.state_dict(), theirs.state_dict(), rtol=0, atol=0)
        where = f"{name}({c_args}, {c_kwargs})"
        out, grads = run_with_grads(ours, f_args, f_kwargs)
        if dtype == torch.float64:  # float64 against float64: agreement to ~1e-15, far inside the defaults
            ref_out, ref_grads = run_with_grads(theirs, f_args, f_kwargs)
            torch.testing.assert_close(out, ref_out, msg=lambda m: f"{where}: outputs differ: {m}")
            torch.testing.assert_close(grads, ref_grads, msg=lambda m: f"{where}: gradients differ: {m}")
            continue
        # float32: two implementations round differently; each must be within rounding of the truth
        truth, sensitivities = float64_results(theirs, f_args, f_kwargs)
        got = [t for t in tree_flatten(out)[0] + list(grads) if isinstance(t, torch.Tensor)]
        assert_within_rounding(got, truth, sensitivities, torch.float32, who=where)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", MODULES)
def test_rejects_what_torch_rejects(module_db_samples, name, dtype):
    errors = module_db_samples[name, str(dtype)]["errors"]
    assert errors, "module_db has no error sample of this module"
    for error_on, error_type, regex, (c_args, c_kwargs), forward in errors:
        for library in (nn, rnnkit):  # torch.nn first: the sample itself must hold
            cls = getattr(library, name)
            with pytest.raises(getattr(builtins, error_type), match=regex):
                module = cls(*c_args, **c_kwargs)
                assert error_on == "FORWARD_ERROR", f"{library.__name__}.{name} accepted {c_args}, {c_kwargs}"
                f_args, f_kwargs = forward
                module(*f_args, **f_kwargs)


@pytest.mark.parametrize("name", MODULES)
def test_built_on_meta_device_and_with_factory_kwargs(module_db_samples, name):
    for (c_args, c_kwargs), _ in module_db_samples[name, str(torch.float32)]["inputs"]:
        with torch.device("meta"):
            theirs, ours = twins(name, c_args, c_kwargs)
        shapes = [(n, p.shape, p.dtype, p.device) for n, p in ours.named_parameters()]
        assert shapes == [(n, p.shape, p.dtype, p.device) for n, p in theirs.named_parameters()]
        ours = getattr(rnnkit, name)(*c_args, **c_kwargs, dtype=torch.float64, device="cpu")
        assert all(p.dtype == torch.float64 for p in ours.parameters())


@pytest.mark.parametrize("name", MODULES)
def test_pickled_module_gives_the_same_outputs(module_db_samples, name):
    (c_args, c_kwargs), (f_args, f_kwargs) = module_db_samples[name, str(torch.float32)]["inputs"][-1]
    _, ours = twins(name, c_args, c_kwargs)
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    copy = torch.load(buffer, weights_only=False)
    assert type(copy) is type(ours)
    torch.testing.assert_close(copy(*f_args, **f_kwargs), ours(*f_args, **f_kwargs), rtol=0, atol=0)
