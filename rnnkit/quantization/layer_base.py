"""What the int8 LSTM and GRU share: the int8 parameters, the checks and the one forward.

A dynamically quantized layer holds, per layer-direction (suffix ``_l{k}`` or ``_l{k}_reverse``,
as torch.nn names the float parameters):

    ======================================  ==============  ===================================
    weight_ih{s}_int8, weight_ih{s}_scale   (G*H, I), (G*H,)  W_ih as int8 + per-row scales
    weight_hh{s}_int8, weight_hh{s}_scale   (G*H, P), (G*H,)  W_hh likewise
    bias_ih{s}, bias_hh{s}                  (G*H,)          float32 (bias=True only)
    weight_hr{s}_int8, weight_hr{s}_scale   (P, H), (P,)    LSTM with proj_size P > 0
    ======================================  ==============  ===================================

(G = 4 for the LSTM, 3 for the GRU; P = proj_size or H; I = the layer's input size.)  They are
buffers: ``state_dict``, ``load_state_dict``, ``.to()``, deepcopy and pickle carry them.  The names
differ from the float layer's, so loading a float state_dict is refused (missing keys), never
cast silently to int8.

The forward computes, per layer-direction, the input projection of all steps at once (fbgemm's
int8 product, or int8 weights times float x: see PRODUCTS below), then the time loop in one jitted
call (lstm_loop.py, gru_loop.py: the recurrent int8 product and the float kernels' gate math).  Input forms and results are
the float layer's: padded (batch_first or not), unbatched 2-D, PackedSequence (sorted or not),
h_0/c_0 or zeros, bidirectional, multi-layer.  Inference only: training mode, or an input
or state that requires grad while grad mode is on, is refused (there is no backward).
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .. import export as _export
from ..recurrent import packed_batch_sizes, run_stack
from .cpu_features import fbgemm_reduce_range, has_vnni
from .int8_weight import Int8Weight

# The products, chosen together ("recurrent_product", an attribute of each layer):
# - "vnni": the input projection on fbgemm (torch.ops.quantized.linear_dynamic: x quantized to uint8
#   per call, over 8 bits: VNNI sums u8 x s8 pairs straight into int32, so fbgemm needs none of the
#   7-bit reduce_range that torch's own modules use against the int16 saturation of its AVX2
#   kernels), the recurrent product int8 x int8 (int8_vnni.py);
# - "fbgemm_input" (opt-in, for speed on CPUs without avx512_vnni): the input projection on fbgemm with x
#   over 7 bits (reduce_range, as torch's own input projection), the recurrent product int8 weights
#   times float h (int8_gemm.py).  The input projection of all steps is the largest product, and
#   fbgemm's AVX2 kernels run it 2.6-4x faster than int8_gemm.py's (AVX2 EPYC, Zen 3, (N, 512) @
#   (512, 1024)^T, 2 threads, N = 25 to 500); h, rounded at every step, stays in float.  Its error is
#   about torch's (0.91-1.09 of it on the models below), which is why it is not the default;
# - "float_x_int8": both products int8 weights times float activations (int8_gemm.py): the least error;
# - "auto": "vnni" where the CPU has avx512_vnni, else "float_x_int8".
# Measured on 2-layer models (I = 12, H = 24, T = 15, B = 4, six seeds): output error against float
# 0.52-0.61 of torch's quantize_dynamic's with "vnni", 0.26-0.39 with "float_x_int8"; with fbgemm at
# 7 bits (reduce_range) for both products it was 0.91-1.10 of torch's.
PRODUCTS = ("auto", "vnni", "fbgemm_input", "float_x_int8")


@lru_cache(maxsize=64)
def step_layout(batch_sizes: tuple) -> tuple:
    """(offsets (T+1,), sizes (T,)) of the packed steps, int64 arrays, read-only (cached: they are
    the same for every layer-direction and, usually, every call)."""
    bsz = np.asarray(batch_sizes, dtype=np.int64)
    offsets = np.zeros(len(bsz) + 1, dtype=np.int64)
    np.cumsum(bsz, out=offsets[1:])
    offsets.setflags(write=False)
    bsz.setflags(write=False)
    return offsets, bsz


class RowPlan(NamedTuple):
    """What ``kernels/cpu/split.run_rows`` runs a loop over rows lo..hi by: the packed layout, and
    ``chunks``, the batch rows split across threads (each runs the whole loop on its own rows: the
    rows of a recurrence never mix), or None."""

    offsets: np.ndarray
    bsz: np.ndarray
    chunks: Optional[tuple]

    @property
    def parts(self) -> int:
        return 1 if self.chunks is None else len(self.chunks[0]) - 1


def row_plan(batch_sizes, offsets: np.ndarray, bsz: np.ndarray) -> RowPlan:
    """The loop's rows split across torch's threads where the batch is large enough (at batch 20 the
    tutorial LM's int8 LSTM ran one thread's loop while torch's fbgemm LSTM ran each step's product on
    two; split.thread_parts says when it pays)."""
    from ..kernels.cpu import row_split

    return RowPlan(offsets, bsz, row_split(tuple(batch_sizes), int(bsz[0]) if len(bsz) else 0, torch.float32))


def npy(t: Tensor) -> np.ndarray:
    """A numpy view sharing ``t``'s memory (contiguous, on the CPU), for the jitted loops.  (Not
    kernels/cpu/common's: importing that imports numba, which ``import rnnkit`` must not.)"""
    return t.numpy()


class DynamicQuantizedRNNBase(nn.Module):
    """The shared body of DynamicQuantizedLSTM and DynamicQuantizedGRU (see the module docstring).

    ``recurrent_product`` (an attribute, default "auto") picks the products (see PRODUCTS): "vnni" (int8 x
    int8 with h quantized per row at each step; CPUs with avx512_vnni), "fbgemm_input" (the input
    projection on fbgemm, x over 7 bits; int8 weights times float h in the loop), "float_x_int8" (int8
    weights times float x and h: every x86 CPU), "auto" ("vnni" where the CPU has it, else "float_x_int8").

    Subclasses set ``_float_class`` (the rnnkit layer they replace), ``_num_gates``,
    ``_state_names`` and implement ``_layer`` (one layer-direction) and ``_fold_input_bias``.
    Built from a float layer with ``from_float(layer)`` (what ``quantize_dynamic`` calls).
    """

    _float_class: type = None
    _num_gates: int = 1
    _state_names: tuple = ("h",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        self._packed_cache: dict = {}
        self.recurrent_product = "auto"
        self.training = False  # built for inference: eval mode from the start
        gate_rows = self._num_gates * hidden_size
        out_size = proj_size or hidden_size
        directions = 2 if bidirectional else 1
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else out_size * directions
            for direction in range(directions):
                s = self._suffix(layer, direction)
                self._register_int8(f"weight_ih{s}", gate_rows, layer_input)
                self._register_int8(f"weight_hh{s}", gate_rows, out_size)
                if bias:
                    self.register_buffer(f"bias_ih{s}", torch.zeros(gate_rows))
                    self.register_buffer(f"bias_hh{s}", torch.zeros(gate_rows))
                if proj_size > 0:
                    self._register_int8(f"weight_hr{s}", proj_size, hidden_size)

    @staticmethod
    def _suffix(layer: int, direction: int) -> str:
        return f"_l{layer}" + ("_reverse" if direction == 1 else "")

    def _register_int8(self, name: str, rows: int, cols: int) -> None:
        self.register_buffer(name + "_int8", torch.zeros(rows, cols, dtype=torch.int8))
        self.register_buffer(name + "_scale", torch.ones(rows))

    def _int8(self, name: str) -> Int8Weight:
        return Int8Weight(getattr(self, name + "_int8"), getattr(self, name + "_scale"))

    # ----- building from a float layer --------------------------------------------------
    @classmethod
    def from_float(cls, mod, use_precomputed_fake_quant: bool = False):
        """The int8 twin of the float rnnkit layer ``mod`` (which is not changed).

        ``use_precomputed_fake_quant`` is torch.ao's argument (for QAT-converted modules); dynamic
        quantization computes the scales from the weights, so it has no effect.
        """
        name = cls._float_class.__name__
        if type(mod) is not cls._float_class:
            raise TypeError(f"{cls.__name__}.from_float takes an rnnkit.{name}, got {type(mod).__name__}")
        _check_qconfig(mod, name)
        for p in mod.parameters():
            if p.dtype != torch.float32 or p.device.type != "cpu":
                raise ValueError(
                    f"rnnkit.quantize_dynamic: rnnkit.{name} needs float32 parameters on the CPU to be quantized "
                    f"(int8 inference runs on the CPU), got {p.dtype} on {p.device}; convert it with .float().cpu()")
        q = cls(mod.input_size, mod.hidden_size, mod.num_layers, mod.bias, mod.batch_first, mod.dropout,
                mod.bidirectional, **cls._extra_args(mod))
        directions = 2 if mod.bidirectional else 1
        with torch.no_grad():
            for layer in range(mod.num_layers):
                for direction in range(directions):
                    s = cls._suffix(layer, direction)
                    w = mod.layer_weights(layer, direction)
                    for stem, weight in (("weight_ih", w.w_ih), ("weight_hh", w.w_hh), ("weight_hr", w.w_hr)):
                        if weight is not None:
                            values, scale = Int8Weight.quantize(weight)
                            getattr(q, f"{stem}{s}_int8").copy_(values)
                            getattr(q, f"{stem}{s}_scale").copy_(scale)
                    if mod.bias:
                        getattr(q, f"bias_ih{s}").copy_(w.b_ih)
                        getattr(q, f"bias_hh{s}").copy_(w.b_hh)
        return q

    @classmethod
    def _extra_args(cls, mod) -> dict:
        return {}

    # ----- the packed input-side weights: built on first use, dropped when the buffers change ----
    def _packed_input_weight(self, idx: int, suffix: str):
        packed = self._packed_cache.get(idx)
        if packed is None:
            packed = self._packed_cache[idx] = self._int8(f"weight_ih{suffix}").fbgemm_packed(
                self._fold_input_bias(suffix))
        return packed

    def _vnni_weight(self, idx: int, stem: str, suffix: str):
        key = (stem, idx)
        laid_out = self._packed_cache.get(key)
        if laid_out is None:
            laid_out = self._packed_cache[key] = self._int8(f"{stem}{suffix}").vnni_layout()
        return laid_out

    def _products(self) -> tuple[bool, bool]:
        """(the input projection on fbgemm, the recurrent product on VNNI) for ``recurrent_product``."""
        choice = self.recurrent_product
        if choice not in PRODUCTS:
            raise ValueError(f"{type(self).__name__}.recurrent_product should be one of {PRODUCTS}, got {choice!r}")
        if choice == "vnni" and not has_vnni():
            raise RuntimeError("recurrent_product='vnni' needs a CPU with avx512_vnni; this one has none "
                               "(use 'auto', 'fbgemm_input' or 'float_x_int8')")
        if choice == "auto":
            choice = "vnni" if has_vnni() else "float_x_int8"
        return choice != "float_x_int8", choice == "vnni"

    def _fold_input_bias(self, suffix: str):
        """The bias added to the hoisted input projection (None without bias)."""
        raise NotImplementedError

    def _apply(self, fn, *args, **kwargs):
        self._packed_cache = {}
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._packed_cache = {}
        return super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_packed_cache"] = {}  # fbgemm's packed objects: rebuilt from the buffers on first use
        return state

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        for name, default in (("proj_size", 0), ("num_layers", 1), ("bias", True), ("batch_first", False),
                              ("bidirectional", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s + ", dtype=torch.qint8"

    # ----- the one forward ----------------------------------------------------------------
    def _state_sizes(self) -> tuple:
        return (self.proj_size or self.hidden_size,)

    def forward(self, input, hx=None):
        if _export.compiling():  # numba's int8 loops cannot be traced: eagerly, a graph break (rnnkit/export)
            return _export.eager_call(self, input, hx)
        if _export.exporting():
            raise _export.int8_not_exportable(type(self).__name__)
        cls = type(self).__name__
        directions = 2 if self.bidirectional else 1
        state = self._as_state(hx)
        self._check_inference(input, state)
        if isinstance(input, PackedSequence):
            data, batch_sizes_t, sorted_indices, unsorted_indices = input
            self._check_input(data, 2)
            batch_sizes = packed_batch_sizes(data, batch_sizes_t, cls)
            batch, is_batched = batch_sizes[0], True
        else:
            sorted_indices = unsorted_indices = None
            if not isinstance(input, Tensor) or input.dim() not in (2, 3):
                raise ValueError(f"{cls}: expected input to be 2D or 3D, got "
                                 f"{input.dim() if isinstance(input, Tensor) else type(input).__name__}")
            is_batched = input.dim() == 3
            if state is not None and any(s.dim() != input.dim() for s in state):
                raise RuntimeError(f"{cls}: for {input.dim()}-D input the states should be {input.dim()}-D too, "
                                   f"got {[s.dim() for s in state]}")
            if not is_batched:
                input = input.unsqueeze(0 if self.batch_first else 1)
                state = None if state is None else tuple(s.unsqueeze(1) for s in state)
            self._check_input(input, 3)
            if self.batch_first:
                input = input.transpose(0, 1)
            steps, batch = input.shape[0], input.shape[1]
            if steps == 0:
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
            data = input.reshape(steps * batch, input.shape[2])  # (T*B, I): packed layout, fixed batch
            batch_sizes = [batch] * steps
        if state is None:
            state = tuple(data.new_zeros(self.num_layers * directions, batch, size) for size in self._state_sizes())
        else:
            self._check_state(state, batch)
            if sorted_indices is not None:
                state = tuple(s.index_select(1, sorted_indices) for s in state)
        out, state = run_stack(
            data.contiguous(), batch_sizes, state,
            lambda layer, d, x, bs, s0: self._layer(layer * directions + d, self._suffix(layer, d), x, bs, s0, d == 1),
            num_layers=self.num_layers, num_directions=directions)
        if unsorted_indices is not None:
            state = tuple(s.index_select(1, unsorted_indices) for s in state)
        if isinstance(input, PackedSequence):
            output = PackedSequence(out, batch_sizes_t, sorted_indices, unsorted_indices)
        else:
            output = out.view(len(batch_sizes), batch, out.shape[-1])  # (T, B, D*H_out)
            if self.batch_first:
                output = output.transpose(0, 1)
            if not is_batched:
                output = output.squeeze(0 if self.batch_first else 1)
                state = tuple(s.squeeze(1) for s in state)
        return output, (state[0] if len(state) == 1 else state)

    def _layer(self, idx: int, suffix: str, x: Tensor, batch_sizes, state0: tuple, reverse: bool):
        """One layer-direction over packed x (N, I): (outputs (N, P), final state)."""
        raise NotImplementedError

    def _input_projection(self, idx: int, suffix: str, x: Tensor, on_fbgemm: bool) -> Tensor:
        """All steps' input projections at once, with the folded bias: (N, G*H) float32, writable."""
        rows = self._num_gates * self.hidden_size
        if x.shape[0] == 0:
            return x.new_zeros(0, rows)
        if on_fbgemm:  # (x over 7 bits where the CPU lacks VNNI: fbgemm_reduce_range)
            return torch.ops.quantized.linear_dynamic(x, self._packed_input_weight(idx, suffix), fbgemm_reduce_range())
        from ..kernels.cpu.split import run_rows  # numba: imported on first use
        from .int8_gemm import int8_matmul_rows

        bias = self._fold_input_bias(suffix)
        G = bias.expand(x.shape[0], rows).contiguous() if bias is not None else x.new_zeros(x.shape[0], rows)
        w = self._int8(f"weight_ih{suffix}")
        all_rows = (x.shape[0],)  # one "step" of N rows: the rows split across threads as a batch's
        run_rows(int8_matmul_rows, row_plan(all_rows, *step_layout(all_rows)), npy(x), npy(w.values), npy(w.scale),
                 npy(G))
        return G

    # ----- checks -------------------------------------------------------------------------
    def _check_inference(self, input, state) -> None:
        cls = type(self).__name__
        if self.training:
            raise RuntimeError(f"{cls} is for inference only and is in training mode: call model.eval() "
                               "(int8 layers have no backward; train the float model, then quantize it)")
        data = input.data if isinstance(input, PackedSequence) else input
        if torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in (data, *(state or ()))):
            raise RuntimeError(f"{cls} is for inference only: its input or state requires grad, and int8 layers "
                               "have no backward; run it under torch.no_grad() or torch.inference_mode(), "
                               "or train the float model")

    def _as_state(self, hx):
        cls = type(self).__name__
        if hx is None:
            return None
        if len(self._state_names) == 1:
            if not isinstance(hx, Tensor):
                raise TypeError(f"{cls}: expected hx to be a Tensor, got {type(hx).__name__}")
            return (hx,)
        if not isinstance(hx, (tuple, list)) or len(hx) != 2 or not all(isinstance(s, Tensor) for s in hx):
            raise TypeError(f"{cls}: expected hx to be a tuple (h_0, c_0) of two Tensors, got {type(hx).__name__}")
        return tuple(hx)

    def _check_input(self, input: Tensor, expected_dim: int) -> None:
        cls = type(self).__name__
        if input.dtype != torch.float32 or input.device.type != "cpu":
            raise ValueError(f"{cls}: int8 inference takes float32 input on the CPU, got {input.dtype} on "
                             f"{input.device}")
        if input.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {input.dim()}")
        if input.size(-1) != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {input.size(-1)}")

    def _check_state(self, state: tuple, batch: int) -> None:
        layers = self.num_layers * (2 if self.bidirectional else 1)
        for k, (s, size) in enumerate(zip(state, self._state_sizes())):
            what = "hidden" if len(state) == 1 else f"hidden[{k}]"
            if tuple(s.shape) != (layers, batch, size):
                raise RuntimeError(f"Expected {what} size {(layers, batch, size)}, got {list(s.shape)}")
            if s.dtype != torch.float32 or s.device.type != "cpu":
                raise RuntimeError(f"{type(self).__name__}: {what} should be float32 on the CPU, got {s.dtype} "
                                   f"on {s.device}")


def _check_qconfig(mod, name: str) -> None:
    """torch.ao's path sets ``mod.qconfig``: refuse, loudly, what rnnkit cannot honour (float16)."""
    qconfig = getattr(mod, "qconfig", None)
    if qconfig is None or getattr(qconfig, "weight", None) is None:
        return
    dtype = qconfig.weight().dtype
    if dtype != torch.qint8:
        raise ValueError(f"rnnkit.{name} quantizes to int8 (torch.qint8) only, but its qconfig asks for {dtype}; "
                         f"leave rnnkit.{name} out of the set given to quantize_dynamic, or use dtype=torch.qint8")


__all__ = ["DynamicQuantizedRNNBase", "step_layout", "row_plan", "RowPlan", "npy", "PRODUCTS"]
