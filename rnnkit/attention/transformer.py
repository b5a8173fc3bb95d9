"""The Transformer encoder: torch.nn.TransformerEncoderLayer / TransformerEncoder's contract."""
from __future__ import annotations

import copy
from typing import Callable, Optional, Union

import torch.nn.functional as F
from torch import Tensor, nn

from .masks import as_float_mask, detect_is_causal
from .multihead import MultiheadAttention

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _activation_fn(activation: Union[str, Callable[[Tensor], Tensor]]) -> Callable[[Tensor], Tensor]:
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise RuntimeError(f"activation should be relu/gelu, not {activation}")
        return _ACTIVATIONS[activation]
    if not callable(activation):
        raise TypeError(
            f"activation should be 'relu', 'gelu' or a callable, got {type(activation).__name__}"
        )
    return activation


class TransformerEncoderLayer(nn.Module):
    r"""Self-attention and a feed-forward block, as ``torch.nn.TransformerEncoderLayer``.

    Post-norm (``norm_first=False``, the default) and pre-norm (``norm_first=True``):

    .. math::
        \begin{array}{ll}
        \text{post-norm:} & x' = \mathrm{LN}_1(x + \mathrm{SA}(x)),\quad y = \mathrm{LN}_2(x' + \mathrm{FF}(x')) \\
        \text{pre-norm:}  & x' = x + \mathrm{SA}(\mathrm{LN}_1(x)),\quad y = x' + \mathrm{FF}(\mathrm{LN}_2(x'))
        \end{array}

    with SA = dropout1(self_attn(x, x, x)) and
    FF(x) = dropout2(linear2(dropout(activation(linear1(x))))).

    Arguments as torch.nn: d_model, nhead, dim_feedforward=2048, dropout=0.1,
    activation=F.relu ("relu", "gelu" or any callable), layer_norm_eps=1e-5,
    batch_first=False, norm_first=False, bias=True, device=None, dtype=None.
    Submodules and parameters carry torch.nn's names (self_attn, linear1, linear2, norm1,
    norm2, dropout, dropout1, dropout2); one seed gives the same initial values.

    ======================  ==================================================
    src                     (S, N, E), (N, S, E) if batch_first, or (S, E)
    src_mask                (S, S) or (N*nhead, S, S); bool True = not allowed
    src_key_padding_mask    (N, S) or (S); bool True = padding
    is_causal               a hint that src_mask is the causal mask
    returns                 like src
    ======================  ==================================================

    rnnkit always computes the padded tensor (torch.nn's eval "fast path" may skip padded
    positions): the outputs agree at non-padded positions.
    """

    __constants__ = ["norm_first"]

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: Union[str, Callable[[Tensor], Tensor]] = F.relu,
                 layer_norm_eps: float = 1e-5, batch_first: bool = False, norm_first: bool = False,
                 bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        # Construction order as torch.nn: the same random draws from one seed.
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, **factory)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        activation = _activation_fn(activation)
        # Kept for code that reads it on torch.nn's layer: 1 relu, 2 gelu, 0 anything else.
        if activation is F.relu or isinstance(activation, nn.ReLU):
            self.activation_relu_or_gelu = 1
        elif activation is F.gelu or isinstance(activation, nn.GELU):
            self.activation_relu_or_gelu = 2
        else:
            self.activation_relu_or_gelu = 0
        self.activation = activation

    def __setstate__(self, state):
        super().__setstate__(state)
        if not hasattr(self, "activation"):
            self.activation = F.relu

    def forward(self, src: Tensor, src_mask: Optional[Tensor] = None,
                src_key_padding_mask: Optional[Tensor] = None, is_causal: bool = False) -> Tensor:
        src_key_padding_mask = as_float_mask(src_key_padding_mask, "src_key_padding_mask", src.dtype,
                                             other=src_mask, other_name="src_mask")
        src_mask = as_float_mask(src_mask, "src_mask", src.dtype)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(self, x: Tensor, attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor],
                  is_causal: bool) -> Tensor:
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x: Tensor) -> Tensor:
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.dropout2(x)


class TransformerEncoder(nn.Module):
    r"""A stack of ``num_layers`` copies of ``encoder_layer``, as ``torch.nn.TransformerEncoder``.

    .. math::  y = \mathrm{norm}(\ell_{n-1}(\cdots \ell_1(\ell_0(x))))

    (``norm`` only when given).  Every layer starts as a deep copy of ``encoder_layer``, so
    all layers have the same initial parameters, as in torch.nn; parameters are named
    ``layers.{i}.*`` and ``norm.*``.

    ``enable_nested_tensor`` and ``mask_check`` are accepted and kept for compatibility:
    rnnkit never converts to nested tensors, it runs the padded tensor through every layer
    (padded positions hold computed values where torch.nn's eval fast path writes zeros).

    ======================  ==================================================
    src                     (S, N, E), (N, S, E) if batch_first, or (S, E)
    mask                    (S, S) or (N*nhead, S, S); bool True = not allowed
    src_key_padding_mask    (N, S) or (S); bool True = padding
    is_causal               None: detected (mask equal to the causal mask);
                            True/False: a hint that mask is / is not causal
    returns                 like src
    ======================  ==================================================
    """

    __constants__ = ["norm"]

    def __init__(self, encoder_layer: nn.Module, num_layers: int, norm: Optional[nn.Module] = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True) -> None:
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"num_layers should be a non-negative int, got {num_layers!r}")
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.use_nested_tensor = False  # rnnkit does not use nested tensors
        self.mask_check = mask_check

    def forward(self, src: Tensor, mask: Optional[Tensor] = None,
                src_key_padding_mask: Optional[Tensor] = None,
                is_causal: Optional[bool] = None) -> Tensor:
        src_key_padding_mask = as_float_mask(src_key_padding_mask, "src_key_padding_mask", src.dtype,
                                             other=mask, other_name="mask")
        mask = as_float_mask(mask, "mask", src.dtype)
        seq_len = None
        if self.layers and src.dim() in (2, 3):
            batch_first = getattr(getattr(self.layers[0], "self_attn", None), "batch_first", False)
            seq_len = src.size(1 if (src.dim() == 3 and batch_first) else 0)
        is_causal = detect_is_causal(mask, is_causal, seq_len)
        output = src
        for layer in self.layers:
            output = layer(output, src_mask=mask, is_causal=is_causal,
                           src_key_padding_mask=src_key_padding_mask)
        if self.norm is not None:
            output = self.norm(output)
        return output


__all__ = ["TransformerEncoderLayer", "TransformerEncoder"]
