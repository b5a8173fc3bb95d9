"""Attention masks: torch.nn's conventions, in one place.

Two kinds of mask reach an attention layer, each either boolean or floating point:

==================  =====================  =================================================
mask                shape                  meaning
==================  =====================  =================================================
key padding mask    (B, S), or (S)         bool: True = ignore this key (padding);
                    unbatched              float: added to every query's score of that key
attention mask      (L, S) or (B*H, L, S)  bool: True = this query may not see that key;
                                           float: added to the scores
==================  =====================  =================================================

Inside, boolean masks become additive float masks (0 where allowed, -inf where not), so
``softmax(scores + mask)`` gives a masked key exactly zero weight.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


class AttentionInputError(ValueError, AssertionError):
    """An attention input has the wrong shape or type.

    torch.nn raises AssertionError for these (from its shape checks); rnnkit raises this
    class, which is both a ValueError and an AssertionError, so code written against
    either contract keeps working.
    """


def as_float_mask(mask: Optional[Tensor], name: str, dtype: torch.dtype,
                  other: Optional[Tensor] = None, other_name: str = "") -> Optional[Tensor]:
    """A bool or float mask -> an additive float mask of ``dtype`` (bool True -> -inf).

    Float masks are returned as they are.  When ``other`` (the second mask of the same
    call) has a different dtype, warns as torch.nn does: mixing mask types is deprecated.
    """
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} should be a Tensor or None, got {type(mask).__name__}")
    is_float = torch.is_floating_point(mask)
    if mask.dtype != torch.bool and not is_float:
        raise AttentionInputError(
            f"only bool and floating types of {name} are supported, got {name} of dtype {mask.dtype}"
        )
    if other is not None and mask.dtype != other.dtype:
        warnings.warn(
            f"Support for mismatched {name} and {other_name} is deprecated. Use same type for both "
            f"instead (got {mask.dtype} and {other.dtype}).",
            stacklevel=3,
        )
    if is_float:
        return mask
    return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, float("-inf"))


def masked_softmax(scores: Tensor, key_padding_mask: Optional[Tensor], dim: int = -1) -> Tensor:
    """softmax over ``dim`` where keys with ``key_padding_mask`` True get exactly zero weight.

    ``key_padding_mask`` is a bool tensor broadcastable to ``scores`` (True = padding), or None.
    A row whose keys are all padding gets all-zero weights (not NaN), and no NaN reaches
    the gradients either: the masked entries' gradients are replaced, not multiplied.
    """
    if key_padding_mask is None:
        return F.softmax(scores, dim=dim)
    weights = F.softmax(scores.masked_fill(key_padding_mask, float("-inf")), dim=dim)
    return weights.masked_fill(key_padding_mask, 0.0)


def generate_square_subsequent_mask(sz: int, device=None, dtype=None) -> Tensor:
    """The causal mask (sz, sz): 0 on and below the diagonal, -inf above it.

    Row i lets query i see keys 0..i only, as ``nn.Transformer.generate_square_subsequent_mask``.
    """
    return torch.triu(torch.full((sz, sz), float("-inf"), device=device, dtype=dtype), diagonal=1)


def detect_is_causal(mask: Optional[Tensor], is_causal: Optional[bool], size: Optional[int]) -> bool:
    """``is_causal`` when given; otherwise whether ``mask`` is exactly the causal mask of ``size``."""
    if is_causal is not None:
        return is_causal is True
    if mask is None:
        return False
    size = size if size is not None else mask.size(-2)
    causal = generate_square_subsequent_mask(size, device=mask.device, dtype=mask.dtype)
    return mask.size() == causal.size() and bool((mask == causal).all())


def lengths_to_padding_mask(lengths, max_len: Optional[int] = None) -> Tensor:
    """Sequence lengths (B,) -> key padding mask (B, max_len), True at padded positions.

    ``max_len`` defaults to the longest length.  Lengths may be a tensor or a list of ints.
    """
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise ValueError(
            f"lengths should be a 1-D integer tensor (B,), got a {lengths.dim()}-D tensor of {lengths.dtype}"
        )
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > max_len):
        raise ValueError(
            f"lengths should lie in [0, {max_len}], got min {int(lengths.min())} and max {int(lengths.max())}"
        )
    positions = torch.arange(max_len, device=lengths.device)  # (S,)
    return positions.unsqueeze(0) >= lengths.unsqueeze(1)  # (B, S)


__all__ = ["AttentionInputError", "as_float_mask", "masked_softmax", "generate_square_subsequent_mask",
           "detect_is_causal", "lengths_to_padding_mask"]
