"""Differential fuzzing: draw a configuration, run it two ways, compare everything.

A *configuration* is a plain JSON-able dict, drawn from a seed (``draw_config(seed)``) or by
hypothesis (``draw_config(chooser)`` with a chooser over ``data.draw``: the same code draws
both, so the command line and the tests explore the same space).  Two kinds:

- ``"layer"``: an rnnkit RNN/LSTM/GRU with every torch.nn option (mode, sizes, num_layers,
  bidirectional, batch_first, bias, proj_size, nonlinearity, dropout in eval mode), an input
  form (batched, unbatched, packed sorted or unsorted), h0/c0 given or not, float32/float64,
  a backend ("auto" or any registered one), compared with torch.nn's layer of the same
  arguments and parameters (rnnkit.cli.reference.torch_twin).
- ``"recurrent"``: ``Recurrent(cell)`` over every cell class of rnnkit.cells (their options
  drawn from their signatures), with layers, directions, merge, batch_first, the same input
  forms plus padded-with-lengths, compared between its backend and the reference backend,
  and the reference backend with a plain per-sequence loop over the cell modules (torch has
  none of these cells, so that loop is the independent oracle).

Compared: outputs, final states and the gradients of a fixed random weighting of all of
them with respect to the input, h0/c0 and every parameter.  Each tensor passes when
``max |a - b| <= tol * max(1, max |b|)`` with tol = 1e-5 (float32) or 1e-10 (float64):
absolute for values up to 1, relative beyond.  Recurrent's comparison with the plain loop
runs in float64 (it checks the layer's semantics, not the cells' float32 conditioning).
A float32 comparison that exceeds its tolerance is not yet a failure: float32's rounding
differs between machines (vector widths, summation orders, BLAS code paths), and a fixed
tolerance holds only by the luck of one machine's.  The verdict is then the rounding bound:
the float32 result passes when each tensor is within rounding.ROUNDING_FACTOR times its sensitivity
to float32 rounding of the float64 result (the spread of seeded float64 runs in which the data
and every value each op computes are rounded at random, Monte Carlo arithmetic), a bound that
holds for every correct float32 implementation on every machine (rnnkit/verify/rounding.py has the
reasoning and the measurements).

``check(config)`` returns a Result; ``run(n, seed)`` checks ``n`` configurations, example
``i`` drawn from seed ``seed + i`` (so ``--seed K --examples 1`` replays example K).
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import random
from typing import Any, Callable, Optional

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit import cells as _cells
from rnnkit import kernels
from rnnkit.errors import UnsupportedBackendError
from rnnkit.recurrent import MERGES
from rnnkit.verify.rounding import rounding_bound, rounding_sensitivity

TOL = {"float32": 1e-5, "float64": 1e-10}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
LAYER_MODES = ("rnn_tanh", "rnn_relu", "lstm", "gru")
LAYER_FORMS = ("batched", "unbatched", "packed_sorted", "packed_unsorted")
RECURRENT_FORMS = LAYER_FORMS + ("lengths",)
KINDS = ("layer", "recurrent")
MAX = dict(input_size=6, hidden_size=6, num_layers=3, seq_len=7, batch=4)


# ----------------------------------------------------------------------------------------
# choosers: where the draws come from
# ----------------------------------------------------------------------------------------
class RandomChooser:
    """Draws from ``random.Random(seed)``: the command line's source."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def choice(self, name: str, options):
        return self.rng.choice(list(options))

    def integer(self, name: str, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


class HypothesisChooser:
    """Draws through hypothesis' ``data.draw`` (``st.data()``), so failures shrink."""

    def __init__(self, data):
        from hypothesis import strategies as st
        self.data, self.st = data, st

    def choice(self, name: str, options):
        return self.data.draw(self.st.sampled_from(list(options)), label=name)

    def integer(self, name: str, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi), label=name)


# ----------------------------------------------------------------------------------------
# the space
# ----------------------------------------------------------------------------------------
def cell_classes() -> dict:
    """Every cell class rnnkit.cells exports, by class name."""
    return dict(_cells.CELLS)


def _cell_option_space(cls) -> dict:
    """The options a cell's constructor takes beyond sizes and device, with values worth drawing."""
    params = inspect.signature(cls.__init__).parameters
    space = {}
    if "bias" in params:
        space["bias"] = (True, False)
    if "nonlinearity" in params:
        space["nonlinearity"] = ("tanh", "relu")
    if "reset_after" in params:
        space["reset_after"] = (True, False)
    if "forget_bias" in params:
        space["forget_bias"] = (None, 1.0)
    if "recurrent_max_abs" in params:
        space["recurrent_max_abs"] = (None, 1.0)
    return space


def _probe_weights(config: dict):
    """(equations, one layer-direction's weights) of the configuration, built small, for kernel checks."""
    dtype = DTYPES[config["dtype"]]
    if config["kind"] == "layer":
        layer = _build_layer(config, seed=0)
        return layer.equations, layer.layer_weights(0, 0), dtype
    cell = cell_classes()[config["cell"]](config["input_size"], config["hidden_size"],
                                          **_cell_kwargs(config)).to(dtype)
    return getattr(cell, "equations", None), (cell.cell_weights() if hasattr(cell, "cell_weights") else None), dtype


def supported_backends(config: dict) -> list:
    """"auto" and every registered backend whose check accepts this configuration."""
    eq, weights, dtype = _probe_weights(config)
    names = ["auto"]
    x = torch.zeros(2, config["input_size"], dtype=dtype)
    for name, kernel in kernels.BACKENDS.items():
        if eq is None:
            if name == "reference":
                names.append(name)
            continue
        try:
            kernel.check(eq, x, weights)
        except UnsupportedBackendError:
            continue
        names.append(name)
    return names


def draw_config(source, kinds=KINDS) -> dict:
    """One configuration, from an int seed or a chooser (RandomChooser, HypothesisChooser)."""
    c = RandomChooser(source) if isinstance(source, int) else source
    kind = c.choice("kind", kinds)
    config: dict = {"kind": kind}
    if kind == "layer":
        mode = c.choice("mode", LAYER_MODES)
        config["mode"] = mode
    else:
        config["cell"] = c.choice("cell", list(cell_classes()))
    config["input_size"] = c.integer("input_size", 1, MAX["input_size"])
    config["hidden_size"] = c.integer("hidden_size", 1, MAX["hidden_size"])
    config["num_layers"] = c.integer("num_layers", 1, MAX["num_layers"])
    config["bidirectional"] = c.choice("bidirectional", (False, True))
    config["batch_first"] = c.choice("batch_first", (False, True))
    if kind == "layer":
        config["bias"] = c.choice("bias", (True, False))
        config["proj_size"] = 0
        if config["mode"] == "lstm" and config["hidden_size"] > 1:
            config["proj_size"] = c.choice("proj_size", (0, c.integer("proj", 1, config["hidden_size"] - 1)))
        # dropout is drawn with the layer in eval mode, where it must have no effect (torch.nn's rule)
        config["dropout"] = c.choice("dropout", (0.0, 0.5)) if config["num_layers"] > 1 else 0.0
        forms = LAYER_FORMS
    else:
        options = {}
        for name, values in _cell_option_space(cell_classes()[config["cell"]]).items():
            options[name] = c.choice(name, values)
        if options.get("bias") is False:
            options.pop("forget_bias", None)  # forget_bias needs the bias parameters
        config["cell_kwargs"] = options
        config["merge"] = c.choice("merge", tuple(MERGES)) if config["bidirectional"] else "concat"
        forms = RECURRENT_FORMS
    config["form"] = c.choice("form", forms)
    config["seq_len"] = c.integer("seq_len", 1, MAX["seq_len"])
    config["batch"] = 1 if config["form"] == "unbatched" else c.integer("batch", 1, MAX["batch"])
    if config["form"] in ("packed_sorted", "packed_unsorted", "lengths"):
        T = config["seq_len"]
        lengths = [c.integer(f"length{b}", 1, T) for b in range(config["batch"])]
        lengths[c.integer("longest", 0, config["batch"] - 1)] = T  # one sequence spans the whole input
        if config["form"] == "packed_sorted":
            lengths.sort(reverse=True)
        config["lengths"] = lengths
    config["with_hx"] = c.choice("with_hx", (False, True))
    config["dtype"] = c.choice("dtype", tuple(DTYPES))
    config["backend"] = c.choice("backend", supported_backends(config))
    config["seed"] = c.integer("seed", 0, 2**31 - 1)
    return config


def group_name(config: dict) -> str:
    """The row of the summary table a configuration counts in."""
    if config["kind"] == "layer":
        name = {"rnn_tanh": "RNN(tanh)", "rnn_relu": "RNN(relu)", "lstm": "LSTM", "gru": "GRU"}[config["mode"]]
        return name + ("+proj" if config.get("proj_size") else "")
    return f"Recurrent({config['cell']})"


# ----------------------------------------------------------------------------------------
# building and running
# ----------------------------------------------------------------------------------------
def _cell_kwargs(config: dict) -> dict:
    return dict(config.get("cell_kwargs", {}))


def _build_layer(config: dict, seed: int):
    mode = config["mode"]
    cls = {"rnn_tanh": rnnkit.RNN, "rnn_relu": rnnkit.RNN, "lstm": rnnkit.LSTM, "gru": rnnkit.GRU}[mode]
    kwargs = dict(num_layers=config["num_layers"], bias=config["bias"], batch_first=config["batch_first"],
                  bidirectional=config["bidirectional"], dropout=config.get("dropout", 0.0),
                  dtype=DTYPES[config["dtype"]], backend=config.get("backend", "auto"))
    if mode.startswith("rnn"):
        kwargs["nonlinearity"] = mode[4:]
    if config.get("proj_size"):
        kwargs["proj_size"] = config["proj_size"]
    torch.manual_seed(seed)
    return cls(config["input_size"], config["hidden_size"], **kwargs).eval()


def _build_recurrent(config: dict, seed: int):
    cls = cell_classes()[config["cell"]]
    torch.manual_seed(seed)
    layer = rnnkit.Recurrent(cls, config["input_size"], config["hidden_size"], config["num_layers"],
                             bidirectional=config["bidirectional"], batch_first=config["batch_first"],
                             merge=config["merge"], backend=config["backend"], **_cell_kwargs(config))
    return layer.to(DTYPES[config["dtype"]]).eval()


def _state_shapes(config: dict, layer) -> list:
    """Shapes (layers*directions, batch, *) of the initial state tensors."""
    D = 2 if config["bidirectional"] else 1
    B = config["batch"]
    if config["kind"] == "layer":
        H, P = config["hidden_size"], config.get("proj_size") or config["hidden_size"]
        shapes = [(D * config["num_layers"], B, P)]
        if config["mode"] == "lstm":
            shapes.append((D * config["num_layers"], B, H))
        return shapes
    first = layer.cells[0]
    probe = first(torch.zeros(1, config["input_size"], dtype=DTYPES[config["dtype"]]), None)
    states = (probe,) if isinstance(probe, torch.Tensor) else probe
    return [(D * config["num_layers"], B) + tuple(s.shape[1:]) for s in states]


@dataclasses.dataclass
class Inputs:
    x: torch.Tensor        # the leaf: (T, B, I) time-major, or (T, I) unbatched
    hx: list               # leaves of the initial state, [] when not given

    def layer_input(self, config: dict):
        """The first argument of the layer call, in the configuration's form, built from the leaf."""
        form = config["form"]
        if form == "unbatched":
            return self.x  # (T, I): batch_first does not apply
        if form in ("packed_sorted", "packed_unsorted"):
            return pack_padded_sequence(self.x, config["lengths"], enforce_sorted=form == "packed_sorted")
        return self.x.transpose(0, 1) if config["batch_first"] else self.x

    def call_kwargs(self, config: dict) -> dict:
        if config["form"] == "lengths":
            return {"lengths": torch.tensor(config["lengths"])}
        return {}

    def hx_arg(self):
        if not self.hx:
            return None
        return self.hx[0] if len(self.hx) == 1 else tuple(self.hx)


def make_inputs(config: dict, layer) -> Inputs:
    gen = torch.Generator().manual_seed(config["seed"] + 1)
    dtype = DTYPES[config["dtype"]]
    T, B, I = config["seq_len"], config["batch"], config["input_size"]
    x = torch.randn(T, B, I, dtype=dtype, generator=gen)
    if config["form"] == "unbatched":
        x = x[:, 0]
    hx = []
    if config["with_hx"]:
        for shape in _state_shapes(config, layer):
            s = torch.randn(*shape, dtype=dtype, generator=gen)
            hx.append(s[:, 0] if config["form"] == "unbatched" else s)
    return Inputs(x.clone().requires_grad_(), [s.clone().requires_grad_() for s in hx])


def _flat(out) -> list:
    if isinstance(out, PackedSequence):
        return [out.data]
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _flat(o)]


def _canonical(config: dict, output, h_n) -> list:
    """[output as (T, B, F) time-major padded with zeros, each final state (L*D, B, *)]."""
    if isinstance(output, PackedSequence):
        output, _ = pad_packed_sequence(output, total_length=config["seq_len"])
    elif config["form"] == "unbatched":
        output = output.unsqueeze(1)
    elif config["batch_first"]:
        output = output.transpose(0, 1)
    states = [h_n] if isinstance(h_n, torch.Tensor) else list(h_n)
    if config["form"] == "unbatched":
        states = [s.unsqueeze(1) for s in states]
    return [output] + states


def _loss(tensors: list) -> torch.Tensor:
    # A fixed weighting, so each gradient depends on every output.  Drawn in float32 whatever the
    # dtype, so a float64 run of the same configuration weighs its outputs by the very same numbers.
    gen = torch.Generator().manual_seed(123)
    return sum((t * torch.randn(t.shape, generator=gen).to(t.dtype)).sum() for t in tensors)


def _grads(loss, inputs: Inputs, params: list) -> list:
    leaves = [inputs.x] + list(inputs.hx) + list(params)
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]


def run_module(config: dict, layer, inputs: Inputs):
    """(canonical outputs and states, gradients wrt input, hx and parameters) of one call."""
    output, h_n = layer(inputs.layer_input(config), inputs.hx_arg(), **inputs.call_kwargs(config))[:2]
    tensors = _canonical(config, output, h_n)
    params = [p for _, p in sorted(layer.named_parameters())]
    return tensors, _grads(_loss(tensors), inputs, params)


def run_oracle(config: dict, layer, inputs: Inputs):
    """Recurrent's semantics, written as plainly as possible: each sequence alone, each step a cell call."""
    D = 2 if config["bidirectional"] else 1
    T = config["seq_len"]
    B = 1 if config["form"] == "unbatched" else config["batch"]
    x = inputs.x.unsqueeze(1) if config["form"] == "unbatched" else inputs.x  # (T, B, I)
    lengths = config.get("lengths") or [T] * B
    hx = [s.unsqueeze(1) for s in inputs.hx] if config["form"] == "unbatched" else list(inputs.hx)
    merge = MERGES[config["merge"]]
    outputs, per_seq_final = [], []
    for b in range(B):
        seq = x[: lengths[b], b]  # (L_b, I)
        seq_finals = []
        for k in range(config["num_layers"]):
            outs = []
            for d in range(D):
                idx = k * D + d
                cell = layer.cells[idx]
                state = None
                if hx:
                    state = hx[0][idx, b:b + 1] if len(hx) == 1 else tuple(s[idx, b:b + 1] for s in hx)
                steps = range(lengths[b] - 1, -1, -1) if d == 1 else range(lengths[b])
                step_out = [None] * lengths[b]
                for t in steps:
                    state = cell(seq[t:t + 1], state)
                    step_out[t] = state if isinstance(state, torch.Tensor) else state[0]
                outs.append(torch.cat(step_out))  # (L_b, H)
                seq_finals.append((state,) if isinstance(state, torch.Tensor) else tuple(state))
            seq = merge(outs)
        pad = seq.new_zeros(T - lengths[b], seq.shape[1])
        outputs.append(torch.cat([seq, pad]))  # (T, F)
        per_seq_final.append(seq_finals)
    output = torch.stack(outputs, 1)  # (T, B, F)
    n_states = len(per_seq_final[0][0])
    states = [torch.stack([torch.cat([per_seq_final[b][idx][j] for b in range(B)]) for idx in range(len(layer.cells))])
              for j in range(n_states)]
    tensors = [output] + states
    params = [p for _, p in sorted(layer.named_parameters())]
    return tensors, _grads(_loss(tensors), inputs, params)


def _exceeds(xs: list, ys: list, tol: float) -> bool:
    """Whether any pair differs by more than tol * max(1, max |y|): tol absolute for values up to 1,
    relative beyond (a float32 gradient of 200 has an ulp of 1.5e-5, so no absolute 1e-5 can hold)."""
    if len(xs) != len(ys):
        return True
    for a, b in zip(xs, ys):
        if a.shape != b.shape:
            return True
        if a.numel():
            scale = max(1.0, b.abs().max().item())
            d = (a - b).abs().max().item()
            if not d <= tol * scale:  # NaN fails
                return True
    return False


def _scaled_diff(xs: list, ys: list) -> float:
    """The smallest tol for which _exceeds(xs, ys, tol) is False."""
    worst = 0.0
    for a, b in zip(xs, ys):
        if a.numel():
            d = (a - b).abs().max().item() / max(1.0, b.abs().max().item())
            worst = max(worst, d if d == d else float("inf"))
    return worst


def _max_diff(xs: list, ys: list) -> float:
    if len(xs) != len(ys):
        return float("inf")
    worst = 0.0
    for a, b in zip(xs, ys):
        if a.shape != b.shape:
            return float("inf")
        if a.numel():
            d = (a - b).abs().max().item()
            worst = max(worst, d if d == d else float("inf"))  # NaN counts as a mismatch
    return worst


# ----------------------------------------------------------------------------------------
# one check
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
    config: dict
    status: str                      # "pass", "fail", "unsupported", "error"
    out_diff: float = 0.0            # max |difference| over outputs and final states
    grad_diff: float = 0.0           # max |difference| over every gradient
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "unsupported")

    def replay(self) -> str:
        return json.dumps(self.config, sort_keys=True)


def _compare(config, pairs: list) -> Result:
    """pairs: (what, (outputs, grads), (outputs, grads)[, tolerance[, rounding]]); the tolerance defaults to
    the dtype's.  ``rounding``, for a float32 result, is the verdict where the tolerance is exceeded: a
    function of the first (outputs, grads) returning None when they are within float32's rounding of the
    float64 result, else what exceeds it (_rounding_excess)."""
    out_diff = grad_diff = 0.0
    bad = []
    for what, a, b, *rest in pairs:
        tol = rest[0] if rest and rest[0] is not None else TOL[config["dtype"]]
        rounding = rest[1] if len(rest) > 1 else None
        d_out, d_grad = _max_diff(a[0], b[0]), _max_diff(a[1], b[1])
        out_diff, grad_diff = max(out_diff, d_out), max(grad_diff, d_grad)
        if _exceeds(a[0], b[0], tol) or _exceeds(a[1], b[1], tol):
            excess = rounding(a) if rounding is not None else "no rounding bound"
            if excess is not None:
                bad.append(f"{what}: outputs {d_out:.3g}, gradients {d_grad:.3g} (tolerance {tol:g}"
                           + (f"; {excess})" if rounding is not None else ")"))
    return Result(config, "fail" if bad else "pass", out_diff, grad_diff, "; ".join(bad))


def _rounding_excess(config: dict, layer64, inputs64: Inputs, got, samples: int = 4, seed: int = 0):
    """None when every tensor of ``got`` (outputs and states, then gradients: run_module's, in float32) is
    within rounding_bound of the float64 result of ``layer64`` (the same layer in float64, plain torch ops)
    on ``inputs64`` (the same values); else the worst tensor's error and bound.  The sensitivities:
    rounding.rounding_sensitivity over the inputs, states and every parameter."""
    c64 = dict(config, dtype="float64")
    layer = copy.deepcopy(layer64)  # copied here: under RoundingNoise a copy's clones would round again
    n_state = len(inputs64.hx)

    def results_of(data):
        x, states, params = data[0], data[1:1 + n_state], data[1 + n_state:]
        for p, value in zip(layer.parameters(), params):
            p.data = value  # no op dispatched: the values rounding_sensitivity drew, unrounded again
            p.grad = None
        inputs = Inputs(x.detach().requires_grad_(), [s.detach().requires_grad_() for s in states])
        outputs, grads = run_module(c64, layer, inputs)
        return [t.detach() for t in list(outputs) + list(grads)]

    data = [inputs64.x.detach(), *[s.detach() for s in inputs64.hx], *[p.detach() for p in layer64.parameters()]]
    truth, sensitivities = rounding_sensitivity(results_of, data, samples=samples, seed=seed)
    got = list(got[0]) + list(got[1])
    worst = None
    for k, (g, t, s) in enumerate(zip(got, truth, sensitivities)):
        if not t.numel():
            continue
        bound = rounding_bound(s, torch.float32)
        err = (g.detach().double() - t).abs().max().item()
        if not err <= bound and (worst is None or not err / bound <= worst[0]):  # NaN is the worst
            worst = (err / bound if bound else float("inf"), k, err, bound)
    if worst is None:
        return None
    return f"tensor {worst[1]}: {worst[2]:.3g} from the float64 result, beyond float32's rounding ({worst[3]:.3g})"


def _float64(inputs: Inputs) -> Inputs:
    return Inputs(inputs.x.detach().double().requires_grad_(),
                  [s.detach().double().requires_grad_() for s in inputs.hx])


def check(config: dict) -> Result:
    """Run one configuration both ways and compare outputs, states and all gradients."""
    config = json.loads(json.dumps(config))  # a private, JSON-clean copy
    try:
        if config["kind"] == "layer":
            from rnnkit.cli.reference import torch_twin
            ours = _build_layer(config, config["seed"])
            twin = torch_twin(ours).eval()
            inputs = make_inputs(config, ours)
            got = run_module(config, ours, inputs)
            want = run_module(config, twin, inputs)
            rounding = None
            if config["dtype"] == "float32":  # the verdict beyond the tolerance: the rounding bound
                def rounding(result):
                    return _rounding_excess(config, copy.deepcopy(twin).double(), _float64(inputs), result)
            return _compare(config, [(f"backend {config['backend']!r} vs torch.nn", got, want, None, rounding)])
        layer = _build_recurrent(config, config["seed"])
        inputs = make_inputs(config, layer)
        got = run_module(config, layer, inputs)
        pairs = []
        backend = config["backend"]
        layer.backend = "reference"
        ref = run_module(config, layer, inputs) if backend != "reference" else None
        # Recurrent's semantics (packing, lengths, directions, merge, states) against the plain loop, in
        # float64 whatever the drawn dtype: the cells' own float32 conditioning (a layer norm divides by
        # sqrt(var + 1e-5)) is not what this comparison is about, and float64 leaves no rounding to hide in.
        c64 = dict(config, dtype="float64")
        layer64 = copy.deepcopy(layer).double()
        in64 = _float64(inputs)
        ref64, oracle64 = run_module(c64, layer64, in64), run_oracle(c64, layer64, in64)
        if ref is not None and config["dtype"] == "float32":
            # The float32 reference has rounding error of its own, large where a layer norm over few
            # features amplifies it; the backend passes when it is as close to the float64 result as the
            # float32 reference is (within 4x), and never needs to be closer than the dtype's tolerance;
            # beyond that, when it is within float32's rounding of the float64 result (_rounding_excess).
            own = max(_scaled_diff(ref[0], ref64[0]), _scaled_diff(ref[1], ref64[1]))
            tol = max(TOL["float32"], 4 * own)
            pairs.append((f"backend {backend!r} (float32) vs 'reference' in float64", got, ref64, tol,
                          lambda result: _rounding_excess(config, layer64, in64, result)))
        elif ref is not None:
            pairs.append((f"backend {backend!r} vs 'reference'", got, ref))
        pairs.append(("'reference' vs a per-sequence loop of cell calls (float64)", ref64, oracle64, TOL["float64"]))
        return _compare(config, pairs)
    except UnsupportedBackendError as e:
        return Result(config, "unsupported", message=str(e))
    except Exception as e:  # a crash is a finding too: reported with its configuration
        return Result(config, "error", float("inf"), float("inf"), f"{type(e).__name__}: {e}")


def run(examples: int, seed: int = 0, kinds=KINDS,
        progress: Optional[Callable[[int, Result], Any]] = None) -> list:
    """Check ``examples`` configurations; example i is drawn from seed ``seed + i``."""
    results = []
    for i in range(examples):
        result = check(draw_config(seed + i, kinds))
        result.config.setdefault("example_seed", seed + i)
        results.append(result)
        if progress is not None:
            progress(i, result)
    return results


# ----------------------------------------------------------------------------------------
# the summary
# ----------------------------------------------------------------------------------------
def summarize(results: list) -> list:
    """Rows (group, configs, passed, failed, unsupported, max out diff, max grad diff), a total last."""
    groups: dict = {}
    for r in results:
        groups.setdefault(group_name(r.config), []).append(r)

    def row(name, rs):
        finite = [r for r in rs if r.status in ("pass", "fail")]
        return (name, len(rs), sum(r.status == "pass" for r in rs), sum(r.status in ("fail", "error") for r in rs),
                sum(r.status == "unsupported" for r in rs),
                max((r.out_diff for r in finite), default=0.0), max((r.grad_diff for r in finite), default=0.0))

    rows = [row(name, rs) for name, rs in sorted(groups.items())]
    rows.append(row("total", results))
    return rows


def format_table(rows: list) -> str:
    header = ("configuration", "runs", "pass", "fail", "unsupported", "max |Δ out|", "max |Δ grad|")
    cells = [header] + [(r[0], str(r[1]), str(r[2]), str(r[3]), str(r[4]), f"{r[5]:.2e}", f"{r[6]:.2e}")
                        for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = []
    for k, c in enumerate(cells):
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))))
        if k == 0 or k == len(cells) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


__all__ = ["TOL", "KINDS", "RandomChooser", "HypothesisChooser", "cell_classes", "draw_config", "check",
           "run", "summarize", "format_table", "Result", "group_name", "supported_backends"]
