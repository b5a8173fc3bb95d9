"""The one time loop, and the driver of layers and directions around it.

Every sequence is handled in packed form: ``x`` is (N, features) with the rows of
step t forming one block of ``batch_sizes[t]`` rows (sequences sorted longest first,
as in torch's PackedSequence).  Padded input of T steps and batch B is the same
thing with ``batch_sizes = [B] * T``, so padded and packed share all the code.
"""
from __future__ import annotations

import weakref
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

State = tuple  # tuple[Tensor, ...]; element 0 is the step's output


def scan(step: Callable[[Tensor, State], State], x: Tensor, batch_sizes: Sequence[int],
         state0: State, reverse: bool = False, keep_states: bool = False):
    """Run ``state = step(x_t, state)`` over time; return (outputs (N, H), final state).

    With ``keep_states`` the outputs are every state component at every step, a tuple
    like the state (e.g. all h_t and all c_t), each (N, *).

    ``state0`` holds one row per sequence (batch_sizes[0] rows).  Going forward the
    batch shrinks as sequences end, and each sequence's last state is kept; going in
    reverse each sequence starts at its own last step, so rows join as the batch grows.
    Outputs are written in input order in both directions.
    """
    # One split, not a slice per step: the backward of a slice writes a gradient the size of
    # all of x, which made the backward quadratic in the number of steps; split's is one cat.
    x_steps = x.split([int(b) for b in batch_sizes])
    steps = range(len(batch_sizes) - 1, -1, -1) if reverse else range(len(batch_sizes))
    outputs: list = [None] * len(batch_sizes)
    finished: list = []  # forward: final states of sequences that ended early, in order of ending
    state = state0
    if reverse:
        state = tuple(s[: batch_sizes[-1]] for s in state0)
    for t in steps:
        b = batch_sizes[t]
        rows = state[0].size(0)
        if b < rows:  # forward: the last rows' sequences have ended
            finished.append(tuple(s[b:] for s in state))
            state = tuple(s[:b] for s in state)
        elif b > rows:  # reverse: longer sequences begin here
            state = tuple(torch.cat((s, s0[rows:b])) for s, s0 in zip(state, state0))
        state = step(x_steps[t], state)
        outputs[t] = state if keep_states else state[0]
    if finished:
        state = tuple(torch.cat((s,) + tuple(f[k] for f in reversed(finished)))
                      for k, s in enumerate(state))
    if keep_states:
        return tuple(torch.cat(parts) for parts in zip(*outputs)), state
    return torch.cat(outputs), state


def packed_batch_sizes(data: Tensor, batch_sizes: Tensor, who: str) -> list:
    """A PackedSequence's ``batch_sizes`` as a list of ints, once its layout is checked against ``data``.

    The kernels index rows by these sizes without bounds checks, so nothing inconsistent may reach
    them: one int64 size per step on the CPU, at least one step, none negative, none larger than
    the step before (sequences sorted longest first), summing to ``data``'s rows.  torch.nn rejects
    the same layouts (with messages about the reshape that failed) except a sum below the rows,
    whose extra rows it ignores; here that is an error too.
    """
    if not isinstance(batch_sizes, Tensor) or batch_sizes.dim() != 1 or batch_sizes.dtype != torch.int64:
        got = (f"a {batch_sizes.dim()}-D {batch_sizes.dtype} tensor" if isinstance(batch_sizes, Tensor)
               else type(batch_sizes).__name__)
        raise RuntimeError(f"{who}: a PackedSequence's batch_sizes should be a 1-D int64 tensor "
                           f"(as pack_padded_sequence makes it), got {got}")
    if batch_sizes.device.type != "cpu":
        raise RuntimeError(f"{who}: a PackedSequence's batch_sizes should be on the CPU, got {batch_sizes.device}")
    sizes = batch_sizes.tolist()
    if not sizes:
        raise RuntimeError(f"{who}: a PackedSequence needs at least one step, got empty batch_sizes")
    if sizes[-1] < 0 or any(a < b for a, b in zip(sizes, sizes[1:])):
        raise RuntimeError(f"{who}: a PackedSequence's batch_sizes should be non-negative and non-increasing "
                           f"(sequences sorted longest first, as pack_padded_sequence makes them), got {sizes}")
    if sum(sizes) != data.size(0):
        raise RuntimeError(f"{who}: a PackedSequence's batch_sizes should sum to its data's rows: they sum to "
                           f"{sum(sizes)}, data has {data.size(0)} rows")
    return sizes


def concat(outs: list) -> Tensor:
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)


LayerFn = Callable[[int, int, Tensor, Sequence[int], State], tuple]


class SameForEvery:
    """One state tensor for every layer-direction, where run_stack's ``hx`` holds stacked ones: the zero
    state of ``hx=None``, (B, *), without a stacked (L*D, B, *) copy to allocate and index."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: Tensor):
        self.tensor = tensor

    def __getitem__(self, index: int) -> Tensor:
        return self.tensor


def run_stack(x: Tensor, batch_sizes: Sequence[int], hx: State, layer_fn: LayerFn, *,
              num_layers: int, num_directions: int, dropout: float = 0.0,
              training: bool = False, merge: Callable[[list], Tensor] = concat,
              fresh_states: bool = False) -> tuple[Tensor, State]:
    """Run ``num_layers`` x ``num_directions`` recurrences over packed ``x`` (N, I).

    ``hx`` is a tuple of stacked states, each (num_layers * num_directions, B, *),
    indexed ``layer * num_directions + direction`` as in torch.nn (or a SameForEvery).
    ``layer_fn(layer, direction, x, batch_sizes, state0)`` runs one layer-direction
    and returns (outputs (N, H), final state); direction 1 reads the sequence backwards.
    Directions' outputs are combined by ``merge`` (concatenated on the feature axis by
    default, as torch.nn does); dropout is applied to
    each layer's output except the last, in training only.  ``fresh_states``: see the end.
    """
    finals: list = [[] for _ in hx]
    for layer in range(num_layers):
        outs = []
        for direction in range(num_directions):
            idx = layer * num_directions + direction
            out, state = layer_fn(layer, direction, x, batch_sizes, tuple(s[idx] for s in hx))
            outs.append(out)
            for k, s in enumerate(state):
                finals[k].append(s)
        x = merge(outs)  # (N, D*H) when concatenated
        if dropout > 0 and training and layer < num_layers - 1:
            x = F.dropout(x, dropout, training=True)
    # A stack, a copy even of one layer-direction's state: a backward may keep the last state (the
    # reference loop's tanh does), and h_n is the caller's to change in place, as torch.nn's is.  Unless
    # layer_fn's final states are ``fresh_states`` (new tensors nothing else holds): one is then viewed.
    if fresh_states and len(finals[0]) == 1:
        return x, tuple(f[0].unsqueeze(0) for f in finals)
    return x, tuple(torch.stack(f) for f in finals)


# ----------------------------------------------------------------------------------------
# Recurrent: any cell as a full layer
# ----------------------------------------------------------------------------------------

from torch import nn  # noqa: E402
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence  # noqa: E402

from . import export as _export  # noqa: E402
from . import kernels  # noqa: E402
from .kernels.generator.layer import for_cell as generated_step  # noqa: E402
from .kernels.opaque_cell import compiled_runner  # noqa: E402
from .kernels._torch_internals import constant_for_dynamo, has_hooks  # noqa: E402
from .cells._base import CellBase, check_size_arg, equations_of  # noqa: E402
from .errors import UnsupportedBackendError  # noqa: E402
from .export.input_checks import batched_input  # noqa: E402

MERGES = {
    "concat": concat,
    "sum": lambda outs: outs[0] if len(outs) == 1 else outs[0] + outs[1],
    "mean": lambda outs: outs[0] if len(outs) == 1 else (outs[0] + outs[1]) / 2,
    "mul": lambda outs: outs[0] if len(outs) == 1 else outs[0] * outs[1],
}


def _check_probability(name: str, p) -> float:
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p < 1:
        raise ValueError(f"{name} should be a number in range [0, 1), got {p!r}")
    return float(p)


class Recurrent(nn.Module):
    r"""Any cell as a full recurrent layer: layers, directions, padding, lengths and packing.

    ``cell`` is a class following torch.nn's cell convention: built as
    ``cell(input_size, hidden_size, **cell_kwargs)``, called as ``cell(x_t, hx)`` with
    ``hx=None`` meaning a zero state, returning the new state (a Tensor, or a tuple whose
    first element is the step's output h_t, e.g. LSTMCell's ``(h, c)``).  torch.nn.GRUCell,
    every cell in ``rnnkit.cells`` and any user class of that shape work unchanged.

    The instances live in ``self.cells`` (an nn.ModuleList), layer-major, the forward
    direction before the reverse; layer k > 0 takes ``hidden_size * directions`` inputs
    (``hidden_size`` when the directions are merged by sum, mean or mul).

    Options beyond torch.nn:

    ==================  ===============================================================
    merge               how the two directions' outputs combine: "concat" (torch.nn's),
                        "sum", "mean", "mul"
    return_states       forward also returns every step's full state (all h_t, all c_t)
                        of the last layer, each shaped like ``output``
    stateful            the final state is carried into the next call when ``hx`` is
                        None (truncated BPTT: it is detached); ``reset_state()`` clears it
    input_dropout       variational dropout: one mask per sequence and layer on the
                        inputs, the same at every step (training only)
    recurrent_dropout   one mask per sequence and layer-direction on h_{t-1} before each
                        step (training only)
    zoneout             each state unit keeps its previous value with this probability
                        (training); in eval the expectation p*old + (1-p)*new is used
    ==================  ===============================================================

    Shapes as torch.nn.RNN/LSTM: ``forward(input, hx=None, lengths=None)`` takes (L, N, H_in)
    (batch_first: (N, L, H_in)), unbatched (L, H_in), or a PackedSequence, and returns
    ``(output, h_n)`` (``h_n`` a tuple of stacked states for tuple-state cells), plus
    the states when ``return_states``.  With ``lengths`` a padded batch is run as its
    sequences alone: outputs past a sequence's end are zero, h_n is taken at its last step.

    Equivalent to (one layer, one direction, no lengths)::

        h = None
        for t in range(x.size(0)):
            h = layer.cells[0](x[t], h)
            output.append(h[0] if isinstance(h, tuple) else h)

    rnnkit's own cells run through the fused kernels (``backend="auto"``).  A user's cell runs on a
    kernel generated from its own step (rnnkit/kernels/generator/: traced, compiled to C++ once per
    machine, forward and backward); where its step uses an op the generator does not handle,
    ``backend="auto"`` runs the reference loop and ``"fused"``/``"generated"`` raise saying which op.
    A cell with forward or backward hooks (on it or on a module inside it, registered whenever; global module
    hooks too) runs the reference loop, which calls it at every step as the loop above does, so the hooks run
    there (``"fused"``/``"generated"`` raise).
    """

    def __init__(self, cell, input_size: int, hidden_size: int, num_layers: int = 1, *,
                 bidirectional: bool = False, batch_first: bool = False, dropout: float = 0.0,
                 backend: str = "auto", merge: str = "concat", return_states: bool = False,
                 stateful: bool = False, input_dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 zoneout: float = 0.0, **cell_kwargs):
        super().__init__()
        if isinstance(cell, nn.Module) or not callable(cell):
            raise TypeError(
                f"Recurrent: cell should be a cell class, built as cell(input_size, hidden_size, **cell_kwargs), "
                f"got {'an instance of ' + type(cell).__name__ if isinstance(cell, nn.Module) else repr(cell)}"
            )
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            check_size_arg(name, value)
            if value <= 0:
                raise ValueError(f"{name} must be greater than zero, got {value}")
        if merge not in MERGES:
            raise ValueError(f"merge should be one of {', '.join(map(repr, MERGES))}, got {merge!r}")
        kernels.check_backend_name(backend)
        self.dropout = _check_probability("dropout", dropout)
        self.input_dropout = _check_probability("input_dropout", input_dropout)
        self.recurrent_dropout = _check_probability("recurrent_dropout", recurrent_dropout)
        self.zoneout = _check_probability("zoneout", zoneout)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional, self.batch_first = bool(bidirectional), bool(batch_first)
        self.backend, self.merge, self.return_states, self.stateful = backend, merge, return_states, stateful
        self.cell_name = getattr(cell, "__name__", repr(cell))
        directions = 2 if bidirectional else 1
        out_size = hidden_size * (directions if merge == "concat" else 1)
        cells = []
        self._cell_input_sizes = []
        for layer in range(num_layers):
            for _ in range(directions):
                self._cell_input_sizes.append(input_size if layer == 0 else out_size)
                try:
                    cells.append(cell(self._cell_input_sizes[-1], hidden_size, **cell_kwargs))
                except TypeError as e:
                    raise TypeError(f"Recurrent: could not build {self.cell_name}(input_size, hidden_size, "
                                    f"**{cell_kwargs}): {e}") from e
                if not isinstance(cells[-1], nn.Module):
                    raise TypeError(f"Recurrent: {self.cell_name}(...) should build an nn.Module, "
                                    f"got {type(cells[-1]).__name__}")
        self.cells = nn.ModuleList(cells)
        self._carry = None

    def extra_repr(self) -> str:
        s = f"{self.cell_name}, {self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for name, default in (("bidirectional", False), ("batch_first", False), ("dropout", 0.0),
                              ("merge", "concat"), ("return_states", False), ("stateful", False),
                              ("input_dropout", 0.0), ("recurrent_dropout", 0.0), ("zoneout", 0.0),
                              ("backend", "auto")):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        return s

    def __prepare_scriptable__(self):
        """What torch.jit.script compiles in this layer's place: a twin on the same parameters whose forward
        is TorchScript, each layer-direction one operator call (rnnkit/export/torchscript_recurrent.py);
        rnnkit's own cells only, a clear error otherwise."""
        from .export.torchscript_recurrent import scriptable_recurrent
        return scriptable_recurrent(self)

    def reset_state(self) -> None:
        """Forget the state carried between calls (``stateful=True``)."""
        self._carry = None

    # ----- forward -----------------------------------------------------------------------
    # lengths is not keyword-only: torch.onnx.export(..., dynamo=False) passes each omitted argument's
    # default positionally, so a keyword-only one breaks an export of the module itself.
    def forward(self, input, hx=None, lengths=None):
        if _export.compiling() and not self._traceable(input, lengths):  # a graph break, see rnnkit/export
            return _export.eager_call(self, input, hx, lengths=lengths)
        if _export.exporting():  # torch.export / torch.onnx.export: a scan per layer-direction, see rnnkit/export
            return _export.captured_recurrent(self, input, hx, lengths)
        if torch.jit.is_tracing():
            if lengths is not None:
                raise RuntimeError("Recurrent: torch.jit.trace cannot record lengths (they would be baked into the "
                                   "trace); trace on full-length sequences")
            input, hx = _export.pin_traced_shapes("Recurrent", input, hx)
        directions = 2 if self.bidirectional else 1
        packed_in = isinstance(input, PackedSequence)
        is_batched, total_length = True, None
        if packed_in:
            if lengths is not None:
                raise ValueError("Recurrent: lengths is for padded input; a PackedSequence carries its own")
            packed = input
            if input.data.dim() != 2 or input.data.size(-1) != self.input_size:
                raise RuntimeError(f"Recurrent: a PackedSequence's data should be (rows, input_size={self.input_size}), "
                                   f"got {tuple(input.data.shape)}")
        else:
            if isinstance(input, Tensor) and input.dim() == 2 and lengths is not None:
                raise ValueError("Recurrent: lengths needs batched 3-D input")
            input, is_batched = self._batched(input)
            steps = input.size(1 if self.batch_first else 0)
            if steps == 0:
                raise RuntimeError("Recurrent: expected a sequence of at least one step, got 0 steps")
            batch = input.size(0 if self.batch_first else 1)
            total_length, packed = steps, None
            if lengths is not None:
                lengths_t = torch.as_tensor(lengths, dtype=torch.int64, device="cpu").reshape(-1)
                if lengths_t.numel() != batch or bool((lengths_t < 1).any()) or bool((lengths_t > steps).any()):
                    raise ValueError(f"Recurrent: lengths should hold {batch} values in [1, {steps}], "
                                     f"got {lengths_t.tolist()}")
                packed = pack_padded_sequence(input, lengths_t, batch_first=self.batch_first, enforce_sorted=False)
        if packed is None:  # every sequence full length: the time-major rows are the packed layout already
            data = (input.transpose(0, 1) if self.batch_first else input).reshape(steps * batch, input.size(-1))  # (T*B, I)
            batch_sizes, sorted_indices, unsorted_indices = [batch] * steps, None, None
        else:
            data, batch_sizes_t, sorted_indices, unsorted_indices = packed
            batch_sizes = packed_batch_sizes(data, batch_sizes_t, "Recurrent")
            batch = batch_sizes[0]

        structure = [self._probe(c, size, data) for c, size in zip(self.cells, self._cell_input_sizes)]  # per cell: (arity, per-state trailing shapes)
        state = self._initial_state(hx, is_batched, batch, data, structure)
        if sorted_indices is not None:  # (zeros need no reordering)
            state = tuple(s.index_select(1, sorted_indices) if isinstance(s, Tensor) else s for s in state)

        runners, fresh_states = self._runners(data)
        keep = self.return_states
        kept = []
        masked_inputs = {}  # layer -> its input under this call's variational mask, shared by both directions

        def layer_fn(layer, direction, x, bs, s0):
            idx = layer * directions + direction
            if self.input_dropout > 0 and self.training:
                if layer not in masked_inputs:
                    masked_inputs[layer] = x * _per_sequence_mask(x, bs, self.input_dropout)
                x = masked_inputs[layer]
            last = layer == self.num_layers - 1
            out, final = runners[idx](x, bs, s0, direction == 1, keep and last)
            if keep and last:
                kept.append(out)
                out = out[0]
            return out, final

        out, final = run_stack(data, batch_sizes, state, layer_fn, num_layers=self.num_layers,
                               num_directions=directions, dropout=self.dropout, training=self.training,
                               merge=MERGES[self.merge], fresh_states=fresh_states)
        if self.stateful:
            self._carry = tuple(s.detach().index_select(1, unsorted_indices) if unsorted_indices is not None
                                else s.detach() for s in final)
        if unsorted_indices is not None:
            final = tuple(s.index_select(1, unsorted_indices) for s in final)
        output = self._unpack(out, packed, packed_in, total_length, is_batched)
        h_n = final[0] if len(final) == 1 else final
        if not is_batched:
            h_n = final[0].squeeze(1) if len(final) == 1 else tuple(s.squeeze(1) for s in final)
        if not keep:
            return output, h_n
        states = tuple(concat([k[j] for k in kept]) for j in range(len(kept[0])))
        states = tuple(self._unpack(s, packed, packed_in, total_length, is_batched) for s in states)
        return output, h_n, states

    # ----- pieces -----------------------------------------------------------------------
    def _traceable(self, input, lengths) -> bool:
        """Whether torch.compile's dynamo may trace this call, its layers each one operator
        (rnnkit::fused_layer, kernels/opaque.py, for rnnkit's own cells; rnnkit::cell_layer,
        kernels/opaque_cell.py, for a user's cell) on padded input.  Lengths and a PackedSequence
        (data-dependent packing), the options that act inside the step (they run the reference loop, which
        tracing would unroll) and carried state run eagerly instead."""
        return (lengths is None and not isinstance(input, PackedSequence) and not self.stateful
                and not (self.return_states or self.zoneout > 0
                         or (self.training and (self.recurrent_dropout > 0 or self.input_dropout > 0))))

    def _batched(self, input):
        """(``input`` with its batch axis, whether it had one) for a padded tensor, checked as torch.nn
        checks it (the dimensions, then the feature size)."""
        if not isinstance(input, Tensor):
            raise ValueError(f"Recurrent: Expected input to be 2D or 3D, got {type(input).__name__} instead")
        return batched_input(input, self.batch_first, self.input_size)

    def _unpack(self, out, packed, packed_in, total_length, is_batched):
        """Packed rows (N, F) back to the caller's layout: a PackedSequence or a padded tensor."""
        if packed is None:  # full-length sequences: the rows are (T, B) in order
            padded = out.reshape(total_length, out.size(0) // total_length, out.size(-1))  # (T, B, F)
            if self.batch_first:
                padded = padded.transpose(0, 1)  # (B, T, F)
        else:
            result = PackedSequence(out, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
            if packed_in:
                return result
            padded, _ = pad_packed_sequence(result, batch_first=self.batch_first, total_length=total_length)
        return padded if is_batched else padded.squeeze(0 if self.batch_first else 1)

    def _probe(self, cell, input_size, data):
        """Call the cell once on a zero row to learn its state's structure, checking what it returns; once
        per cell, dtype and device (a call of a small cell costs as much as the rest of a short layer's)."""
        if isinstance(cell, CellBase):  # rnnkit's own cells: every state is (B, H); no call needed
            arity = len(cell.equations.state_names)
            return arity > 1, ((self.hidden_size,),) * arity
        if _export.compiling():  # dynamo: probed eagerly, the structure a constant of the graph
            return _probed_while_compiling(self, cell, input_size, data.dtype, data.device)
        return self._cached_probe(cell, input_size, data)

    def _cached_probe(self, cell, input_size, data):
        known = _PROBED.setdefault(cell, {})
        key = (data.dtype, None if data.is_cpu else data.device, input_size)  # (a device object costs us)
        if key not in known:
            known[key] = self._call_probe(cell, input_size, data)
        return known[key]

    def _call_probe(self, cell, input_size, data):
        # (the random number state restored after: a cell drawing random numbers, dropout in training, would
        # otherwise draw on a layer's first call only, and one seed would give that call other numbers)
        with torch.no_grad(), torch.random.fork_rng(devices=[] if data.is_cpu else [data.device]):
            x = data.new_zeros(1, input_size)
            try:
                result = cell(x, None)
            except Exception as e:
                raise type(e)(f"Recurrent: {self.cell_name}(x_t, None) failed on a (1, {x.size(1)}) input: {e}") from e
        states = (result,) if isinstance(result, Tensor) else result
        if not isinstance(states, tuple) or not states or not all(isinstance(s, Tensor) for s in states):
            raise TypeError(f"Recurrent: {self.cell_name}(x_t, hx) should return a Tensor or a tuple of Tensors, "
                            f"got {type(result).__name__}")
        if tuple(states[0].shape) != (1, self.hidden_size):
            raise ValueError(f"Recurrent: {self.cell_name}(x_t, hx) returned a first element (the output h_t) of "
                             f"shape {tuple(states[0].shape)} for a batch of 1; expected (1, {self.hidden_size})")
        if any(s.dim() < 1 or s.size(0) != 1 for s in states):
            raise ValueError(f"Recurrent: every state tensor {self.cell_name} returns should have the batch first")
        return isinstance(result, tuple), tuple(tuple(s.shape[1:]) for s in states)

    def _initial_state(self, hx, is_batched, batch, data, structure):
        arity, shapes = structure[0]
        layers = len(self.cells)
        if hx is None and self.stateful and self._carry is not None:
            if self._carry[0].size(1) != batch:
                raise RuntimeError(f"Recurrent: the carried state has batch {self._carry[0].size(1)}, this call has "
                                   f"batch {batch}; call reset_state() to start new sequences")
            return self._carry
        if hx is None:  # a zero state for every layer-direction (one per state: no two alias each other)
            return tuple(SameForEvery(data.new_zeros(batch, *shape)) for shape in shapes)
        states = tuple(hx) if isinstance(hx, (tuple, list)) else (hx,)
        if len(states) != len(shapes) or not all(isinstance(s, Tensor) for s in states):
            raise TypeError(f"Recurrent: {self.cell_name} has {len(shapes)} state tensor(s); hx should be "
                            f"{'a Tensor' if len(shapes) == 1 else f'a tuple of {len(shapes)} Tensors'}")
        if not is_batched:
            states = tuple(s.unsqueeze(1) for s in states)
        for k, (s, shape) in enumerate(zip(states, shapes)):
            expected = (layers, batch) + shape
            if tuple(s.shape) != expected:
                raise RuntimeError(f"Expected hx[{k}] size {expected}, got {list(s.shape)}"
                                   + ("" if is_batched else " (after adding the batch axis)"))
            if s.dtype != data.dtype:
                raise RuntimeError(f"Recurrent: hx[{k}] dtype ({s.dtype}) does not match input dtype ({data.dtype})")
        return states

    def _runners(self, data):
        """One function per cell, (x, batch_sizes, state0, reverse, keep_states) -> (outputs, final state),
        and whether every one's final states are new tensors nothing else holds (run_stack's fresh_states)."""
        # These act inside the step, so they run on the generic loop (zoneout in eval too: it mixes states).
        generic = self.return_states or self.zoneout > 0 or (self.training and self.recurrent_dropout > 0)
        runners, fresh = [], True
        for cell, input_size in zip(self.cells, self._cell_input_sizes):
            if has_hooks(cell):  # the loop that calls the cell at every step, so that its hooks run there
                if self.backend not in ("auto", "reference"):
                    raise UnsupportedBackendError(
                        f"backend {self.backend!r} cannot run {self.cell_name}: the cell (or a module inside it) "
                        "has hooks, or global module hooks are registered: hooks run at each call of a module, and "
                        "a fused or generated kernel does not call the cell; use backend='auto' or 'reference' (the "
                        "loop that calls it at every step)")
                runners.append(self._generic_runner(cell, None))
                fresh = False
                continue
            eq = equations_of(cell)
            if eq is not None and not generic:
                kernel = kernels.select(self.backend, eq, data, cell.cell_weights())
                runners.append(lambda x, bs, s0, rev, keep, eq=eq, cell=cell, k=kernel:
                               k.layer(eq, x, bs, s0, cell.cell_weights(), rev))
                fresh = fresh and kernel.fresh_states
                continue
            if eq is None and not generic and _export.compiling():  # one rnnkit::cell_layer in the graph
                runners.append(compiled_runner(cell, self.backend))
                continue
            if eq is None and not generic and self.backend in ("auto", "fused", "generated"):
                try:  # a user's cell: its kernel generated from its own step (kernels/generator/)
                    step, params = generated_step(cell, data, input_size)
                except UnsupportedBackendError as e:
                    if self.backend != "auto":
                        raise UnsupportedBackendError(f"backend {self.backend!r} cannot run {self.cell_name}: {e}; "
                                                      "use backend='auto' or 'reference'") from e
                else:
                    runners.append(lambda x, bs, s0, rev, keep, step=step, params=params:
                                   step.run(x, bs, s0, params, rev))
                    continue  # (its final states are the loop operator's new tensors)
            if self.backend not in ("auto", "reference"):
                why = ("a user cell" if eq is None else
                       "return_states, recurrent_dropout or zoneout")
                raise UnsupportedBackendError(
                    f"backend {self.backend!r} cannot run {self.cell_name} here ({why} runs on the reference loop); "
                    f"use backend='auto' or 'reference'"
                )
            runners.append(self._generic_runner(cell, eq))
            fresh = False
        return runners, fresh

    def _generic_runner(self, cell, eq):
        def call(x_t, state):
            if eq is not None:
                return eq.step(x_t, state, cell.cell_weights())
            result = cell(x_t, state if len(state) > 1 else state[0])
            return (result,) if isinstance(result, Tensor) else tuple(result)

        def run(x, bs, s0, reverse, keep):
            step = call
            if self.training and self.recurrent_dropout > 0:
                mask = _dropout_mask(s0[0], self.recurrent_dropout)  # (B, H): one per sequence

                def step(x_t, state, inner=step, mask=mask):
                    h = state[0] * mask[: state[0].size(0)]
                    return inner(x_t, (h,) + tuple(state[1:]))
            if self.zoneout > 0:
                p, training = self.zoneout, self.training

                def step(x_t, state, inner=step):
                    new = inner(x_t, state)
                    if training:
                        return tuple(torch.where(torch.rand_like(n) < p, o, n) for o, n in zip(state, new))
                    return tuple(p * o + (1 - p) * n for o, n in zip(state, new))
            return scan(step, x, bs, s0, reverse, keep_states=keep)

        return run


_PROBED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # user cell -> {(dtype, device, I): structure}


@constant_for_dynamo  # (torch.compiler.assume_constant_result: _torch_internals.py)
def _probed_while_compiling(recurrent, cell, input_size, dtype, device):
    """``recurrent._probe`` run eagerly while dynamo traces (a guard on the probe cache's dict, traced, failed
    when a new shape compiled again)."""
    return recurrent._cached_probe(cell, input_size, torch.empty(0, dtype=dtype, device=device))


def _dropout_mask(like: Tensor, p: float) -> Tensor:
    return torch.empty_like(like).bernoulli_(1 - p) / (1 - p)


def _per_sequence_mask(x: Tensor, batch_sizes, p: float) -> Tensor:
    """A (N, I) mask for packed x that repeats one (B, I) mask of each sequence at every step."""
    mask = _dropout_mask(x.new_empty(batch_sizes[0], x.size(-1)), p)
    rows = torch.cat([torch.arange(b, device=x.device) for b in batch_sizes])
    return mask[rows]
