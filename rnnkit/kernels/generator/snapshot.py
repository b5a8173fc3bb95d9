"""What a user cell's generated step depends on besides its inputs, read on every call of the layer.

Tracing freezes into the step what the cell's ``forward`` read from Python: each module's training flag
and its plain attributes (numbers, strings, flags: ``self.scale``, LayerNorm's eps).  The step is keyed
by them (with the parameters' shapes), so that it is generated again when they change, never run stale.
The parameters themselves (in ``named_parameters()`` order, the order the traced step takes them) are
read here too.

Reading all that on every call cost about 35 us of a small layer's call (a walk of every module's
attributes, then ``named_parameters()``), as much as 35 of its steps.  A snapshot keeps, for the cell's
modules, one list of what could change the step: each module's attribute names and values, the
identities of its parameters and buffers, and its submodules.  A call whose list equals the last
call's keeps the last key and parameters: equal plain values key the same step, and parameters are
compared by identity (``id``, their objects held by the snapshot), so a new Parameter is always seen,
even one equal to the old.  Anything else, or a value whose comparison fails (an array attribute),
takes the full reading again.
"""
from __future__ import annotations

import weakref

from torch import nn

from .._torch_internals import module_tables

_PLAIN = (bool, int, float, str, type(None))


def _entries(modules: list) -> list:
    """What the step could depend on in ``modules``, one flat list (compared with ``==``)."""
    entries: list = []
    for module in modules:
        attributes, parameters, buffers, submodules = module_tables(module)
        entries += attributes  # names, then values: an attribute renamed or removed changes the list
        entries += attributes.values()
        entries += map(id, parameters.values())
        entries += map(id, buffers.values())
        entries += submodules.values()
    return entries


class CellSnapshot:
    """A cell as of one call: ``key`` (its plain state and parameter shapes, which key its generated
    step), ``parameters`` (the tensors the step takes), ``has_buffers``, and the entries ``holds``
    compares."""

    __slots__ = ("key", "parameters", "has_buffers", "_submodules", "_entries", "_held")

    def __init__(self, cell: nn.Module):
        modules, plain = [], []
        stack = [cell]
        while stack:  # (an explicit walk: modules() took 60 us here)
            module = stack.pop()
            modules.append(module)
            attributes, _, _, submodules = module_tables(module)
            plain.append(tuple((k, v) for k, v in attributes.items()
                               if isinstance(v, _PLAIN) or (isinstance(v, tuple) and all(isinstance(e, _PLAIN) for e in v))))
            stack.extend(m for m in submodules.values() if m is not None)
        # (not the cell itself: the snapshot is the value of a weak dictionary keyed by the cell)
        self._submodules = modules[1:]
        self._entries = _entries(modules)
        # the objects whose ids the entries hold, kept alive so that no new object can take an id
        self._held = [t for m in modules for table in module_tables(m)[1:3] for t in table.values()]
        self.parameters = [p for _, p in cell.named_parameters()]
        self.has_buffers = any(True for _ in cell.buffers())
        self.key = (tuple(plain), tuple(tuple(p.shape) for p in self.parameters))

    def holds(self, cell: nn.Module) -> bool:
        """Whether ``cell`` is as it was when this was taken, as far as its step can tell."""
        try:  # (submodules replaced or added show in their parent's entries: the walk stands)
            return bool(_entries([cell, *self._submodules]) == self._entries)
        except Exception:  # an attribute whose == raises or is ambiguous (a tensor, an array)
            return False


_LAST: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # cell -> its CellSnapshot of the last call


def snapshot(cell: nn.Module) -> CellSnapshot:
    """``cell``'s snapshot now: the last call's where the cell is unchanged since, else a new one."""
    last = _LAST.get(cell)
    if last is not None and last.holds(cell):
        return last
    _LAST[cell] = now = CellSnapshot(cell)
    return now


__all__ = ["CellSnapshot", "snapshot"]
