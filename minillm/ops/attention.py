"""Scaled dot-product attention (Happy LLM 2.1.3, 5.1.3.3) as ONE autograd node.

    Attention(Q, K, V) = softmax(Q·Kᵀ / √d + mask) · V

The forward kernel tiles over keys with an online softmax and keeps only each row's
log-sum-exp; the backward recomputes the probabilities tile by tile from it, so the
(T, T) matrix is never stored per head. Grouped-query attention (fewer K/V heads than
query heads, LLaMA2) is handled inside the kernel without copying K/V ``n_rep`` times.

``manual_attention`` below is the same maths written with primitive ops (the book's
version); tests check the fused node against it.
"""
from __future__ import annotations

import math

import numpy as np

from .. import kernels
from ..autograd import Function
from ..tensor import Tensor
from ._util import check_float


class SDPA(Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, is_causal, scale):
        q, k, v = np.ascontiguousarray(q), np.ascontiguousarray(k), np.ascontiguousarray(v)
        out, lse = kernels.attention_forward(q, k, v, mask, is_causal, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (mask, is_causal, scale)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse = ctx.saved
        mask, is_causal, scale = ctx.args
        return kernels.attention_backward(q, k, v, mask, is_causal, scale, out, lse, np.ascontiguousarray(grad))


def _additive_mask(attn_mask, dtype, shape):
    """Bool mask (True = attend, PyTorch's meaning) or float mask (added to the scores) -> float."""
    m = attn_mask.data if isinstance(attn_mask, Tensor) else np.asarray(attn_mask)
    try:
        np.broadcast_shapes(m.shape, shape)
    except ValueError:
        raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {m.shape} cannot be broadcast to the scores' shape {shape}") from None
    if m.dtype == np.bool_:
        return np.where(m, dtype.type(0), dtype.type(-np.inf)).astype(dtype)
    if m.dtype.kind != "f":
        raise TypeError(f"scaled_dot_product_attention: attn_mask must be bool or float, got dtype {m.dtype}")
    return m.astype(dtype, copy=False)


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask=None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """PyTorch's ``F.scaled_dot_product_attention``.

    query: (B, H, Tq, D); key, value: (B, Hkv, Tk, D) with Hkv == H, or H % Hkv == 0 when
    ``enable_gqa=True`` (query head h reads K/V head h // (H / Hkv), like ``repeat_kv``).
    ``attn_mask``: bool (True = may attend) or additive float, broadcastable to (B, H, Tq, Tk).
    ``is_causal``: query i sees keys j <= i + (Tk - Tq), i.e. the last query is aligned with
    the last key. With Tq == Tk this is PyTorch's causal mask; with Tq < Tk it is what
    decoding with a KV cache needs. Rows with no visible key give zeros (not NaN).
    The mask is not differentiated. ``dropout_p > 0`` uses the composite path.
    Returns (B, H, Tq, D).
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_float(t, "scaled_dot_product_attention")
        if t.ndim != 4:
            raise ValueError(f"scaled_dot_product_attention: {name} must be 4-D (B, H, T, D), got shape {t.shape}")
    B, H, Tq, D = query.shape
    Bk, Hkv, Tk, Dk = key.shape
    if Bk != B or Dk != D or value.shape[:3] != key.shape[:3]:
        raise ValueError(f"scaled_dot_product_attention: shapes do not fit: query {query.shape}, key {key.shape}, value {value.shape}")
    if value.shape[3] != D:
        raise ValueError(f"scaled_dot_product_attention: value head dim {value.shape[3]} must equal query head dim {D} in this implementation")
    if Hkv != H and not (enable_gqa and H % Hkv == 0):
        raise ValueError(
            f"scaled_dot_product_attention: query has {H} heads but key/value have {Hkv}; "
            "pass enable_gqa=True (and make the query heads a multiple of the key/value heads)"
        )
    if query.dtype != key.dtype or key.dtype != value.dtype:
        raise TypeError(f"scaled_dot_product_attention: dtypes differ: {query.dtype}, {key.dtype}, {value.dtype}")
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    mask = None if attn_mask is None else _additive_mask(attn_mask, query.dtype, (B, H, Tq, Tk))
    if dropout_p > 0.0:
        return manual_attention(query, key, value, mask, dropout_p, is_causal, scale)
    return SDPA.apply(query, key, value, mask, bool(is_causal), scale)


def manual_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """The same attention from primitive ops: scores, mask, softmax, dropout, weighted sum.

    This is the version to read first (and the one the book writes). It materialises the
    (B, H, Tq, Tk) score matrix and repeats K/V for grouped-query attention.
    """
    from .layers import dropout
    from .softmax import softmax

    B, H, Tq, D = query.shape
    Hkv, Tk = key.shape[1], key.shape[2]
    if Hkv != H:  # repeat each K/V head for the query heads that share it
        key = key.repeat_interleave(H // Hkv, dim=1)  # (B, Hkv, Tk, D) -> (B, H, Tk, D)
        value = value.repeat_interleave(H // Hkv, dim=1)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    scores = (query @ key.transpose(-2, -1)) * scale  # (B, H, Tq, D) @ (B, H, D, Tk) -> (B, H, Tq, Tk)
    if attn_mask is not None:
        m = attn_mask.data if isinstance(attn_mask, Tensor) else np.asarray(attn_mask)
        if m.dtype == np.bool_:
            scores = scores.masked_fill(~np.broadcast_to(m, scores.shape), -np.inf)
        else:
            scores = scores + Tensor._wrap(m.astype(scores.dtype, copy=False))
    if is_causal:
        future = np.triu(np.ones((Tq, Tk), dtype=bool), k=1 + (Tk - Tq))  # (Tq, Tk): True above the shifted diagonal
        scores = scores.masked_fill(future, -np.inf)
    # rows with every key masked would be NaN after softmax: give them zero weights instead
    dead = np.isneginf(scores.data).all(axis=-1, keepdims=True)  # (B, H, Tq, 1)
    if dead.any():
        scores = scores.masked_fill(np.broadcast_to(dead, scores.shape), 0.0)
    probs = softmax(scores, dim=-1)  # (B, H, Tq, Tk)
    if dead.any():
        probs = probs.masked_fill(np.broadcast_to(dead, probs.shape), 0.0)
    probs = dropout(probs, dropout_p, training=dropout_p > 0)
    return probs @ value  # (B, H, Tq, Tk) @ (B, H, Tk, D) -> (B, H, Tq, D)
