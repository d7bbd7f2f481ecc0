"""Multi-head attention (Happy LLM 2.1.3-2.1.6), the block every Transformer in the book shares.

    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) · W_o,   head_i = softmax(Q W_q,i (K W_k,i)ᵀ / √d + mask) · V W_v,i

One ``MultiHeadAttention`` serves every use the book has:

* self-attention (encoder, BERT): ``attn(x)`` -- query, key and value all come from ``x``;
* masked (causal) self-attention (decoder, GPT): ``is_causal=True``;
* cross-attention (decoder reading the encoder, T5): ``attn(x, memory, memory)``;
* incremental decoding: ``kv_cache=KVCache(...)`` keeps the keys/values of earlier steps.

Masks follow ``torch.nn.MultiheadAttention``:

* ``key_padding_mask`` (B, Tk): **True = padding, ignore this key** (or a float mask, added);
* ``attn_mask`` (Tq, Tk) or (B, Tq, Tk): **True = may NOT attend** (or a float mask, added);
* ``is_causal``: query i sees keys j <= i (aligned bottom-right, so with a KV cache the new
  queries see every cached key and the new keys up to themselves).

(``F.scaled_dot_product_attention`` uses the opposite bool convention, True = may attend,
as PyTorch's does; the module converts.) Models usually hold a 1/0 ``attention_mask``
(1 = real token, Hugging Face's convention) and pass ``key_padding_mask=attention_mask == 0``.

Two paths, one switch (``flash_attn``, as ``ModelConfig.flash_attn`` in ``models/llama.py``):

* ``flash_attn=True``: ``F.scaled_dot_product_attention``, one fused autograd node (Numba
  kernel); the (Tq, Tk) score matrix is never stored.
* ``flash_attn=False``: the book's readable version, ``attention_probs`` written with
  primitive ops (scores, mask, softmax, dropout) followed by ``probs @ v``.

Tests (``tests/test_nn_attention.py``) check both paths against each other, against a
plain NumPy reference, with float64 gradient checks, and against ``torch.nn.MultiheadAttention``.
"""
from __future__ import annotations

import math

import numpy as np

from ..autograd import no_grad
from ..tensor import Tensor
from . import functional as F
from .kv_cache import KVCache
from .layers import Dropout, Linear
from .module import Module

__all__ = ["MultiHeadAttention", "merge_masks"]


def _array(m):
    return m.data if isinstance(m, Tensor) else np.asarray(m)


def merge_masks(key_padding_mask, attn_mask, B: int, Tq: int, Tk: int, dtype, who: str = "MultiHeadAttention"):
    """Combine a key-padding mask and an attention mask (``torch.nn.MultiheadAttention``
    conventions: bool True = masked out, float = added) into one additive float mask
    (0 where attending is allowed, -inf where not) of shape (B|1, 1, Tq|1, Tk), or None.

    Raises ``ValueError`` naming the shape expected, or ``TypeError`` naming a bad dtype.
    """
    dtype = np.dtype(dtype)
    out = None
    for name, m, shapes in (
        ("key_padding_mask", key_padding_mask, {(B, Tk): lambda a: a[:, None, None, :]}),
        ("attn_mask", attn_mask, {(Tq, Tk): lambda a: a[None, None], (B, Tq, Tk): lambda a: a[:, None]}),
    ):
        if m is None:
            continue
        a = _array(m)
        if a.shape not in shapes:
            want = " or ".join(str(s) for s in shapes)
            raise ValueError(f"{who}: {name} must have shape {want}, got {a.shape}")
        if a.dtype == np.bool_:
            add = np.where(a, dtype.type(-np.inf), dtype.type(0))  # True = masked out -> -inf
        elif a.dtype.kind == "f":
            add = a.astype(dtype, copy=False)
        else:
            raise TypeError(f"{who}: {name} must be bool (True = masked out) or float (added to the scores), got dtype {a.dtype}")
        add = shapes[a.shape](add)  # -> (B|1, 1, Tq|1, Tk)
        out = add if out is None else out + add
    return out


class MultiHeadAttention(Module):
    """Multi-head attention: ``wq, wk, wv`` -> split into heads -> attention -> merge -> ``wo``.

    Arguments:
        embed_dim: width C of the query input and of the output.
        num_heads: heads H; head_dim = embed_dim // num_heads.
        dropout: dropout on the attention probabilities and on the output (``resid_dropout``,
            as the book's code does), active in training mode only.
        bias: biases on the four projections (PyTorch: True; the book's code: False).
        kdim, vdim: widths of the key / value inputs (cross-attention from a memory of another
            width); default embed_dim.
        is_causal: default causal flag of ``forward`` (a decoder's masked self-attention).
        flash_attn: fused attention (True) or the readable step-by-step path (False).

    Parameter names are the book's: ``wq, wk, wv`` (C -> C each) and ``wo`` (C -> C).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 kdim: int | None = None, vdim: int | None = None, is_causal: bool = False, flash_attn: bool = True, dtype=None):
        super().__init__()
        for name, v in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"MultiHeadAttention: {name} must be a positive int, got {v!r}")
        if embed_dim % num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MultiHeadAttention: dropout must be in [0, 1), got {dropout!r}")
        self.embed_dim = int(embed_dim)
        self.n_heads = int(num_heads)
        self.head_dim = self.embed_dim // self.n_heads
        kdim = embed_dim if kdim is None else kdim
        vdim = embed_dim if vdim is None else vdim
        self.wq = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        self.wk = Linear(kdim, embed_dim, bias=bias, dtype=dtype)
        self.wv = Linear(vdim, embed_dim, bias=bias, dtype=dtype)
        self.wo = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        self.dropout = float(dropout)
        self.attn_dropout = Dropout(dropout)  # on the attention probabilities (book path)
        self.resid_dropout = Dropout(dropout)  # on the output, before it joins the residual stream
        self.is_causal = bool(is_causal)
        self.flash_attn = bool(flash_attn)
        # Set keep_weights = True to record each call's probabilities (B, H, Tq, Tk) as a NumPy
        # array in ``last_weights`` (e.g. to draw an attention heatmap from inside a model).
        self.keep_weights = False
        self.last_weights = None

    # ------------------------------------------------------------------ pieces
    def _heads(self, x: Tensor, proj: Linear) -> Tensor:
        B, T, _ = x.shape
        x = proj(x)  # (B, T, Cin) -> (B, T, C)
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)

    def attention_probs(self, q: Tensor, k: Tensor, mask, is_causal: bool) -> Tensor:
        """The book's 2.1.3/2.1.5 step by step: softmax(q·kᵀ/√d + mask) with future keys at -inf.

        q: (B, H, Tq, D), k: (B, H, Tk, D), mask: None or additive (B|1, 1, Tq|1, Tk).
        Returns probabilities (B, H, Tq, Tk); a query with no visible key gets all zeros.
        """
        Tq, Tk = q.shape[2], k.shape[2]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, Tq, D) @ (B, H, D, Tk) -> (B, H, Tq, Tk)
        if mask is not None:
            scores = scores + Tensor._wrap(mask)  # -inf where masked out
        if is_causal:  # query i (absolute position Tk - Tq + i) must not see later keys
            future = np.triu(np.ones((Tq, Tk), dtype=bool), k=Tk - Tq + 1)  # (Tq, Tk)
            scores = scores.masked_fill(future, -np.inf)
        dead = np.isneginf(scores.data).all(axis=-1, keepdims=True)  # (B, H, Tq, 1): nothing visible
        if dead.any():  # softmax of an all -inf row is NaN: give such rows zero weights instead
            scores = scores.masked_fill(np.broadcast_to(dead, scores.shape), 0.0)
        probs = F.softmax(scores, dim=-1)  # (B, H, Tq, Tk), each row sums to 1
        if dead.any():
            probs = probs.masked_fill(np.broadcast_to(dead, probs.shape), 0.0)
        return probs

    # ------------------------------------------------------------------ forward
    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None, key_padding_mask=None,
                attn_mask=None, is_causal: bool | None = None, kv_cache: KVCache | None = None, need_weights: bool = False,
                rotary=None):
        """query: (B, Tq, C); key, value: (B, Tk, kdim|vdim), default ``query`` (self-attention).

        key_padding_mask: (B, Tk) bool, True = padding (with ``kv_cache``: Tk = cached + new).
        attn_mask: (Tq, Tk) or (B, Tq, Tk) bool, True = may not attend; or float, added.
        is_causal: None = the module's default.
        kv_cache: a ``KVCache`` for self-attention decoding (inference, under ``mi.no_grad()``):
            this step's keys/values are appended and the queries attend to all of them.
        need_weights: also return the attention probabilities (B, H, Tq, Tk).
        rotary: a function ``(q, k) -> (q, k)`` on the (B, H, T, D) queries and keys, applied
            before the KV cache and the scores: rotary positions with the caller's own position
            ids (GLM's 2-D RoPE), so the cache holds keys already rotated.
        Returns (B, Tq, C), or (output, weights) with ``need_weights``.
        """
        key = query if key is None else key
        value = key if value is None else value
        is_causal = self.is_causal if is_causal is None else bool(is_causal)
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, Tensor) or t.ndim != 3:
                raise ValueError(f"MultiHeadAttention: {name} must be a 3-D Tensor (batch, seq_len, features), got "
                                 f"{getattr(t, 'shape', type(t).__name__)}")
        B, Tq, _ = query.shape
        if key.shape[0] != B or value.shape[0] != B or key.shape[1] != value.shape[1]:
            raise ValueError(f"MultiHeadAttention: query {query.shape}, key {key.shape} and value {value.shape} "
                             "must share the batch size, and key/value the sequence length")
        if kv_cache is not None and key is not query:
            raise ValueError("MultiHeadAttention: kv_cache is for self-attention (key = value = query); "
                             "cross-attention recomputes its keys from the memory")

        q = self._heads(query, self.wq)  # (B, H, Tq, D)
        k = self._heads(key, self.wk)  # (B, H, Tk, D)
        v = self._heads(value, self.wv)  # (B, H, Tk, D)
        if rotary is not None:
            q, k = rotary(q, k)  # (B, H, Tq, D), (B, H, Tk, D): rotated by their positions
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # -> (B, H, P+Tk, D): earlier steps' keys/values + this step's
        Tk = k.shape[2]
        mask = merge_masks(key_padding_mask, attn_mask, B, Tq, Tk, q.dtype)  # None or (B|1, 1, Tq|1, Tk)
        dropout_p = self.dropout if self.training else 0.0

        probs = None
        if self.flash_attn:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)  # (B, H, Tq, D)
        else:
            probs = self.attention_probs(q, k, mask, is_causal)  # (B, H, Tq, Tk)
            out = self.attn_dropout(probs) @ v  # (B, H, Tq, Tk) @ (B, H, Tk, D) -> (B, H, Tq, D)
        out = out.transpose(1, 2).reshape(B, Tq, self.embed_dim)  # (B, H, Tq, D) -> (B, Tq, H, D) -> (B, Tq, C)
        out = self.resid_dropout(self.wo(out))  # (B, Tq, C)
        if not (need_weights or self.keep_weights):
            return out
        if probs is None:  # the fused kernel keeps no probabilities: recompute them for inspection
            with no_grad():
                probs = self.attention_probs(q.detach(), k.detach(), mask, is_causal)
        if self.keep_weights:
            self.last_weights = probs.data
        return (out, probs) if need_weights else out

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_heads={self.n_heads}, dropout={self.dropout}, "
                f"is_causal={self.is_causal}, flash_attn={self.flash_attn}")
