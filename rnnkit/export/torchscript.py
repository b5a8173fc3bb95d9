"""TorchScript twins of rnnkit's layers and cells, what ``torch.jit.script`` compiles in their place.

An rnnkit layer's forward is Python TorchScript cannot compile (backend choice, numba kernels,
PackedSequence). As torchvision does for its modules, ``torch.jit.script`` asks every submodule for
``__prepare_scriptable__()`` and compiles what that returns: here a twin module that

- holds the layer's own ``nn.Parameter`` objects under the same names (the same ``state_dict`` keys;
  an optimizer step on the original moves the twin) and the same configuration;
- computes each layer-direction with rnnkit's C++ operators (``torch.ops.rnnkit.lstm`` ...), which
  TorchScript calls like any operator: the sequence length and batch size stay dynamic, and a saved
  model runs wherever ``import rnnkit`` registers the operators (``torch.jit.load`` after it);
- when called eagerly (torch.jit.script puts the twin in its parent's place in your Python model
  too), runs the original layer, so that model keeps every eager feature.

The scripted code takes padded or unbatched tensors on the CPU in float32 or float64 (the operators'
dtypes). A PackedSequence is not a Tensor: TorchScript itself refuses it with a type error. Autocast
is not applied. ``__prepare_scriptable__`` loads the extension, so scripting without it fails with
rnnkit.UnsupportedBackendError saying how to build it.
"""
from typing import Final, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UnsupportedBackendError
from ..kernels.ops import extension
from ..kernels.ops.families import FAMILIES

# The torch.nn cells the operators run, for the error that names them.
SCRIPTABLE_CELLS = "rnnkit.RNNCell, rnnkit.LSTMCell and rnnkit.GRUCell"


def _operator_of(module, equations) -> str:
    """The operator family name ("lstm", "gru", "rnn_tanh", "rnn_relu") that runs ``module``; loads
    the extension (UnsupportedBackendError, saying how to build, if it is missing)."""
    family = FAMILIES.get(equations)
    if family is None:
        raise UnsupportedBackendError(
            f"{type(module).__name__}: TorchScript (torch.jit.script) is supported for rnnkit.RNN, LSTM and GRU "
            f"and for {SCRIPTABLE_CELLS} with torch.nn's equations (what rnnkit's C++ operators run); use "
            "torch.jit.trace or torch.export for this module")
    for p in module.parameters():
        if p.device.type != "cpu" or p.dtype not in (torch.float32, torch.float64):
            raise UnsupportedBackendError(
                f"{type(module).__name__}: the TorchScript twin runs rnnkit's CPU operators in float32 or "
                f"float64; this module's parameters are {p.dtype} on {p.device}")
    extension.load()
    return family.name


def _own_parameter(module: nn.Module, name: str) -> Optional[nn.Parameter]:
    """The Parameter registered as ``name`` (None where registered absent); a clear error where a
    parametrization (weight norm, ...) computes the weight, which the twin would bypass."""
    if name not in module._parameters:
        raise UnsupportedBackendError(
            f"{type(module).__name__}: {name} is not a plain parameter (a parametrization computes it), "
            "which the TorchScript twin cannot follow; use torch.jit.trace or torch.export")
    return module._parameters[name]


def run_layer_direction(operator: str, x: Tensor, batch_sizes: Tensor, state0: List[Tensor], w_ih: Tensor,
                        w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor], w_hr: Optional[Tensor],
                        reverse: bool) -> Tuple[Tensor, List[Tensor]]:
    """One layer-direction on rnnkit's operator: x (N, I) in packed layout, state0 [h0 (B, P)] or
    [h0, c0 (B, H)] -> (output (N, P), final states like state0)."""
    if operator == "lstm":
        out, h, c, _, _ = torch.ops.rnnkit.lstm(x, batch_sizes, state0[0], state0[1], w_ih, w_hh, b_ih, b_hh,
                                                w_hr, reverse)
        return out, [h, c]
    if operator == "gru":
        out, h, _ = torch.ops.rnnkit.gru(x, batch_sizes, state0[0], w_ih, w_hh, b_ih, b_hh, reverse)
        return out, [h]
    if operator == "rnn_tanh":
        out, h = torch.ops.rnnkit.rnn_tanh(x, batch_sizes, state0[0], w_ih, w_hh, b_ih, b_hh, reverse)
        return out, [h]
    out, h = torch.ops.rnnkit.rnn_relu(x, batch_sizes, state0[0], w_ih, w_hh, b_ih, b_hh, reverse)
    return out, [h]


class _Twin(nn.Module):
    """What layer and cell twins share: the original module, run when the twin is called eagerly.

    It is kept in a tuple, out of TorchScript's and torch.jit.script's sight (a module attribute would
    be scripted, or prepared again, as a submodule)."""

    __jit_ignored_attributes__ = ["_original"]

    def __init__(self, original: nn.Module):
        super().__init__()
        self._original = (original,)
        self.train(original.training)

    @torch.jit.unused
    def _eager(self, input, hx):
        original = self._original[0]
        original.train(self.training)  # model.train()/eval() reach the twin, not the hidden original
        return original(input, hx)


class LayerTwin(_Twin):
    """The scriptable body of RNN, LSTM and GRU: torch.nn's checks, then the stack of layer-directions
    on rnnkit's operators (see the module doc). Subclasses give forward its hx and return types."""

    mode: str
    input_size: Final[int]
    hidden_size: Final[int]
    num_layers: Final[int]
    bias: Final[bool]
    batch_first: Final[bool]
    dropout: Final[float]
    bidirectional: Final[bool]
    proj_size: Final[int]
    _operator: Final[str]
    _family: Final[str]
    _dim_noun: Final[str]
    _output_writable: Final[bool]
    _weights_per_direction: Final[int]
    # The parameters in torch.nn's order, weight_ih_l0 first: TorchScript cannot look one up by a name it
    # builds, but indexes this list, which holds the very Parameter objects (kept so by jit.save/load).
    _flat_weights: List[Tensor]

    def __init__(self, layer):
        super().__init__(layer)
        self._operator = _operator_of(layer, layer.equations)
        self.mode = layer.mode
        self.input_size, self.hidden_size, self.num_layers = layer.input_size, layer.hidden_size, layer.num_layers
        self.bias, self.batch_first, self.dropout = layer.bias, layer.batch_first, layer.dropout
        self.bidirectional, self.proj_size = layer.bidirectional, layer.proj_size
        self._family, self._dim_noun, self._output_writable = layer._family, layer._dim_noun, layer._output_writable
        for name in layer._flat_weights_names:
            self.register_parameter(name, _own_parameter(layer, name))
        self._flat_weights = [getattr(self, name) for name in layer._flat_weights_names]
        self._weights_per_direction = len(self._flat_weights) // (self.num_layers * (2 if self.bidirectional else 1))

    def extra_repr(self) -> str:
        return self._original[0].extra_repr()

    def _state_sizes(self) -> List[int]:
        h_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        return [h_size, self.hidden_size] if self._operator == "lstm" else [h_size]

    def _check_state_dims(self, state: List[Tensor], dim: int):
        for s in state:
            if s.dim() != dim:
                kind = "batched 3-D" if dim == 3 else "unbatched 2-D"
                if len(state) == 1:
                    raise RuntimeError(f"For {kind} input, hx should also be {dim}-D but got {s.dim()}-D tensor")
                raise RuntimeError(f"For {kind} input, hx and cx should also be {dim}-D but got "
                                   f"({state[0].dim()}-D, {state[1].dim()}-D) tensors")

    def _check_state(self, state: List[Tensor], batch: int):
        layers = self.num_layers * (2 if self.bidirectional else 1)
        sizes = self._state_sizes()
        for k in range(len(state)):
            if state[k].shape != [layers, batch, sizes[k]]:
                what = "hidden" if len(state) == 1 else f"hidden[{k}]"
                raise RuntimeError("Expected {} size {}, got {}".format(  # torch.nn's tuple, then list
                    what, (layers, batch, sizes[k]), list(state[k].shape)))

    def _weights(self, index: int) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
        """(w_ih, w_hh, b_ih, b_hh, w_hr) of layer-direction ``index`` (None where absent)."""
        first = index * self._weights_per_direction
        w_ih, w_hh = self._flat_weights[first], self._flat_weights[first + 1]
        b_ih: Optional[Tensor] = None
        b_hh: Optional[Tensor] = None
        if self.bias:
            b_ih, b_hh = self._flat_weights[first + 2], self._flat_weights[first + 3]
        w_hr: Optional[Tensor] = None
        if self.proj_size > 0:
            w_hr = self._flat_weights[first + self._weights_per_direction - 1]
        return w_ih, w_hh, b_ih, b_hh, w_hr

    def _forward_states(self, input: Tensor, hx: Optional[List[Tensor]]) -> Tuple[Tensor, List[Tensor]]:
        """(output, final states) of ``input`` and the initial states ``hx`` ([h_0] or [h_0, c_0])."""
        if input.dim() != 2 and input.dim() != 3:
            raise ValueError(f"{self._family}: Expected input to be 2D or 3D, got {input.dim()}D{self._dim_noun} instead")
        is_batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if hx is not None:
            self._check_state_dims(hx, 3 if is_batched else 2)
        if not is_batched:
            input = input.unsqueeze(batch_dim)
            if hx is not None:
                hx = [s.unsqueeze(1) for s in hx]  # (L*D, 1, S)
        if input.size(-1) != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {input.size(-1)}")
        if self.batch_first:
            input = input.transpose(0, 1)  # (T, B, I)
        steps, batch = input.size(0), input.size(1)
        num_directions = 2 if self.bidirectional else 1
        if hx is None:
            state = [torch.zeros(self.num_layers * num_directions, batch, size, dtype=input.dtype, device=input.device)
                     for size in self._state_sizes()]  # each (L*D, B, S)
        else:
            self._check_state(hx, batch)
            state = hx
        if steps == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")

        x = input.reshape(steps * batch, input.size(2))  # (T*B, I): the packed layout of a padded batch
        batch_sizes = torch.full([steps], batch, dtype=torch.int64)  # every step holds the whole batch
        finals: List[List[Tensor]] = [[] for _ in state]
        for layer in range(self.num_layers):
            outs: List[Tensor] = []
            for direction in range(num_directions):
                index = layer * num_directions + direction
                w_ih, w_hh, b_ih, b_hh, w_hr = self._weights(index)
                out, final = run_layer_direction(self._operator, x, batch_sizes, [s[index] for s in state],
                                                 w_ih, w_hh, b_ih, b_hh, w_hr, direction == 1)
                outs.append(out)  # (T*B, P)
                for k in range(len(final)):
                    finals[k].append(final[k])
            x = outs[0] if num_directions == 1 else torch.cat(outs, 1)  # (T*B, D*P)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        if self._output_writable and num_directions == 1 and x.requires_grad:
            x = x.clone()  # the operator's backward reads the output, which the caller may change in place
        output = x.view(steps, batch, x.size(1))  # (T, B, D*P)
        if self.batch_first:
            output = output.transpose(0, 1)  # (B, T, D*P)
        final_states = [torch.stack(f) for f in finals]  # each (L*D, B, S)
        if not is_batched:
            output = output.squeeze(batch_dim)  # (T, D*P)
            final_states = [s.squeeze(1) for s in final_states]  # each (L*D, S)
        return output, final_states


class RNNTwin(LayerTwin):
    """The TorchScript twin of rnnkit.RNN and rnnkit.GRU: ``forward(input, hx=None) -> (output, h_n)``.
    input is a padded or unbatched Tensor (a PackedSequence is refused by TorchScript's type check)."""

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if not torch.jit.is_scripting():
            return self._eager(input, hx)
        state: Optional[List[Tensor]] = None
        if hx is not None:
            state = [hx]
        output, final = self._forward_states(input, state)
        return output, final[0]


class LSTMTwin(LayerTwin):
    """The TorchScript twin of rnnkit.LSTM: ``forward(input, hx=None) -> (output, (h_n, c_n))``.
    input is a padded or unbatched Tensor (a PackedSequence is refused by TorchScript's type check)."""

    def forward(self, input: Tensor,
                hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        if not torch.jit.is_scripting():
            return self._eager(input, hx)
        state: Optional[List[Tensor]] = None
        if hx is not None:
            state = [hx[0], hx[1]]
        output, final = self._forward_states(input, state)
        return output, (final[0], final[1])


class CellTwin(_Twin):
    """The scriptable body of RNNCell, LSTMCell and GRUCell: one step is the operator's T = 1 case."""

    input_size: Final[int]
    hidden_size: Final[int]
    bias: Final[bool]
    _operator: Final[str]
    _name: Final[str]

    def __init__(self, cell):
        super().__init__(cell)
        self._operator = _operator_of(cell, cell.equations)
        self._name = type(cell).__name__
        self.input_size, self.hidden_size, self.bias = cell.input_size, cell.hidden_size, cell.bias
        if hasattr(cell, "nonlinearity"):
            self.nonlinearity = cell.nonlinearity
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            self.register_parameter(name, _own_parameter(cell, name))

    def extra_repr(self) -> str:
        return self._original[0].extra_repr()

    def _step(self, input: Tensor, hx: Optional[List[Tensor]]) -> List[Tensor]:
        """The states after one step from ``input`` and ``hx`` ([h] or [h, c]; zeros when None)."""
        if input.dim() != 1 and input.dim() != 2:
            raise ValueError(f"{self._name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for k in range(len(hx)):
                if hx[k].dim() != 1 and hx[k].dim() != 2:
                    what = "hidden" if len(hx) == 1 else f"hx[{k}]"
                    raise ValueError(f"{self._name}: Expected {what} to be 1D or 2D, got {hx[k].dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)  # (1, I)
        arity = 2 if self._operator == "lstm" else 1
        if hx is None:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)  # (B, H)
            state = [zeros for _ in range(arity)]
        elif not is_batched:
            state = [s.unsqueeze(0) for s in hx]  # each (1, H)
        else:
            state = hx
        self._check_step_args(input, state)
        batch_sizes = torch.full([1], input.size(0), dtype=torch.int64)  # one step of the whole batch
        _, final = run_layer_direction(self._operator, input, batch_sizes, state, self.weight_ih, self.weight_hh,
                                       self.bias_ih, self.bias_hh, None, False)
        if not is_batched:
            final = [s.squeeze(0) for s in final]  # each (H,)
        return final

    def _check_step_args(self, input: Tensor, state: List[Tensor]):
        if input.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {self.input_size}")
        for k in range(len(state)):
            if input.size(0) != state[k].size(0):
                raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden{k} batch size "
                                   f"{state[k].size(0)}")
            if state[k].size(1) != self.hidden_size:
                raise RuntimeError(f"hidden{k} has inconsistent hidden_size: got {state[k].size(1)}, "
                                   f"expected {self.hidden_size}")


class RNNCellTwin(CellTwin):
    """The TorchScript twin of rnnkit.RNNCell and rnnkit.GRUCell: ``forward(input, hx=None) -> h'``."""

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        if not torch.jit.is_scripting():
            return self._eager(input, hx)
        state: Optional[List[Tensor]] = None
        if hx is not None:
            state = [hx]
        return self._step(input, state)[0]


class LSTMCellTwin(CellTwin):
    """The TorchScript twin of rnnkit.LSTMCell: ``forward(input, hx=None) -> (h', c')``."""

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        if not torch.jit.is_scripting():
            return self._eager(input, hx)
        state: Optional[List[Tensor]] = None
        if hx is not None:
            state = [hx[0], hx[1]]
        final = self._step(input, state)
        return final[0], final[1]


def scriptable_layer(layer) -> LayerTwin:
    """The twin torch.jit.script compiles in place of an rnnkit RNN, LSTM or GRU."""
    return LSTMTwin(layer) if len(layer._state_names) == 2 else RNNTwin(layer)


def scriptable_cell(cell) -> CellTwin:
    """The twin torch.jit.script compiles in place of an rnnkit RNNCell, LSTMCell or GRUCell; a clear
    error for the other cells, which no operator runs."""
    return LSTMCellTwin(cell) if cell._state_arity == 2 else RNNCellTwin(cell)


__all__ = ["scriptable_layer", "scriptable_cell", "LayerTwin", "CellTwin",
           "RNNTwin", "LSTMTwin", "RNNCellTwin", "LSTMCellTwin"]
