"""The study notes' additive attention module ``Attn``, for a batch of B rows."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .masks import masked_softmax


class Attn(nn.Module):
    r"""The notes' attention: weights from [Q; K], applied to V, combined with Q.

    For each row b of the batch (Q, K of shape (1, B, *), V of shape (B, value_size1, value_size2)):

    .. math::
        \begin{array}{ll}
        a_b = \mathrm{softmax}(W_a [Q_{0,b}; K_{0,b}] + b_a)  & (\text{value\_size1}) \\
        c_b = a_b V_b = \sum_j a_{b,j} V_{b,j}              & (\text{value\_size2}) \\
        o_b = W_c [Q_{0,b}; c_b] + b_c                        & (\text{output\_size})
        \end{array}

    ``attn`` = Linear(query_size + key_size -> value_size1) and ``attn_combine`` =
    Linear(query_size + value_size2 -> output_size), created in that order as in the notes,
    so one seed gives the notes' initial values.  The weights depend on Q and K only
    ("location-based"): value_size1 is the number of value rows the module can address.

    ==================  ==========================================
    Q                   (1, B, query_size)
    K                   (1, B, key_size)
    V                   (B, value_size1, value_size2)
    key_padding_mask    optional (B, value_size1) bool, True = this
                        value row is padding: it gets weight 0 and
                        the others are renormalised
    returns output      (1, B, output_size)
    returns weights     (B, value_size1), rows sum to 1
    ==================  ==========================================

    With B = 1 and no mask this is exactly the notes' module: Attn(32, 32, 32, 64, 64) on
    Q, K of (1, 1, 32) and V of (1, 32, 64) returns (1, 1, 64) and (1, 32).  With B > 1,
    row b of each result equals the B = 1 call on row b of the inputs.
    """

    def __init__(self, query_size: int, key_size: int, value_size1: int, value_size2: int,
                 output_size: int) -> None:
        super().__init__()
        for name, value in (("query_size", query_size), ("key_size", key_size),
                            ("value_size1", value_size1), ("value_size2", value_size2),
                            ("output_size", output_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} should be a positive int, got {value!r}")
        self.query_size = query_size
        self.key_size = key_size
        self.value_size1 = value_size1
        self.value_size2 = value_size2
        self.output_size = output_size
        self.attn = nn.Linear(query_size + key_size, value_size1)
        self.attn_combine = nn.Linear(query_size + value_size2, output_size)

    def extra_repr(self) -> str:
        return (f"query_size={self.query_size}, key_size={self.key_size}, value_size1={self.value_size1}, "
                f"value_size2={self.value_size2}, output_size={self.output_size}")

    def forward(self, Q: Tensor, K: Tensor, V: Tensor,
                key_padding_mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        self._check(Q, K, V, key_padding_mask)
        scores = self.attn(torch.cat((Q[0], K[0]), 1))  # (B, value_size1)
        weights = masked_softmax(scores, key_padding_mask, dim=1)  # (B, value_size1)
        applied = torch.bmm(weights.unsqueeze(1), V)  # (B, 1, value_size2)
        output = torch.cat((Q[0], applied[:, 0]), 1)  # (B, query_size + value_size2)
        output = self.attn_combine(output).unsqueeze(0)  # (1, B, output_size)
        return output, weights

    def _check(self, Q: Tensor, K: Tensor, V: Tensor, key_padding_mask: Optional[Tensor]) -> None:
        for name, x in (("Q", Q), ("K", K), ("V", V)):
            if not isinstance(x, Tensor):
                raise TypeError(f"Attn: {name} should be a Tensor, got {type(x).__name__}")
            if x.dim() != 3:
                raise ValueError(f"Attn: expected {name} to be 3-D, got a {x.dim()}-D tensor of shape "
                                 f"{tuple(x.shape)}")
        batch = V.size(0)
        expected = {"Q": (1, batch, self.query_size), "K": (1, batch, self.key_size),
                    "V": (batch, self.value_size1, self.value_size2)}
        for name, x in (("Q", Q), ("K", K), ("V", V)):
            if tuple(x.shape) != expected[name]:
                raise ValueError(
                    f"Attn: expected {name} of shape {expected[name]} "
                    "(Q, K: (1, B, size); V: (B, value_size1, value_size2)), "
                    f"got {tuple(x.shape)}"
                )
        if key_padding_mask is not None:
            if not isinstance(key_padding_mask, Tensor) or key_padding_mask.dtype != torch.bool:
                raise TypeError("Attn: key_padding_mask should be a bool Tensor (True = padding)")
            if tuple(key_padding_mask.shape) != (batch, self.value_size1):
                raise ValueError(
                    f"Attn: expected key_padding_mask of shape {(batch, self.value_size1)} "
                    f"(B, value_size1), got {tuple(key_padding_mask.shape)}"
                )


__all__ = ["Attn"]
