"""What every cell family shares: the equations record and the torch.nn-style cell module."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = tuple  # tuple[Tensor, ...]: (h,) or (h, c); element 0 is always the step's output


class CellWeights(NamedTuple):
    """One layer-direction's parameters, named as in torch.nn (None where absent)."""

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Optional[Tensor] = None
    b_hh: Optional[Tensor] = None
    w_hr: Optional[Tensor] = None


def linear_projection(x: Tensor, weights) -> Tensor:
    return F.linear(x, weights.w_ih, weights.b_ih)


@dataclass(frozen=True, eq=False)
class CellEquations:
    """One recurrence, written once.

    ``recur(gx, state, weights)`` advances the state by one step, given the step's
    input projection ``gx = project(x, weights)`` (by default ``x @ W_ih^T + b_ih``).
    The projection holds no time dependence, so all steps' projections are one
    matrix product, done before the time loop.  ``weights`` is whatever the cell
    module's ``cell_weights()`` returns (CellWeights for torch.nn's families).  ``step`` is the whole step from
    the raw input, as the cell modules use it.  Kernels dispatch on the identity
    of this object, never on its name.
    """

    name: str                     # "lstm", "gru", "rnn_tanh", "rnn_relu", "min_gru", ...
    gates: tuple                  # gate names in the order of W_ih's rows, e.g. ("i", "f", "g", "o")
    state_names: tuple            # ("h",) or ("h", "c")
    recur: Callable[[Tensor, State, CellWeights], State]
    math: str                     # the equations, for docs and `rnnkit explain`
    project: Callable[[Tensor, object], Tensor] = linear_projection
    # gate_values(gx, state, weights) -> the gate activations of one step, in the order of
    # ``gates`` (recur is built on it; `rnnkit explain --plot` draws them). None: not exposed.
    gate_values: Optional[Callable[[Tensor, State, object], tuple]] = None
    # the NamedTuple of the weights ``recur`` takes (what the cell module's ``cell_weights()`` returns):
    # a kernel run as an operator (kernels/opaque.py) gets them as a list and rebuilds them with it
    weights_type: type = CellWeights

    @property
    def num_gates(self) -> int:
        return len(self.gates)

    def step(self, x: Tensor, state: State, weights: CellWeights) -> State:
        return self.recur(self.project(x, weights), state, weights)


def equations_of(cell: nn.Module) -> "CellEquations | None":
    """A cell module's CellEquations (rnnkit's cells, and the layers' torch.nn-style cells), or None for
    a user's cell.  Looked up on the class first: a missing attribute costs nn.Module 5-9 us to refuse,
    and this runs on every call of Recurrent."""
    return cell.equations if getattr(type(cell), "equations", None) is not None else None


def check_size_arg(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")


class CellBase(nn.Module):
    """torch.nn's RNNCellBase contract: parameters weight_ih, weight_hh, bias_ih, bias_hh.

    Subclasses set ``_num_chunks`` and ``_state_arity`` and provide ``equations``.  A cell
    with other parameters overrides ``_parameter_shapes`` (and ``reset_parameters`` where
    they are not drawn from U(-1/sqrt(H), 1/sqrt(H))) and ``cell_weights``; options shown
    by the repr when not at their default are listed in ``_repr_options``.
    """

    _num_chunks: int = 1
    _state_arity: int = 1  # 1: hx is a Tensor; 2: hx is a (h, c) tuple
    __constants__ = ["input_size", "hidden_size", "bias"]

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        check_size_arg("input_size", input_size)
        check_size_arg("hidden_size", hidden_size)
        # torch.empty would say "negative dimension"; say which argument instead (same type as torch).
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if value < 0:
                raise RuntimeError(f"{name} must be non-negative, got {value}")
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        # Registered in this order, which is the order reset_parameters draws them in.
        for name, shape in self._parameter_shapes(input_size, hidden_size, bias).items():
            if shape is None:
                self.register_parameter(name, None)
            else:
                setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
        self.reset_parameters()

    def _parameter_shapes(self, input_size: int, hidden_size: int, bias: bool) -> dict:
        """name -> shape (None: registered as absent), in registration order: torch.nn's four by default."""
        gate_rows = self._num_chunks * hidden_size
        return {
            "weight_ih": (gate_rows, input_size),
            "weight_hh": (gate_rows, hidden_size),
            "bias_ih": (gate_rows,) if bias else None,
            "bias_hh": (gate_rows,) if bias else None,
        }

    def reset_parameters(self) -> None:
        # Same draws, in the same order, as torch.nn: one seed gives identical cells.
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    # Options the repr shows when they differ from their default: (attribute, default).
    _repr_options: tuple = (("nonlinearity", "tanh"),)

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if "bias" in self.__dict__ and self.bias is not True:
            s += ", bias={bias}"
        for name, default in self._repr_options:
            if name in self.__dict__ and self.__dict__[name] != default:
                s += f", {name}={{{name}}}"
        return s.format(**self.__dict__)

    @property
    def equations(self) -> CellEquations:
        raise NotImplementedError

    def __prepare_scriptable__(self):
        """What torch.jit.script compiles in this cell's place: for torch.nn's cells, a twin on the same
        parameters whose forward is TorchScript on rnnkit's C++ operators; a clear error for the others
        (rnnkit/export/torchscript.py)."""
        from ..export.torchscript import scriptable_cell
        return scriptable_cell(self)

    def cell_weights(self) -> CellWeights:
        return CellWeights(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)

    def forward(self, input: Tensor, hx=None):
        cls = type(self).__name__
        if input.dim() not in (1, 2):
            raise ValueError(f"{cls}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        state = self._as_state(hx)
        for idx, value in enumerate(state or ()):
            if value.dim() not in (1, 2):
                what = "hidden" if self._state_arity == 1 else f"hx[{idx}]"
                raise ValueError(f"{cls}: Expected {what} to be 1D or 2D, got {value.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if state is None:
            zeros = input.new_zeros(input.size(0), self.hidden_size)
            state = (zeros,) * self._state_arity
        elif not is_batched:
            state = tuple(s.unsqueeze(0) for s in state)
        self._check_step_args(input, state)
        state = self.equations.step(input, state, self.cell_weights())
        if not is_batched:
            state = tuple(s.squeeze(0) for s in state)
        return state[0] if self._state_arity == 1 else state

    def _as_state(self, hx) -> Optional[State]:
        if hx is None:
            return None
        if self._state_arity == 1:
            if not isinstance(hx, Tensor):
                raise TypeError(f"{type(self).__name__}: expected hx to be a Tensor, got {type(hx).__name__}")
            return (hx,)
        if not isinstance(hx, (tuple, list)) or len(hx) != self._state_arity:
            raise TypeError(
                f"{type(self).__name__}: expected hx to be a tuple (h_0, c_0) of two Tensors, "
                f"got {type(hx).__name__}"
            )
        return tuple(hx)

    def _check_step_args(self, input: Tensor, state: State) -> None:
        # The size checks are torch's C++ ones (RNN.cpp: check_rnn_cell_forward_input, then
        # check_rnn_cell_forward_hidden for each state tensor), worded and ordered as there, so
        # a call with several faults reports the one torch.nn reports.  torch.nn meets a dtype
        # mismatch only afterwards, inside the matrix product; rnnkit checks dtypes there too,
        # with a message that says which tensor to convert.
        if input.size(1) != self.input_size:
            raise RuntimeError(
                f"input has inconsistent input_size: got {input.size(1)} expected {self.input_size}"
            )
        for k, s in enumerate(state):
            if input.size(0) != s.size(0):
                raise RuntimeError(
                    f"Input batch size {input.size(0)} doesn't match hidden{k} batch size {s.size(0)}"
                )
            if s.size(1) != self.hidden_size:
                raise RuntimeError(
                    f"hidden{k} has inconsistent hidden_size: got {s.size(1)}, expected {self.hidden_size}"
                )
        if input.dtype != self.weight_ih.dtype:
            raise RuntimeError(
                f"{type(self).__name__}: input dtype ({input.dtype}) does not match weight dtype "
                f"({self.weight_ih.dtype}); convert the input with input.to({self.weight_ih.dtype}) "
                f"or the cell with cell.to({input.dtype})"
            )
        for k, s in enumerate(state):
            if s.dtype != input.dtype:
                raise RuntimeError(
                    f"hidden{k} dtype ({s.dtype}) does not match input dtype ({input.dtype}); "
                    f"convert it with .to({input.dtype})"
                )
