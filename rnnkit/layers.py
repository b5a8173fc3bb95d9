"""torch.nn-compatible recurrent layers: arguments, parameter names, checks; the math is in cells/."""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import export as _export
from . import kernels
from ._memo import memoized
from .cells import GRU_EQUATIONS, LSTM_EQUATIONS, CellEquations, CellWeights, elman_equations
from .cells._base import check_size_arg
from .cells.gru import GRUCell
from .cells.elman import RNNCell
from .cells.lstm import LSTMCell
from .recurrent import packed_batch_sizes, run_stack

_SHAPES_DOC = """
    Shapes (L = sequence length, N = batch, D = 2 if bidirectional else 1,
    H_out = proj_size if proj_size > 0 else hidden_size):

    =============  ======================================================
    input          (L, N, H_in), (N, L, H_in) if batch_first, (L, H_in)
                   unbatched, or a PackedSequence
    h_0            (D * num_layers, N, H_out), or (D * num_layers, H_out)
    c_0 (LSTM)     (D * num_layers, N, hidden_size)
    output         (L, N, D * H_out) (batch_first: (N, L, D * H_out))
    h_n, c_n       like h_0, c_0: the last state of each layer-direction;
                   for the reverse direction that is the state after
                   reading the first step, not output[-1]
    =============  ======================================================
"""


@memoized
def _weight_names(layer: int, direction: int, bias: bool, projected: bool) -> tuple:
    """torch.nn's parameter names of one layer-direction, in CellWeights' order; None for the weights
    the layer has no parameter for (biases with bias=False, w_hr without proj_size)."""
    suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
    stems = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else (None, None)) + \
        ("weight_hr" if projected else None,)
    return tuple(None if stem is None else stem + suffix for stem in stems)


class RNNBase(nn.Module):
    """The shared body of RNN, LSTM and GRU: parameters, checks and the one forward.

    Subclasses name their cell ``equations`` and their state (``_state_names``); the
    time loop is rnnkit.recurrent.run_stack, run by a kernel from rnnkit.kernels.
    ``backend`` (keyword only): "auto" (the fastest backend that supports the call),
    "reference" (plain torch ops, autograd backward), or any registered backend.
    """

    _state_names: tuple = ("h",)
    _num_gates: int = 1
    _family: str = "RNN"  # torch.nn's name for the family in its messages, whatever the subclass
    _dim_noun: str = " tensor"  # torch.nn's input-dimension message says "3D tensor" for RNN, "3D" for the others
    # Whether the caller may change the output in place before the backward, as torch.nn's RNN and GRU
    # allow (their backward keeps each step's state, not the output); torch.nn's LSTM refuses, and so
    # does rnnkit's (autograd's "modified by an inplace operation"), which saves a copy.
    _output_writable: bool = True

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device=None, dtype=None,
                 *, backend: str = "auto") -> None:
        super().__init__()
        # Checks in torch.nn's order, with its exception types and messages.
        if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an "
                f"element being zeroed, got {dropout!r}"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={num_layers}",
                stacklevel=3,
            )
        if not isinstance(bias, bool):
            raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first should be of type bool, got: {type(batch_first).__name__}")
        check_size_arg("input_size", input_size)
        if input_size <= 0:
            raise ValueError(f"input_size must be greater than zero, got {input_size}")
        check_size_arg("hidden_size", hidden_size)
        if hidden_size <= 0:
            raise ValueError(f"hidden_size must be greater than zero, got {hidden_size}")
        check_size_arg("num_layers", num_layers)
        if num_layers <= 0:
            raise ValueError(f"num_layers must be greater than zero, got {num_layers}")
        check_size_arg("proj_size", proj_size)
        if proj_size < 0:
            raise ValueError(
                f"proj_size should be a positive integer or zero to disable projections, got {proj_size}"
            )
        if proj_size >= hidden_size:
            raise ValueError(
                f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} "
                f"and hidden_size={hidden_size}"
            )
        kernels.check_backend_name(backend)

        self.mode = mode  # informational, as torch.nn keeps it; nothing dispatches on it
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.backend = backend

        factory = {"device": device, "dtype": dtype}
        num_directions = 2 if bidirectional else 1
        gate_size = self._num_gates * hidden_size
        real_hidden_size = proj_size if proj_size > 0 else hidden_size
        self._flat_weights_names: list = []
        self._all_weights: list = []
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else real_hidden_size * num_directions
            for direction in range(num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = {"weight_ih": (gate_size, layer_input_size),
                          "weight_hh": (gate_size, real_hidden_size)}
                if bias:
                    shapes.update(bias_ih=(gate_size,), bias_hh=(gate_size,))
                if proj_size > 0:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                names = []
                for stem, shape in shapes.items():
                    setattr(self, stem + suffix, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(stem + suffix)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    # ----- torch.nn's public surface -------------------------------------------------
    def reset_parameters(self) -> None:
        # The same uniform draws in the same order as torch.nn: one seed, identical layers.
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """A no-op, kept for compatibility: rnnkit reads the parameters where they are."""

    @property
    def _flat_weights(self) -> list:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def __prepare_scriptable__(self):
        """What torch.jit.script compiles in this layer's place: a twin on the same parameters whose forward
        is TorchScript on rnnkit's C++ operators (rnnkit/export/torchscript.py)."""
        from .export.torchscript import scriptable_layer
        return scriptable_layer(self)

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        if self.backend != "auto":
            s += ", backend={backend!r}"
        return s.format(**self.__dict__)

    # ----- what subclasses decide ------------------------------------------------------
    @property
    def equations(self) -> CellEquations:
        raise NotImplementedError

    def _state_sizes(self) -> tuple:
        """Feature size of each state tensor (h first)."""
        return (self.proj_size or self.hidden_size,)

    def layer_weights(self, layer: int, direction: int) -> CellWeights:
        """The parameters of one layer-direction, as the cell equations name them."""
        params = self._parameters
        # the registered Parameter (a dict lookup, called per layer-direction and call); getattr
        # for a weight a parametrization or weight norm has replaced
        # (a loop, not a comprehension with :=, which dynamo cannot trace)
        # (the absent ones named None, not looked up: a failed getattr on a Module costs microseconds)
        weights = []
        for name in _weight_names(layer, direction, self.bias, self.proj_size > 0):
            p = None if name is None else params.get(name)
            weights.append(p if p is not None or name is None else getattr(self, name, None))
        return CellWeights(*weights)

    # ----- the one forward --------------------------------------------------------------
    def forward(self, input, hx=None):
        if _export.exporting():  # inside torch.export / torch.onnx.export: see rnnkit/export
            return _export.captured_forward(self, input, hx)
        num_directions = 2 if self.bidirectional else 1
        cls = type(self).__name__
        if torch.jit.is_tracing():
            input, hx = _export.pin_traced_shapes(cls, input, hx)
        autocast_to = self._autocast_dtype(input)
        if autocast_to is not None:
            input, hx = _cast_eligible(input, autocast_to), _cast_eligible(hx, autocast_to)
        state = self._as_state(hx)
        if isinstance(input, PackedSequence):
            data, batch_sizes_t, sorted_indices, unsorted_indices = input
            is_batched, batch_dim = True, None
            self._check_input(data, expected_dim=2)
            batch_sizes = packed_batch_sizes(data, batch_sizes_t, cls)
            batch = batch_sizes[0]
        else:
            sorted_indices = unsorted_indices = None
            if input.dim() not in (2, 3):
                raise self._input_dim_error(input.dim())
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            self._check_state_dims(state, 3 if is_batched else 2)
            if not is_batched:
                input = input.unsqueeze(batch_dim)
                state = None if state is None else tuple(s.unsqueeze(1) for s in state)
            self._check_input(input, expected_dim=3)
            if self.batch_first:
                input = input.transpose(0, 1)
            steps, batch = input.shape[0], input.shape[1]
            if steps == 0:
                # torch.nn's message; it checks hx first (its Python checks run before its kernel's)
                if state is not None:
                    self._check_state(state, batch, input.dtype)
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
            data = input.reshape(steps * batch, input.shape[2])  # (T*B, I): packed layout, fixed batch
            batch_sizes = [batch] * steps
        if state is None:
            state = tuple(data.new_zeros(self.num_layers * num_directions, batch, size)
                          for size in self._state_sizes())
        else:
            self._check_state(state, batch, data.dtype)
            if sorted_indices is not None:
                state = tuple(s.index_select(1, sorted_indices) for s in state)

        eq = self.equations
        weights = [self.layer_weights(layer, d) for layer in range(self.num_layers) for d in range(num_directions)]
        if autocast_to is not None:
            weights = [_cast_eligible(w, autocast_to) for w in weights]
        kernel = kernels.select(self.backend, eq, data, weights[0])
        out, state = run_stack(
            data, batch_sizes, state,
            lambda layer, d, x, bs, s0: kernel.layer(eq, x, bs, s0, weights[layer * num_directions + d], d == 1),
            num_layers=self.num_layers, num_directions=num_directions,
            dropout=self.dropout, training=self.training, fresh_states=kernel.fresh_states,
        )
        if self._output_writable and num_directions == 1 and out.requires_grad and kernel is not kernels.REFERENCE:
            out = out.clone()  # the fused backward reads the last layer's output, which the caller may now change

        if unsorted_indices is not None:
            state = tuple(s.index_select(1, unsorted_indices) for s in state)
        if isinstance(input, PackedSequence):
            output = PackedSequence(out, batch_sizes_t, sorted_indices, unsorted_indices)
        else:
            output = out.view(len(batch_sizes), batch, out.shape[-1])  # (T, B, D*H_out)
            if self.batch_first:
                output = output.transpose(0, 1)
            if not is_batched:
                output = output.squeeze(batch_dim)
                state = tuple(s.squeeze(1) for s in state)
        return output, self._as_hx(state)

    def _input_dim_error(self, dim: int) -> ValueError:
        return ValueError(f"{self._family}: Expected input to be 2D or 3D, got {dim}D{self._dim_noun} instead")

    def _autocast_dtype(self, input):
        """Under autocast, the dtype to cast this whole call to (input, states and weights; the result
        in that dtype), or None where autocast acts op by op.

        As torch.nn: autocast casts cuDNN's RNN op whole (on CUDA, every layer); on the CPU it casts
        oneDNN's LSTM layer op, which torch.nn's LSTM takes for a padded float32 input without
        projections when oneDNN is enabled.  Elsewhere torch.nn's loop runs op by op, each product
        autocast on its own, and so does rnnkit's reference loop (the fused kernels refuse autocast).
        """
        data = input.data if isinstance(input, PackedSequence) else input
        device_type = data.device.type
        if not torch.is_autocast_enabled(device_type):
            return None
        if device_type == "cuda" or (device_type == "cpu" and self._autocast_whole_on_cpu(input)):
            return torch.get_autocast_dtype(device_type)
        return None

    def _autocast_whole_on_cpu(self, input) -> bool:
        return False

    # ----- state conversion and checks --------------------------------------------------
    def _as_state(self, hx) -> Optional[tuple]:
        """hx as the user gives it -> a tuple of tensors (h,) or (h, c)."""
        if hx is None:
            return None
        if len(self._state_names) == 1:
            if not isinstance(hx, Tensor):
                raise TypeError(f"{type(self).__name__}: expected hx to be a Tensor, got {type(hx).__name__}")
            return (hx,)
        if (not isinstance(hx, (tuple, list)) or len(hx) != 2
                or not all(isinstance(s, Tensor) for s in hx)):
            raise TypeError(
                f"{type(self).__name__}: expected hx to be a tuple (h_0, c_0) of two Tensors, "
                f"got {type(hx).__name__}"
            )
        return tuple(hx)

    def _as_hx(self, state: tuple):
        return state[0] if len(state) == 1 else state

    def _check_state_dims(self, state, dim: int) -> None:
        if state is None or all(s.dim() == dim for s in state):
            return
        kind = "batched 3-D" if dim == 3 else "unbatched 2-D"
        if len(state) == 1:
            raise RuntimeError(f"For {kind} input, hx should also be {dim}-D but got {state[0].dim()}-D tensor")
        raise RuntimeError(
            f"For {kind} input, hx and cx should also be {dim}-D but got "
            f"({state[0].dim()}-D, {state[1].dim()}-D) tensors"
        )

    def _check_input(self, input: Tensor, expected_dim: int) -> None:
        weight_dtype = self.weight_ih_l0.dtype
        if input.dtype != weight_dtype and not torch.is_autocast_enabled(input.device.type):
            # torch.nn's wording, which says "RNN" for every layer (LSTM and GRU too)
            raise ValueError(
                f"RNN input dtype ({input.dtype}) does not match weight dtype ({weight_dtype}). "
                f"Convert input: input.to({weight_dtype}), or convert model: model.to({input.dtype})"
            )
        if input.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {input.dim()}")
        if input.size(-1) != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {input.size(-1)}"
            )

    def _check_state(self, state: tuple, batch: int, dtype) -> None:
        layers = self.num_layers * (2 if self.bidirectional else 1)
        single = len(state) == 1
        for k, (s, size) in enumerate(zip(state, self._state_sizes())):
            expected = (layers, batch, size)
            if s.shape != expected:
                what = "hidden" if single else f"hidden[{k}]"
                raise RuntimeError(f"Expected {what} size {expected}, got {list(s.shape)}")
            if s.dtype != dtype:
                what = "hx" if single else ("h_0", "c_0")[k]
                raise RuntimeError(
                    f"{type(self).__name__}: {what} dtype ({s.dtype}) does not match input dtype ({dtype}); "
                    f"convert it with {what}.to({dtype})"
                )


def _cast_eligible(value, dtype):
    """``value`` (a tensor, a PackedSequence, a tuple of them or None) with its floating tensors cast
    to ``dtype`` as autocast casts them: float64 stays float64."""
    if value is None:
        return None
    if isinstance(value, PackedSequence):
        return value._replace(data=_cast_eligible(value.data, dtype))
    if isinstance(value, tuple):
        return type(value)(*[_cast_eligible(v, dtype) for v in value]) if hasattr(value, "_fields") \
            else tuple(_cast_eligible(v, dtype) for v in value)
    if isinstance(value, list):
        return [_cast_eligible(v, dtype) for v in value]
    if value.is_floating_point() and value.dtype != torch.float64:
        return value.to(dtype)
    return value


class RNN(RNNBase):
    __doc__ = r"""A multi-layer Elman RNN with tanh or ReLU non-linearity, as ``torch.nn.RNN``.

    For each element of the input sequence each layer computes

    .. math::  h_t = \tanh(x_t W_{ih}^T + b_{ih} + h_{t-1} W_{hh}^T + b_{hh})

    (``nonlinearity="relu"`` uses ReLU); layer k > 0 reads the outputs of layer k-1
    (dropout between them in training when ``dropout > 0``).

    Arguments as torch.nn.RNN: input_size, hidden_size, num_layers=1, nonlinearity="tanh",
    bias=True, batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None;
    plus keyword-only ``backend="auto"``.
""" + _SHAPES_DOC + r"""
    Equivalent to (one layer, one direction, batch_first=False)::

        h = h_0[0]
        for t in range(x.size(0)):
            h = torch.tanh(x[t] @ weight_ih_l0.T + bias_ih_l0 + h @ weight_hh_l0.T + bias_hh_l0)
            output.append(h)
    """

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            nonlinearity = kwargs.pop("nonlinearity", "tanh")
        elman_equations(nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", *args, **kwargs)

    @property
    def equations(self) -> CellEquations:
        return elman_equations(self.nonlinearity)


class LSTM(RNNBase):
    __doc__ = r"""A multi-layer long short-term memory RNN, as ``torch.nn.LSTM``.

    .. math::
        \begin{array}{ll}
        i_t = \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) \\
        f_t = \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        g_t = \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
        o_t = \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
        c_t = f_t \odot c_{t-1} + i_t \odot g_t \\
        h_t = o_t \odot \tanh(c_t)
        \end{array}

    With ``proj_size > 0``, ``h_t = W_{hr} (o_t \odot \tanh(c_t))`` of size proj_size
    (parameters ``weight_hr_l{k}``), and h_0/output use proj_size while c_0 keeps hidden_size.

    Arguments as torch.nn.LSTM: input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, proj_size=0, device=None,
    dtype=None; plus keyword-only ``backend="auto"``. Called as ``lstm(input, (h_0, c_0))``,
    returns ``output, (h_n, c_n)``.
""" + _SHAPES_DOC + r"""
    Equivalent to (one layer, one direction)::

        cell = rnnkit.LSTMCell(input_size, hidden_size)  # with the layer's *_l0 parameters
        for t in range(x.size(0)):
            h, c = cell(x[t], (h, c))
    """

    _state_names = ("h", "c")
    _num_gates = 4
    _family, _dim_noun = "LSTM", ""
    _output_writable = False

    def _autocast_whole_on_cpu(self, input) -> bool:
        # torch.nn's condition for its oneDNN LSTM (aten/src/ATen/native/RNN.cpp, use_mkldnn)
        return (self.proj_size == 0 and not isinstance(input, PackedSequence) and input.dtype == torch.float32
                and input.numel() > 0 and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    @property
    def equations(self) -> CellEquations:
        return LSTM_EQUATIONS

    def _state_sizes(self) -> tuple:
        return (self.proj_size or self.hidden_size, self.hidden_size)


class GRU(RNNBase):
    __doc__ = r"""A multi-layer gated recurrent unit RNN, as ``torch.nn.GRU``.

    .. math::
        \begin{array}{ll}
        r_t = \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z_t = \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n_t = \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}
        \end{array}

    Arguments as torch.nn.GRU: input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None;
    plus keyword-only ``backend="auto"``.
""" + _SHAPES_DOC + r"""
    Equivalent to (one layer, one direction)::

        cell = rnnkit.GRUCell(input_size, hidden_size)  # with the layer's *_l0 parameters
        for t in range(x.size(0)):
            h = cell(x[t], h)
    """

    _num_gates = 3
    _family, _dim_noun = "GRU", ""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)

    @property
    def equations(self) -> CellEquations:
        return GRU_EQUATIONS


__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]
