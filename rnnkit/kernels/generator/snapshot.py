"""What a user cell's generated step depends on besides its inputs, read on every call of the layer.

Tracing freezes into the step what the cell's ``forward`` read from Python: each module's training flag
and its plain attributes (numbers, strings, flags: ``self.scale``, LayerNorm's eps).  The step is keyed
by them (with the parameters' shapes), so that it is generated again when they change, never run stale.
The parameters themselves (in ``named_parameters()`` order, the order the traced step takes them) are
read here too.

Reading all that on every call cost about 20 us (a walk of every module's attributes, then
``named_parameters()``), as much as 20 steps of a small cell.  A snapshot remembers, for each module of
the cell, the identity of every entry of its ``__dict__`` and of its parameters, buffers and submodules;
when all of them are the very objects of the last call, nothing the step depends on can have changed
(plain values are immutable, so a changed number is a new object), and the last call's key and
parameters stand.  Anything else, even an equal value in a new object, takes the full reading again.
"""
from __future__ import annotations

import weakref
from operator import is_

from torch import nn

from .._torch_internals import module_tables

_PLAIN = (bool, int, float, str, type(None))


def _same(mapping: dict, keys: tuple, values: tuple) -> bool:
    """Whether ``mapping`` holds exactly ``keys`` and ``values`` (the very objects, in order)."""
    return len(mapping) == len(keys) and all(map(is_, mapping, keys)) and all(map(is_, mapping.values(), values))


class CellSnapshot:
    """A cell as of one call: ``key`` (its plain state and parameter shapes, which key its generated
    step), ``parameters`` (the tensors the step takes), ``has_buffers``, and the identities that
    ``holds`` compares."""

    __slots__ = ("key", "parameters", "has_buffers", "_modules", "_keys", "_values")

    def __init__(self, cell: nn.Module):
        self._modules, self._keys, self._values, plain = [], [], [], []
        stack = [cell]
        while stack:  # (an explicit walk: modules() took 60 us here)
            module = stack.pop()
            self._modules.append(module)
            tables = module_tables(module)
            self._keys.append(tuple(tuple(table) for table in tables))  # per table: its names, its objects
            self._values.append(tuple(tuple(table.values()) for table in tables))
            plain.append(tuple((k, v) for k, v in tables[0].items()
                               if isinstance(v, _PLAIN) or (isinstance(v, tuple) and all(isinstance(e, _PLAIN) for e in v))))
            stack.extend(m for m in tables[3].values() if m is not None)
        self.parameters = [p for _, p in cell.named_parameters()]
        self.has_buffers = any(True for _ in cell.buffers())
        self.key = (tuple(plain), tuple(tuple(p.shape) for p in self.parameters))

    def holds(self, cell: nn.Module) -> bool:
        """Whether ``cell`` is still made of the very objects it was made of when this was taken."""
        stack, modules, index = [cell], self._modules, 0
        while stack:
            module = stack.pop()
            if index == len(modules) or module is not modules[index]:
                return False
            values = self._values[index]
            if not all(map(_same, module_tables(module), self._keys[index], values)):
                return False
            stack.extend(m for m in values[3] if m is not None)  # the submodules, as when taken
            index += 1
        return index == len(modules)


_LAST: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # cell -> its CellSnapshot of the last call


def snapshot(cell: nn.Module) -> CellSnapshot:
    """``cell``'s snapshot now: the last call's where the cell is unchanged since, else a new one."""
    last = _LAST.get(cell)
    if last is not None and last.holds(cell):
        return last
    _LAST[cell] = now = CellSnapshot(cell)
    return now


__all__ = ["CellSnapshot", "snapshot"]

