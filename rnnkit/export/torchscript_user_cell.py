"""The TorchScript twin of ``Recurrent`` over a user's cell: what ``torch.jit.script`` compiles in its place
(``Recurrent.__prepare_scriptable__``) when the cell is not one of rnnkit's.

TorchScript compiles the cell itself (a cell it cannot compile is refused with TorchScript's own reason), and
the twin runs it step by step in a TorchScript loop over time, each layer and direction in turn, with
Recurrent's checks, merge of directions and dropout between layers: the numbers of the reference loop (the
generated kernel's code lives at an address in one process, which a saved scripted model cannot carry).

The twin holds the very cell modules (``cells.0...``: the same ``state_dict`` keys; an optimizer step on the
original moves the twin).  A cell with one state takes and returns a Tensor, ``cell(x_t, h) -> h``; one with
two, a tuple, ``cell(x_t, (h, c)) -> (h, c)``: as Recurrent calls it eagerly.  Annotate the state argument
(``hx: Optional[Tensor] = None``, or ``Optional[Tuple[Tensor, Tensor]]``) for TorchScript to compile it.
Refused at scripting, as for rnnkit's cells: more than two states, and the options that act inside the step
or across calls.  The scripted forward takes ``(input, hx)``: padded or unbatched tensors.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UnsupportedBackendError
from .torchscript_recurrent import OneStateForward, TwoStateForward, _RecurrentTwinBase


class _UserCellTwin(_RecurrentTwinBase):
    def __init__(self, recurrent, state_shapes: List[List[int]]):
        super().__init__(recurrent, state_shapes)
        for cell in recurrent.cells:
            try:
                torch.jit.script(cell)
            except Exception as e:
                raise UnsupportedBackendError(
                    f"Recurrent({recurrent.cell_name}): TorchScript compiles the cell itself for torch.jit.script, "
                    f"and could not: {e}\nAnnotate the cell's forward for TorchScript (its state argument, say "
                    "hx: Optional[Tensor] = None), or use torch.jit.trace or torch.export") from None
        self.cells = recurrent.cells  # the very modules: the same state_dict keys and parameters


class UserCellTwin1(OneStateForward, _UserCellTwin):
    """For a cell with one state, ``cell(x_t, h) -> h``: ``(output, h_n)``."""

    def _forward_states(self, input: Tensor, hx: Optional[List[Tensor]]) -> Tuple[Tensor, List[Tensor]]:
        x, is_batched, states = self._time_major(input, hx)
        directions = 2 if self.bidirectional else 1
        finals: List[Tensor] = []
        outs: List[Tensor] = []
        for index, cell in enumerate(self.cells):  # (unrolled by TorchScript: one cell module each)
            h = states[0][index]
            steps: List[Tensor] = []
            if index % directions == 0:
                for t in range(x.size(0)):
                    h = cell(x[t], h)
                    steps.append(h)
            else:  # the reverse direction reads the sequence from its end
                for t in range(x.size(0) - 1, -1, -1):
                    h = cell(x[t], h)
                    steps.insert(0, h)
            outs.append(torch.stack(steps))  # (T, B, H)
            finals.append(h)
            if index % directions == directions - 1:  # the layer's directions done: the next layer's input
                x = self._merged(outs)
                outs = []
                if self.dropout > 0 and self.training and index < len(self.cells) - 1:
                    x = F.dropout(x, self.dropout, True)
        return self._caller_layout(x, [torch.stack(finals)], is_batched)


class UserCellTwin2(TwoStateForward, _UserCellTwin):
    """For a cell with two states, ``cell(x_t, (h, c)) -> (h, c)``: ``(output, (h_n, c_n))``."""

    def _forward_states(self, input: Tensor, hx: Optional[List[Tensor]]) -> Tuple[Tensor, List[Tensor]]:
        x, is_batched, states = self._time_major(input, hx)
        directions = 2 if self.bidirectional else 1
        finals_h: List[Tensor] = []
        finals_c: List[Tensor] = []
        outs: List[Tensor] = []
        for index, cell in enumerate(self.cells):  # (unrolled by TorchScript: one cell module each)
            hc = (states[0][index], states[1][index])
            steps: List[Tensor] = []
            if index % directions == 0:
                for t in range(x.size(0)):
                    hc = cell(x[t], hc)
                    steps.append(hc[0])
            else:  # the reverse direction reads the sequence from its end
                for t in range(x.size(0) - 1, -1, -1):
                    hc = cell(x[t], hc)
                    steps.insert(0, hc[0])
            outs.append(torch.stack(steps))  # (T, B, H)
            finals_h.append(hc[0])
            finals_c.append(hc[1])
            if index % directions == directions - 1:  # the layer's directions done: the next layer's input
                x = self._merged(outs)
                outs = []
                if self.dropout > 0 and self.training and index < len(self.cells) - 1:
                    x = F.dropout(x, self.dropout, True)
        return self._caller_layout(x, [torch.stack(finals_h), torch.stack(finals_c)], is_batched)


def scriptable_user_cell_recurrent(recurrent) -> nn.Module:
    """The twin torch.jit.script compiles in place of a ``Recurrent`` over a user's cell."""
    first = recurrent.cells[0]
    dtype = next((p.dtype for p in first.parameters() if p.is_floating_point()), torch.get_default_dtype())
    with torch.no_grad():
        is_tuple, shapes = recurrent._call_probe(first, recurrent.input_size, torch.zeros(1, recurrent.input_size,
                                                                                          dtype=dtype))
    shapes = [list(shape) for shape in shapes]
    if len(shapes) == 1 and not is_tuple:
        return UserCellTwin1(recurrent, shapes)
    if len(shapes) == 2:
        return UserCellTwin2(recurrent, shapes)
    raise UnsupportedBackendError(f"Recurrent({recurrent.cell_name}): TorchScript twins take a cell with one state "
                                  f"(a Tensor) or two (a tuple); this one has {len(shapes)}")


__all__ = ["UserCellTwin1", "UserCellTwin2", "scriptable_user_cell_recurrent"]
