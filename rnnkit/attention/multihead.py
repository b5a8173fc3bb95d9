"""Multi-head attention with torch.nn.MultiheadAttention's arguments, parameters and results."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.init import constant_, xavier_normal_, xavier_uniform_
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from .masks import AttentionInputError, as_float_mask


class MultiheadAttention(nn.Module):
    r"""Multi-head scaled dot-product attention, as ``torch.nn.MultiheadAttention``.

    .. math::
        \text{MultiHead}(Q, K, V) = \text{Concat}(\text{head}_1, \dots, \text{head}_h) W^O,
        \quad \text{head}_i = \text{softmax}\Big(\frac{Q W_i^Q (K W_i^K)^T}{\sqrt{d_h}} + M\Big) V W_i^V

    with d_h = embed_dim / num_heads and M the additive form of the masks (-inf where a
    query may not see a key).  The scores and the weighted sum run in
    ``F.scaled_dot_product_attention``; with ``need_weights=True`` they are computed
    explicitly, as torch.nn does, so the weights can be returned.

    Arguments as torch.nn.MultiheadAttention: embed_dim, num_heads, dropout=0.0 (on the
    attention weights, training only), bias=True, add_bias_kv=False, add_zero_attn=False,
    kdim=None, vdim=None, batch_first=False, device=None, dtype=None.

    Parameters carry torch.nn's names: ``in_proj_weight`` (3E, E) when kdim = vdim = E,
    else ``q_proj_weight`` (E, E), ``k_proj_weight`` (E, kdim), ``v_proj_weight`` (E, vdim);
    ``in_proj_bias`` (3E); ``out_proj.weight``/``out_proj.bias``; ``bias_k``/``bias_v``
    (1, 1, E) with add_bias_kv.  One seed gives the same initial values as torch.nn, and the
    repr is torch.nn's (no options line; only the ``out_proj`` child).

    Shapes (L = target length, S = source length, N = batch, E = embed_dim, H = num_heads):

    ==================  ========================================================
    query               (L, N, E), (N, L, E) if batch_first, or (L, E) unbatched
    key, value          (S, N, kdim / vdim), (N, S, ...) if batch_first, or (S, ...)
    key_padding_mask    (N, S) or (S); bool True = ignore, or float (added)
    attn_mask           (L, S) or (N*H, L, S); bool True = not allowed, or float
    attn_output         like query
    attn_weights        (N, L, S) averaged over heads, (N, H, L, S) with
                        average_attn_weights=False; (L, S) / (H, L, S) unbatched;
                        None when need_weights=False
    ==================  ========================================================
    """

    __constants__ = ["batch_first"]
    bias_k: Optional[Tensor]
    bias_v: Optional[Tensor]

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False,
                 device=None, dtype=None) -> None:
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(
                f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} "
                f"and num_heads={num_heads} instead"
            )
        if embed_dim % num_heads != 0:
            raise AttentionInputError(
                f"embed_dim must be divisible by num_heads, got embed_dim={embed_dim} and "
                f"num_heads={num_heads}"
            )
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads

        # Registration order and shapes as torch.nn: state_dicts load both ways, same draws.
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty((3 * embed_dim, embed_dim), **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty((embed_dim, embed_dim), **factory))
            self.k_proj_weight = nn.Parameter(torch.empty((embed_dim, self.kdim), **factory))
            self.v_proj_weight = nn.Parameter(torch.empty((embed_dim, self.vdim), **factory))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        # torch.nn's own Linear subclass (a plain Linear that quantization leaves alone), so the
        # repr and type checks match; it draws its own init here, before _reset_parameters.
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty((1, 1, embed_dim), **factory))
            self.bias_v = nn.Parameter(torch.empty((1, 1, embed_dim), **factory))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            xavier_uniform_(self.in_proj_weight)
        else:
            xavier_uniform_(self.q_proj_weight)
            xavier_uniform_(self.k_proj_weight)
            xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            constant_(self.in_proj_bias, 0.0)
            constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            xavier_normal_(self.bias_k)
        if self.bias_v is not None:
            xavier_normal_(self.bias_v)

    def __setstate__(self, state):
        # Checkpoints pickled before kdim/vdim existed (as torch.nn accepts them).
        state.setdefault("_qkv_same_embed_dim", True)
        super().__setstate__(state)

    # ----- forward ------------------------------------------------------------------
    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Optional[Tensor] = None, need_weights: bool = True,
                attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        key_padding_mask = as_float_mask(key_padding_mask, "key_padding_mask", query.dtype,
                                         other=attn_mask, other_name="attn_mask")
        attn_mask = as_float_mask(attn_mask, "attn_mask", query.dtype)
        is_batched = self._check_dims(query, key, value, key_padding_mask, attn_mask)
        if is_causal and attn_mask is None:
            raise RuntimeError(
                "Need attn_mask if specifying the is_causal hint. You may use "
                "rnnkit.attention.generate_square_subsequent_mask to create this mask."
            )
        # The hint is used only where the mask itself is not needed (as torch.nn).
        if is_causal and key_padding_mask is None and not need_weights:
            attn_mask = None
        else:
            is_causal = False

        # (T, N, E) layout with the batch at dim 1, or batch_first's (N, T, E); unbatched -> N = 1.
        batch_dim = 0 if (self.batch_first and is_batched) else 1
        if not is_batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        seq_dim = 1 - batch_dim
        tgt_len, bsz = query.size(seq_dim), query.size(batch_dim)
        src_len = key.size(seq_dim)
        self._check_sizes(query, key, value, batch_dim, seq_dim)
        if key_padding_mask is not None and key_padding_mask.shape != (bsz, src_len):
            expected, got = ((bsz, src_len), tuple(key_padding_mask.shape)) if is_batched else \
                ((src_len,), tuple(key_padding_mask.shape[1:]))
            raise AttentionInputError(
                f"expected key_padding_mask of shape {expected} ({'batch, ' if is_batched else ''}"
                f"source length), got {got}"
            )

        q, k, v = self._in_projection(query, key, value)  # each (T, N, E) or (N, T, E)
        q, k, v = (self._split_heads(x, batch_dim) for x in (q, k, v))  # (N, H, T, d_h)
        mask = self._attn_mask_4d(attn_mask, tgt_len, src_len, bsz)  # (1 or N, 1 or H, L, S) or None

        if self.bias_k is not None or self.bias_v is not None:
            if self.bias_k is None or self.bias_v is None:
                raise AttentionInputError("bias_k and bias_v must both be set or both be None")
            k = torch.cat([k, self._split_heads(self.bias_k.expand(1, bsz, -1), 1)], dim=2)  # (N, H, S+1, d_h)
            v = torch.cat([v, self._split_heads(self.bias_v.expand(1, bsz, -1), 1)], dim=2)
            mask = None if mask is None else F.pad(mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(bsz, self.num_heads, 1, self.head_dim)], dim=2)
            v = torch.cat([v, v.new_zeros(bsz, self.num_heads, 1, self.head_dim)], dim=2)
            mask = None if mask is None else F.pad(mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        src_len = k.size(2)
        if key_padding_mask is not None:
            kpm = key_padding_mask.view(bsz, 1, 1, src_len)  # (N, 1, 1, S)
            mask = kpm if mask is None else mask + kpm
        dropout_p = self.dropout if self.training else 0.0

        if need_weights:
            out, weights = self._attention_with_weights(q, k, v, mask, dropout_p)
        else:
            out = F.scaled_dot_product_attention(q, k, v, mask, dropout_p, is_causal)  # (N, H, L, d_h)
            weights = None
        if batch_dim == 0:
            out = out.transpose(1, 2).reshape(bsz, tgt_len, self.embed_dim)  # (N, L, E)
        else:
            out = out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, self.embed_dim)  # (L, N, E)
        out = F.linear(out, self.out_proj.weight, self.out_proj.bias)
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)  # (N, L, S)
        if not is_batched:
            out = out.squeeze(1)
            weights = None if weights is None else weights.squeeze(0)
        return out, weights

    # ----- the pieces -------------------------------------------------------------------
    def _in_projection(self, query: Tensor, key: Tensor, value: Tensor) -> tuple:
        E = self.embed_dim
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        if not self._qkv_same_embed_dim:
            return (F.linear(query, self.q_proj_weight, b_q), F.linear(key, self.k_proj_weight, b_k),
                    F.linear(value, self.v_proj_weight, b_v))
        w = self.in_proj_weight
        if query is key and key is value:  # self-attention: one product
            return F.linear(query, w, self.in_proj_bias).chunk(3, dim=-1)
        if key is value:  # encoder-decoder attention: keys and values in one product
            w_q, w_kv = w.split([E, 2 * E])
            b_kv = None if self.in_proj_bias is None else self.in_proj_bias[E:]
            return (F.linear(query, w_q, b_q),) + tuple(F.linear(key, w_kv, b_kv).chunk(2, dim=-1))
        w_q, w_k, w_v = w.chunk(3)
        return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

    def _split_heads(self, x: Tensor, batch_dim: int) -> Tensor:
        """(T, N, E) with batch_dim 1, or (N, T, E) with batch_dim 0 -> a (N, H, T, d_h) view."""
        x = x.unflatten(-1, (self.num_heads, self.head_dim))  # (T, N, H, d_h) or (N, T, H, d_h)
        return x.permute(1, 2, 0, 3) if batch_dim == 1 else x.transpose(1, 2)

    def _attn_mask_4d(self, attn_mask: Optional[Tensor], tgt_len: int, src_len: int,
                      bsz: int) -> Optional[Tensor]:
        if attn_mask is None:
            return None
        if attn_mask.dim() == 2:
            if attn_mask.shape != (tgt_len, src_len):
                raise RuntimeError(
                    f"The shape of the 2D attn_mask is {tuple(attn_mask.shape)}, but should be "
                    f"{(tgt_len, src_len)} (target length, source length)."
                )
            return attn_mask.view(1, 1, tgt_len, src_len)
        expected = (bsz * self.num_heads, tgt_len, src_len)
        if attn_mask.shape != expected:
            raise RuntimeError(
                f"The shape of the 3D attn_mask is {tuple(attn_mask.shape)}, but should be {expected} "
                "(batch * num_heads, target length, source length)."
            )
        return attn_mask.view(bsz, self.num_heads, tgt_len, src_len)

    def _attention_with_weights(self, q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor],
                                dropout_p: float) -> tuple[Tensor, Tensor]:
        """softmax(q k^T / sqrt(d_h) + mask) v, keeping the weights; the order of torch.nn's ops."""
        bsz, heads, tgt_len, head_dim = q.shape
        src_len = k.size(2)
        q = q.reshape(bsz * heads, tgt_len, head_dim) * math.sqrt(1.0 / float(head_dim))  # (N*H, L, d_h)
        k_t = k.reshape(bsz * heads, src_len, head_dim).transpose(1, 2)  # (N*H, d_h, S)
        if mask is not None:
            mask = mask.expand(bsz, heads, tgt_len, src_len).reshape(bsz * heads, tgt_len, src_len)
            scores = torch.baddbmm(mask, q, k_t)  # (N*H, L, S)
        else:
            scores = torch.bmm(q, k_t)
        weights = F.softmax(scores, dim=-1)
        if dropout_p > 0.0:
            weights = F.dropout(weights, p=dropout_p)
        out = torch.bmm(weights, v.reshape(bsz * heads, src_len, head_dim))  # (N*H, L, d_h)
        return (out.view(bsz, heads, tgt_len, head_dim),
                weights.view(bsz, heads, tgt_len, src_len))

    # ----- input checks, as torch.nn rejects the same inputs --------------------------
    def _check_dims(self, query, key, value, key_padding_mask, attn_mask) -> bool:
        """Whether the call is batched; raises for inconsistent dimensionalities."""
        if query.dim() == 3:
            if key.dim() != 3 or value.dim() != 3:
                raise AttentionInputError(
                    "For batched (3-D) `query`, expected `key` and `value` to be 3-D but found "
                    f"{key.dim()}-D and {value.dim()}-D tensors respectively"
                )
            if key_padding_mask is not None and key_padding_mask.dim() != 2:
                raise AttentionInputError(
                    "For batched (3-D) `query`, expected `key_padding_mask` to be `None` or 2-D (N, S) "
                    f"but found {key_padding_mask.dim()}-D tensor instead"
                )
            if attn_mask is not None and attn_mask.dim() not in (2, 3):
                raise AttentionInputError(
                    "For batched (3-D) `query`, expected `attn_mask` to be `None`, 2-D or 3-D but found "
                    f"{attn_mask.dim()}-D tensor instead"
                )
            return True
        if query.dim() == 2:
            if key.dim() != 2 or value.dim() != 2:
                raise AttentionInputError(
                    "For unbatched (2-D) `query`, expected `key` and `value` to be 2-D but found "
                    f"{key.dim()}-D and {value.dim()}-D tensors respectively"
                )
            if key_padding_mask is not None and key_padding_mask.dim() != 1:
                raise AttentionInputError(
                    "For unbatched (2-D) `query`, expected `key_padding_mask` to be `None` or 1-D (S) "
                    f"but found {key_padding_mask.dim()}-D tensor instead"
                )
            if attn_mask is not None:
                if attn_mask.dim() not in (2, 3):
                    raise AttentionInputError(
                        "For unbatched (2-D) `query`, expected `attn_mask` to be `None`, 2-D or 3-D but "
                        f"found {attn_mask.dim()}-D tensor instead"
                    )
                expected = (self.num_heads, query.size(0), key.size(0))
                if attn_mask.dim() == 3 and attn_mask.shape != expected:
                    raise AttentionInputError(
                        f"Expected `attn_mask` shape to be {expected} (num_heads, L, S) but got "
                        f"{tuple(attn_mask.shape)}"
                    )
            return False
        raise AttentionInputError(
            f"query should be unbatched 2D or batched 3D tensor but received {query.dim()}-D query tensor"
        )

    def _check_sizes(self, query, key, value, batch_dim: int, seq_dim: int) -> None:
        if query.size(-1) != self.embed_dim:
            raise AttentionInputError(
                f"was expecting embedding dimension of {self.embed_dim}, but got {query.size(-1)}"
            )
        if self._qkv_same_embed_dim:
            if key.shape != value.shape:
                raise AttentionInputError(
                    f"key shape {tuple(key.shape)} does not match value shape {tuple(value.shape)}"
                )
        elif key.shape[:2] != value.shape[:2]:
            raise AttentionInputError(
                f"key's sequence and batch dims {tuple(key.shape[:2])} do not match "
                f"value's {tuple(value.shape[:2])}"
            )
        if key.size(batch_dim) != query.size(batch_dim):
            raise RuntimeError(
                f"key and value batch size {key.size(batch_dim)} does not match query batch size "
                f"{query.size(batch_dim)}"
            )
        # torch.nn fails here in its matrix product (RuntimeError) with packed weights, and in
        # its weight-shape check (AssertionError) with separate ones: the same types, clearer words.
        error = RuntimeError if self._qkv_same_embed_dim else AttentionInputError
        for name, x, size in (("key", key, self.kdim), ("value", value, self.vdim)):
            if x.size(-1) != size:
                raise error(
                    f"expected {name} of feature size {size} ({'kdim' if name == 'key' else 'vdim'}), "
                    f"got {x.size(-1)}"
                )


__all__ = ["MultiheadAttention"]
