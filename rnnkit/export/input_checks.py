"""The padded-input check ``Recurrent`` and its TorchScript twin share (torchscript_recurrent.py): plain
TorchScript-compatible code, so that the scripted layer refuses what the eager one refuses, with the
same messages (torch.nn's: the dimensions first, then the feature size)."""
from typing import Tuple

from torch import Tensor


def batched_input(input: Tensor, batch_first: bool, input_size: int) -> Tuple[Tensor, bool]:
    """(``input`` with its batch axis, whether it had one)."""
    if input.dim() != 2 and input.dim() != 3:
        raise ValueError(f"Recurrent: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
    is_batched = input.dim() == 3
    if not is_batched:
        input = input.unsqueeze(0 if batch_first else 1)
    if input.size(-1) != input_size:
        raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {input_size}, "
                           f"got {input.size(-1)}")
    return input, is_batched
