"""Shared test helpers: twin layers from one seed, inputs in every form, comparison of everything."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkit
# The rounding-derived tolerances (and why they hold) live in the package, where `rnnkit verify` uses them too.
from rnnkit.verify.rounding import (  # noqa: F401  (re-exported for the tests)
    LOW_PRECISION_ROUNDING_FACTOR, ROUNDING_FACTOR, UNIT_ROUNDOFF, RoundingNoise, rounding_bound, rounding_sensitivity)

MODES = {
    # name: (rnnkit class, torch class, extra constructor kwargs)
    "rnn_tanh": (rnnkit.RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnnkit.RNN, nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (rnnkit.LSTM, nn.LSTM, {}),
    "lstm_proj": (rnnkit.LSTM, nn.LSTM, {"proj_size": 3}),
    "gru": (rnnkit.GRU, nn.GRU, {}),
}
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
I, H, T, B = 4, 5, 6, 3
LENGTHS = [6, 4, 1]  # longest first; the unsorted form shuffles them


def twins(mode, dtype=torch.float32, seed=0, **kwargs):
    ours_cls, torch_cls, extra = MODES[mode]
    kwargs = {**extra, **kwargs}
    torch.manual_seed(seed)
    ours = ours_cls(I, H, dtype=dtype, **kwargs)
    torch.manual_seed(seed)
    ref = torch_cls(I, H, dtype=dtype, **kwargs)
    return ours, ref


def state_shapes(layer, batch):
    D = 2 if layer.bidirectional else 1
    h = (D * layer.num_layers, batch, layer.proj_size or layer.hidden_size)
    if isinstance(layer, (rnnkit.LSTM, nn.LSTM)):
        return [h, (D * layer.num_layers, batch, layer.hidden_size)]
    return [h]


def make_input(layer, form, dtype, gen):
    """(input for the layer, leaf tensors to differentiate, unbatched?)"""
    x = torch.randn(T, B, I, dtype=dtype, generator=gen)
    if form == "unbatched":
        x = x[:, 0]
    return input_from(layer, form, x.clone().requires_grad_())


def input_from(layer, form, leaf):
    """(the layer's input in ``form``, the leaf it is built from): leaf is (T, B, I), (T, I) unbatched."""
    if form == "unbatched":
        return leaf, leaf
    if form == "batched":
        return (leaf.transpose(0, 1) if layer.batch_first else leaf), leaf
    lengths = LENGTHS if form == "packed_sorted" else [4, 6, 1]
    packed = pack_padded_sequence(leaf, lengths, enforce_sorted=(form == "packed_sorted"))
    return packed, leaf


def make_hx(layer, form, dtype, gen):
    shapes = state_shapes(layer, B)
    states = [torch.randn(*s, dtype=dtype, generator=gen) for s in shapes]
    if form == "unbatched":
        states = [s[:, 0] for s in states]
    states = [s.requires_grad_() for s in states]
    return states


def flat(out):
    """Every tensor in a layer's return value, in order."""
    if isinstance(out, PackedSequence):
        return [out.data]
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in flat(o)]


def loss_weights(tensors, gen_seed=123):
    """A fixed random weight per output element (drawn in float64 whatever the dtype, so that a float32
    run and its float64 truth see the same values)."""
    gen = torch.Generator().manual_seed(gen_seed)
    return [torch.randn(t.shape, dtype=torch.float64, generator=gen).to(t.dtype) for t in tensors]


def run_and_grad(layer, inp, leaves, hx_states, params=None, weights=None):
    """(every output tensor, the gradients of a fixed random weighting of them w.r.t. the input leaf,
    the initial states and the parameters).  ``params`` (in registration order) replaces the layer's
    own, ``weights`` the loss's random weights (loss_weights)."""
    hx = None
    if hx_states is not None:
        hx = tuple(hx_states) if len(hx_states) == 2 else hx_states[0]
    named = dict(layer.named_parameters())
    params = list(named.values()) if params is None else params
    out = torch.func.functional_call(layer, dict(zip(named, params)), (inp, hx))
    tensors = flat(out)
    # A fixed random weighting of every output makes each gradient depend on all of them.
    weights = loss_weights(tensors) if weights is None else weights
    loss = sum((t * w).sum() for t, w in zip(tensors, weights))
    grads = torch.autograd.grad(loss, [leaves] + list(hx_states or []) + params, retain_graph=True)
    return tensors, list(grads)


def float64_truth(layer, form, leaf, hx_states):
    """(truth, sensitivities) of run_and_grad on a float32 ``layer`` called in ``form`` on ``leaf`` and
    ``hx_states``: the same computation in float64 on the same values (the float32 values are exact in
    float64), and each result's sensitivity to float32 rounding (rounding_sensitivity)."""
    import copy
    layer64 = copy.deepcopy(layer).double()
    n_hx = len(hx_states or [])
    params = [p.detach() for p in layer64.parameters()]
    out32, _ = run_and_grad(layer, input_from(layer, form, leaf)[0], leaf, hx_states)
    weights = [w.double() for w in loss_weights(out32)]

    def results_of(data):
        x, hx, ps, ws = data[0], data[1:1 + n_hx], data[1 + n_hx:1 + n_hx + len(params)], data[1 + n_hx + len(params):]
        x = x.detach().requires_grad_()
        hx = [s.detach().requires_grad_() for s in hx] if hx_states is not None else None
        ps = [p.detach().requires_grad_() for p in ps]
        tensors, grads = run_and_grad(layer64, input_from(layer64, form, x)[0], x, hx, params=ps, weights=ws)
        return [t.detach() for t in tensors + grads]

    data = [leaf.detach().double()] + [s.detach().double() for s in hx_states or []] + params + weights
    return rounding_sensitivity(results_of, data)


def max_diff(xs, ys):
    assert len(xs) == len(ys)
    worst = 0.0
    for a, b in zip(xs, ys):
        assert a.shape == b.shape, (a.shape, b.shape)
        worst = max(worst, (a - b).abs().max().item() if a.numel() else 0.0)
    return worst


def assert_within_rounding(got, truth, sensitivities, dtype, implementations=1, who="fused"):
    """Every tensor of ``got`` (computed in ``dtype``) within rounding_bound of ``truth`` (float64).
    ``implementations=2`` where ``truth`` is itself a float64 implementation with its own rounding
    (float64 against float64: both errors count)."""
    assert len(got) == len(truth) == len(sensitivities)
    for k, (g, t, s) in enumerate(zip(got, truth, sensitivities)):
        assert g.dtype == dtype and g.shape == t.shape, (k, g.dtype, g.shape, t.shape)
        err = (g.double() - t).abs().max().item() if t.numel() else 0.0
        bound = implementations * rounding_bound(s, dtype)
        assert err <= bound, f"{who}: tensor {k}: error {err:.3g} > bound {bound:.3g}" + (
            f" ({err / bound:.2f}x)" if bound else "")


class _Apply(nn.Module):
    """fn(module, *inputs) as a module's forward: torch.func.functional_call can then swap the
    parameters of ``module`` for any computation written around it."""

    def __init__(self, fn, module):
        super().__init__()
        self.fn, self.module = fn, module

    def forward(self, *inputs):
        return self.fn(self.module, *inputs)


def _float_tensors(out):
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _unique_float_inputs(inputs):
    """The floating-point tensors among ``inputs``, each once (a self-attention passes one tensor as
    query, key and value: one leaf, one gradient)."""
    seen = {}
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            seen.setdefault(id(x), x)
    return list(seen.values())


def outputs_and_grads(fn, module, inputs, params=None, weights=None, grad=True):
    """Every floating-point tensor that ``fn(module, *inputs)`` returns (in pytree order: outputs,
    states, a PackedSequence's data) and, with ``grad``, the gradients of a fixed random weighting of
    them (loss_weights) with respect to each floating-point input that requires grad and each of
    ``module``'s parameters.  ``params`` (in named_parameters order) replaces the parameters and
    ``weights`` the loss's weights.  What float64_truth_of computes again in float64."""
    named = [n for n, _ in module.named_parameters()]
    params = [p for _, p in module.named_parameters()] if params is None else list(params)
    out = torch.func.functional_call(_Apply(fn, module), {f"module.{n}": p for n, p in zip(named, params)},
                                     tuple(inputs))
    tensors = _float_tensors(out)
    if not grad:
        return [t.detach() for t in tensors]
    weights = loss_weights(tensors) if weights is None else weights
    loss = sum((t * w).sum() for t, w in zip(tensors, weights))
    leaves = [x for x in _unique_float_inputs(inputs) if x.requires_grad] + [p for p in params if p.requires_grad]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [t.detach() for t in tensors] + [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]


def reference_copy(module):
    """A float64 copy of ``module`` whose rnnkit layers (every submodule with a ``backend``) run on the
    reference backend: plain torch ops, each of which RoundingNoise rounds (a fused numba kernel is
    one opaque call to it)."""
    import copy
    module64 = copy.deepcopy(module).double()
    for m in module64.modules():
        if isinstance(getattr(m, "backend", None), str):
            m.backend = "reference"
    return module64


def float64_truth_of(fn, module, inputs, grad=True, dtype=torch.float32):
    """(truth, sensitivities) of outputs_and_grads(fn, module, inputs, grad=grad) computed in
    ``dtype``: the same computation in float64 (reference_copy of ``module``, the inputs' values,
    which are exact in float64, the loss weights as ``dtype`` rounds them) and each result's
    sensitivity to rounding at ``dtype`` (rounding_sensitivity).  Non-float inputs (masks, lengths)
    pass as they are.  The float64 runs keep autograd on (as the ``dtype`` run with ``grad``) and
    torch's scaled_dot_product_attention on its op-by-op math path: no fused kernel (torch.nn's eval
    fast paths, SDPA's flash kernel) hides its inner roundings from RoundingNoise."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    module64 = reference_copy(module)
    leaves = _unique_float_inputs(inputs)
    params = [p.detach().double() for p in module.parameters()]
    flags = [p.requires_grad for p in module.parameters()]

    def call(data, weights, with_grad):
        swap = {id(x): d.detach().requires_grad_(x.requires_grad) for x, d in zip(leaves, data)}
        xs = [swap.get(id(x), x) for x in inputs]
        ps = [d.detach().requires_grad_(f) for d, f in zip(data[len(leaves):], flags)]
        with sdpa_kernel([SDPBackend.MATH]):
            return outputs_and_grads(fn, module64, xs, ps, weights, grad=with_grad)

    data = [x.detach().double() for x in leaves] + params
    n = len(data)
    # the loss weights as the ``dtype`` run draws them (loss_weights: by the outputs' shapes, rounded)
    weights = [w.to(dtype).double() for w in loss_weights(call(data, None, False))] if grad else []

    def results_of(moved):
        return call(moved[:n], moved[n:], grad)

    return rounding_sensitivity(results_of, data + weights, dtype=dtype)


def hand_loop(layer, x, directions):
    """The user's own loop over layer.cells (time-major x (T, B, I), full length): outputs and final states
    (each stacked over layers and directions), what Recurrent must equal."""
    finals = []
    for k in range(layer.num_layers):
        outs = []
        for d in range(directions):
            cell = layer.cells[k * directions + d]
            steps = range(x.size(0) - 1, -1, -1) if d else range(x.size(0))
            h, seq = None, [None] * x.size(0)
            for t in steps:
                h = cell(x[t], h)
                seq[t] = h[0] if isinstance(h, tuple) else h
            outs.append(torch.stack(seq))
            finals.append(h if isinstance(h, tuple) else (h,))
        x = torch.cat(outs, -1)
    return x, tuple(torch.stack(s) for s in zip(*finals))
