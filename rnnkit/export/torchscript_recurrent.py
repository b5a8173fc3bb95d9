"""The TorchScript twin of ``Recurrent`` over rnnkit's own cells (issue 17), what ``torch.jit.script``
compiles in its place (``Recurrent.__prepare_scriptable__``), as torchscript.py does for the layers.

``Recurrent``'s forward is Python TorchScript cannot compile (``lengths``, the choice of
kernel, PackedSequence).  The twin

- holds the cells' own ``nn.Parameter`` objects under the same names (``cells.0.weight_ih``...: the
  same ``state_dict`` keys; an optimizer step on the original moves the twin);
- runs each layer-direction as one call of ``rnnkit::fused_layer`` (kernels/opaque.py), the operator
  torch.compile records for these cells: the kernel is chosen at run time as ``backend=`` chooses it
  eagerly, and its backward is the kernel's own (run again with autograd, as under torch.compile; a
  gradient of a gradient is refused with an error);
- merges the directions, applies dropout between layers and checks its input as ``Recurrent`` does;
- when called eagerly, runs the original ``Recurrent``.

A saved scripted model runs in a process that has imported rnnkit (which registers the operator).
A user's cell has its own twin (torchscript_user_cell.py).  Refused at scripting, with an error naming
what to use instead: the options that act inside the step or across calls (``return_states``,
``stateful``, ``zoneout``, ``input_dropout``, ``recurrent_dropout``).  The scripted forward takes
``(input, hx)``: padded or unbatched tensors (``lengths`` is refused with an error, and TorchScript's
type check refuses a PackedSequence).
"""
from typing import Final, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells._base import equations_of
from ..errors import UnsupportedBackendError
from .input_checks import batched_input
from .torchscript import _own_parameter, _Twin

_IN_STEP_OPTIONS = ("return_states", "stateful", "zoneout", "input_dropout", "recurrent_dropout")


class _Weights(nn.Module):
    """One cell's parameters under its own names: the twin's ``cells[k]``, for the state_dict keys."""

    def __init__(self, cell: nn.Module, names: List[str]):
        super().__init__()
        for name in names:
            self.register_parameter(name, _own_parameter(cell, name))


def _equations(recurrent, cell):
    """The cell's CellEquations, one the operator runs; a clear error for any other cell."""
    from ..kernels.opaque import EQUATIONS
    eq = equations_of(cell)
    if eq is None or EQUATIONS.get(eq.name) is not eq:
        raise UnsupportedBackendError(
            f"Recurrent({recurrent.cell_name}): TorchScript (torch.jit.script) runs Recurrent over rnnkit's own "
            "cells (rnnkit.cells); a user's cell runs under torch.jit.trace or torch.export")
    return eq


def _cell_weight_names(recurrent, cell) -> List[Optional[str]]:
    """Per field of the cell's weights, the name of the parameter that fills it (None where absent)."""
    by_identity = {id(p): name for name, p in cell.named_parameters()}
    names = []
    for tensor in cell.cell_weights():
        if tensor is not None and id(tensor) not in by_identity:
            raise UnsupportedBackendError(
                f"Recurrent({recurrent.cell_name}): a weight of the cell is computed, not a parameter, which the "
                "TorchScript twin cannot follow; use torch.jit.trace or torch.export")
        names.append(None if tensor is None else by_identity[id(tensor)])
    return names


class _RecurrentTwinBase(_Twin):
    """What the twins of Recurrent share: its configuration, its eager call, the merge of directions and the
    checks of the input and the initial states."""

    input_size: Final[int]
    hidden_size: Final[int]
    num_layers: Final[int]
    bidirectional: Final[bool]
    batch_first: Final[bool]
    dropout: Final[float]
    merge: Final[str]
    backend: Final[str]
    cell_name: Final[str]
    _arity: Final[int]
    _state_shapes: List[List[int]]  # per state, its shape after (layers, batch)

    def __init__(self, recurrent, state_shapes: List[List[int]]):
        super().__init__(recurrent)
        for option in _IN_STEP_OPTIONS:
            if getattr(recurrent, option):
                raise UnsupportedBackendError(
                    f"Recurrent: TorchScript (torch.jit.script) runs Recurrent without {option}; use torch.jit.trace "
                    "or torch.export, or script a Recurrent without it")
        self.input_size, self.hidden_size, self.num_layers = (recurrent.input_size, recurrent.hidden_size,
                                                              recurrent.num_layers)
        self.bidirectional, self.batch_first, self.dropout = (recurrent.bidirectional, recurrent.batch_first,
                                                              recurrent.dropout)
        self.merge, self.backend, self.cell_name = recurrent.merge, recurrent.backend, recurrent.cell_name
        self._arity, self._state_shapes = len(state_shapes), state_shapes

    def extra_repr(self) -> str:
        return self._original[0].extra_repr()

    @torch.jit.unused
    def _eager_call(self, input, hx, lengths):
        """The original Recurrent, lengths included: torch.jit.script puts the twin in the Recurrent's
        place in your Python model too, which keeps its eager behaviour."""
        original = self._original[0]
        original.train(self.training)
        return original(input, hx, lengths=lengths)

    def _check_no_lengths(self, lengths: Optional[Tensor]):
        if lengths is not None:
            raise RuntimeError("Recurrent: the scripted layer runs full-length sequences; lengths (and a "
                               "PackedSequence) are for the eager layer")

    def _merged(self, outs: List[Tensor]) -> Tensor:
        if len(outs) == 1:
            return outs[0]
        if self.merge == "sum":
            return outs[0] + outs[1]
        if self.merge == "mean":
            return (outs[0] + outs[1]) / 2
        if self.merge == "mul":
            return outs[0] * outs[1]
        return torch.cat(outs, -1)  # (..., 2H)

    def _time_major(self, input: Tensor, hx: Optional[List[Tensor]]) -> Tuple[Tensor, bool, List[Tensor]]:
        """(input as (T, B, I), whether it had a batch axis, the initial states each (L*D, B, *)), checked as
        Recurrent checks them."""
        input, is_batched = batched_input(input, self.batch_first, self.input_size)
        if self.batch_first:
            input = input.transpose(0, 1)  # (T, B, I)
        steps, batch = input.size(0), input.size(1)
        if steps == 0:
            raise RuntimeError("Recurrent: expected a sequence of at least one step, got 0 steps")
        layers = self.num_layers * (2 if self.bidirectional else 1)
        if hx is None:
            state = [torch.zeros([layers, batch] + shape, dtype=input.dtype, device=input.device)
                     for shape in self._state_shapes]
        else:
            if len(hx) != self._arity:
                raise RuntimeError(f"Recurrent: {self.cell_name} has {self._arity} state tensor(s), got {len(hx)}")
            state = hx if is_batched else [s.unsqueeze(1) for s in hx]
            for k in range(len(state)):
                if state[k].shape != [layers, batch] + self._state_shapes[k]:
                    raise RuntimeError(f"Expected hx[{k}] size {[layers, batch] + self._state_shapes[k]}, "
                                       f"got {list(state[k].shape)}")
                if state[k].dtype != input.dtype:
                    raise RuntimeError(f"Recurrent: hx[{k}] dtype ({state[k].dtype}) does not match input dtype "
                                       f"({input.dtype})")
        return input, is_batched, state

    def _caller_layout(self, output: Tensor, final_states: List[Tensor], is_batched: bool
                       ) -> Tuple[Tensor, List[Tensor]]:
        """output (T, B, F) and the final states (L*D, B, *) in the caller's layout."""
        if self.batch_first:
            output = output.transpose(0, 1)  # (B, T, F)
        if not is_batched:
            output = output.squeeze(0 if self.batch_first else 1)
            final_states = [s.squeeze(1) for s in final_states]
        return output, final_states


class RecurrentTwin(_RecurrentTwinBase):
    """The scriptable body of ``Recurrent`` over rnnkit's cells (see the module doc); subclasses give forward
    its state type."""

    _cell: Final[str]  # the cell's name in rnnkit.cells, which the operator's schema carries
    # Per layer-direction, its present weights (the very Parameter objects, in the cell's weights order)
    # and which fields of the cell's weights they fill: TorchScript indexes lists, not names it builds.
    _weights: List[List[Tensor]]
    _present: List[List[bool]]

    def __init__(self, recurrent):
        first = recurrent.cells[0]
        super().__init__(recurrent, [[recurrent.hidden_size]] * len(first.equations.state_names))
        holders, self._weights, self._present = [], [], []
        for cell in recurrent.cells:
            _equations(recurrent, cell)
            names = _cell_weight_names(recurrent, cell)
            holders.append(_Weights(cell, [n for n in names if n is not None]))
            self._weights.append([getattr(holders[-1], n) for n in names if n is not None])
            self._present.append([n is not None for n in names])
        self.cells = nn.ModuleList(holders)
        self._cell = first.equations.name

    def _forward_states(self, input: Tensor, hx: Optional[List[Tensor]]) -> Tuple[Tensor, List[Tensor]]:
        """(output, final states) of ``input`` and the initial states ``hx`` (a list, one per state)."""
        input, is_batched, state = self._time_major(input, hx)
        steps, batch = input.size(0), input.size(1)
        x = input.reshape(steps * batch, input.size(2))  # (T*B, I): the packed layout of a padded batch
        batch_sizes = [batch] * steps
        directions = 2 if self.bidirectional else 1
        finals: List[List[Tensor]] = [[] for _ in range(self._arity)]
        for layer in range(self.num_layers):
            outs: List[Tensor] = []
            for direction in range(directions):
                index = layer * directions + direction
                results = torch.ops.rnnkit.fused_layer(self.backend, self._cell, x, batch_sizes,
                                                       [s[index] for s in state], self._weights[index],
                                                       self._present[index], direction == 1)
                outs.append(results[0])  # (T*B, H)
                for k in range(self._arity):
                    finals[k].append(results[1 + k])
            x = self._merged(outs)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        output = x.view(steps, batch, x.size(1))  # (T, B, F)
        return self._caller_layout(output, [torch.stack(f) for f in finals], is_batched)  # states (L*D, B, H)


class OneStateForward:
    """``forward`` of a twin whose cell has one state (h): ``(output, h_n)``; the twin gives
    ``_forward_states(input, [h0] or None) -> (output, [h_n])``."""

    def forward(self, input: Tensor, hx: Optional[Tensor] = None,
                lengths: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if not torch.jit.is_scripting():
            return self._eager_call(input, hx, lengths)
        self._check_no_lengths(lengths)
        state: Optional[List[Tensor]] = None
        if hx is not None:
            state = [hx]
        output, final = self._forward_states(input, state)
        return output, final[0]


class TwoStateForward:
    """``forward`` of a twin whose cell has two states (h, c): ``(output, (h_n, c_n))``."""

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None,
                lengths: Optional[Tensor] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        if not torch.jit.is_scripting():
            return self._eager_call(input, hx, lengths)
        self._check_no_lengths(lengths)
        state: Optional[List[Tensor]] = None
        if hx is not None:
            state = [hx[0], hx[1]]
        output, final = self._forward_states(input, state)
        return output, (final[0], final[1])


class RecurrentTwin1(OneStateForward, RecurrentTwin):
    """For rnnkit's cells with one state (h)."""


class RecurrentTwin2(TwoStateForward, RecurrentTwin):
    """For rnnkit's cells with two states (h, c)."""


def scriptable_recurrent(recurrent) -> nn.Module:
    """The twin torch.jit.script compiles in place of ``recurrent``; a clear error for what it cannot run."""
    if equations_of(recurrent.cells[0]) is None:  # a user's cell: torchscript_user_cell.py
        from .torchscript_user_cell import scriptable_user_cell_recurrent
        return scriptable_user_cell_recurrent(recurrent)
    arity = len(_equations(recurrent, recurrent.cells[0]).state_names)
    if arity not in (1, 2):
        raise UnsupportedBackendError(f"Recurrent({recurrent.cell_name}): TorchScript twins take one or two states")
    return RecurrentTwin2(recurrent) if arity == 2 else RecurrentTwin1(recurrent)


__all__ = ["RecurrentTwin", "RecurrentTwin1", "RecurrentTwin2", "OneStateForward", "TwoStateForward",
           "scriptable_recurrent"]
