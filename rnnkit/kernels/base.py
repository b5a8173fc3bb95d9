"""The interface every backend implements."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..cells._base import CellEquations, CellWeights, State
from ..errors import UnsupportedBackendError
from ._torch_internals import forward_ad_active, in_functorch_transform
from .._memo import memoized


class Kernel:
    """Runs one layer-direction of a recurrence over packed input.

    ``layer(eq, x, batch_sizes, state0, weights, reverse)`` takes x (N, I) in packed
    layout (see rnnkit.recurrent), the initial state (one row per sequence), the
    cell's own parameters, and returns (outputs (N, H), final state), differentiable
    with respect to x, state0 and weights.

    ``check(eq, x, weights)`` raises UnsupportedBackendError, naming what is
    unsupported, when the kernel cannot run that configuration.
    """

    name = "abstract"
    # whether the final states ``layer`` returns are new tensors that nothing else holds (no saved
    # tensor of its backward, no output): the layer may then hand them out without a copy
    fresh_states = False
    # the cells (CellEquations names) backend="auto" and "fused" take this kernel for; None: every cell
    # its check accepts.  (A kernel named explicitly runs whatever its check accepts.)
    auto_cells = None

    def check(self, eq: CellEquations, x: Tensor, weights: CellWeights) -> None:
        return None

    def layer(self, eq: CellEquations, x: Tensor, batch_sizes: Sequence[int], state0: State,
              weights: CellWeights, reverse: bool) -> tuple[Tensor, State]:
        raise NotImplementedError


@memoized(maxsize=64)
def batch_sizes_tensor(batch_sizes: tuple) -> Tensor:
    """The step sizes as the C++ loops take them (1-D int64 on the CPU), made once per layout: the layers
    pass the same layout for every layer-direction and, when padded, for every call.  Never an inference
    tensor: made on a call under torch.inference_mode(), it is kept for later calls, whose autograd saves
    it (they raised)."""
    with torch.inference_mode(False):
        return torch.tensor(batch_sizes, dtype=torch.int64)


def named_tensors(x: Tensor, weights: CellWeights) -> list:
    """[(name, tensor)] of a call's input and its present weights: what a backend's ``check`` inspects."""
    return [("input", x)] + [(name, t) for name, t in zip(weights._fields, weights) if t is not None]


_DEVICE_WORDS = {"cpu": "the CPU", "cuda": "CUDA devices"}


def check_tensors(backend: str, x: Tensor, weights: CellWeights, device_type: str, dtypes: tuple) -> None:
    """UnsupportedBackendError naming the first of the call's tensors that ``backend`` cannot take: on
    another device type or another device than the input, not dense, of a dtype outside ``dtypes``,
    or of another dtype than the input.  (The backends' slow path: each tests the common case first.)"""
    names = [str(d).removeprefix("torch.") for d in dtypes]
    supported = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
    for name, t in named_tensors(x, weights):
        if t.device.type != device_type:
            raise UnsupportedBackendError(
                f"backend '{backend}' runs on {_DEVICE_WORDS.get(device_type, device_type)} only, got {name} on "
                f"{t.device}; use backend='auto' or 'reference'")
        if t.device != x.device:
            raise UnsupportedBackendError(
                f"backend '{backend}' needs every tensor on one device, got input on {x.device} and {name} on {t.device}")
        if t.layout != torch.strided:
            raise UnsupportedBackendError(f"backend '{backend}' needs dense tensors, got {name} with {t.layout}")
        if t.dtype not in dtypes:
            raise UnsupportedBackendError(
                f"backend '{backend}' supports {supported}, got {name} of dtype {t.dtype}; "
                "use backend='auto' or 'reference'")
        if t.dtype != x.dtype:
            raise UnsupportedBackendError(
                f"backend '{backend}' needs one dtype throughout, got input {x.dtype} and {name} {t.dtype}")


def refuse_under_transforms(backend: str) -> None:
    """A kernel with its own backward and no vmap or jvp rule refuses under torch.func transforms and
    forward-mode AD (_torch_internals), so that backend="auto" runs the reference loop there."""
    if in_functorch_transform() or forward_ad_active():
        raise UnsupportedBackendError(
            f"backend '{backend}' does not run under torch.func transforms (vmap, grad, jacrev, jacfwd, jvp) or "
            "forward-mode AD (its loop is one kernel with a hand-written backward and no vmap or jvp rule); use "
            "backend='auto' or 'reference', whose torch ops every transform handles")
