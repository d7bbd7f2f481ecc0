"""``KVCache``: one attention layer's keys and values from earlier decoding steps (5.1.3.3).

Shared by every model that decodes token by token (LLaMA, the ch.2 Transformer's decoder,
GPT, T5): the prompt is run once ("prefill"), each layer keeps its keys and values here, and
every later step feeds only the new token, whose query attends to all cached keys.
Beam search keeps one cache row per beam and calls ``reorder`` when beams are re-ranked.

The two arrays may differ in their last width (``v_head_dim``): DeepSeek's multi-head latent
attention (``models/deepseek.py``) keeps its compressed latent ``c_kv`` (kv_lora_rank wide) in
the first slot and its shared rotary key (qk_rope_head_dim wide) in the second.
"""
from __future__ import annotations

import numpy as np

from .. import autograd
from ..tensor import Tensor

__all__ = ["KVCache"]


class KVCache:
    """One layer's keys and values from earlier steps, for incremental decoding.

    ``k``, ``v``: (B, n_kv_heads, max_len, head_dim) arrays allocated once (``v``'s last dim is
    ``v_head_dim`` if given); ``length`` positions are filled. ``update`` writes the new step's keys/values in place and
    returns everything so far, (B, n_kv_heads, length, head_dim). Inference only (the
    cached arrays carry no gradient), so use it inside ``mi.no_grad()``.
    """

    def __init__(self, batch_size: int, n_kv_heads: int, head_dim: int, max_len: int, dtype=np.float32,
                 v_head_dim: int | None = None):
        self.k = np.zeros((batch_size, n_kv_heads, max_len, head_dim), dtype=dtype)
        v_dim = head_dim if v_head_dim is None else int(v_head_dim)
        self.v = np.zeros((batch_size, n_kv_heads, max_len, v_dim), dtype=dtype)
        self.length = 0

    @classmethod
    def from_arrays(cls, k: np.ndarray, v: np.ndarray) -> "KVCache":
        """An empty cache that writes into existing (B, n_kv_heads, max_len, head_dim) arrays
        (e.g. one layer's slice of ``FusedDecoder``'s stacked cache)."""
        if k.shape[:3] != v.shape[:3] or k.ndim != 4 or v.ndim != 4 or k.dtype != v.dtype:
            raise ValueError(f"KVCache.from_arrays: k and v must be 4-D arrays of one dtype, equal but for the last dim, got {k.dtype} {k.shape} and {v.dtype} {v.shape}")
        cache = cls.__new__(cls)
        cache.k, cache.v, cache.length = k, v, 0
        return cache

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    @property
    def nbytes(self) -> int:
        """Bytes the cache holds for ``max_len`` positions (k and v together)."""
        return self.k.nbytes + self.v.nbytes

    def update(self, k: Tensor, v: Tensor):
        if autograd.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            raise RuntimeError("KVCache is for inference: run decoding inside `with mi.no_grad():`")
        B, Hkv, T, D = k.shape
        if (B, Hkv, D) != (self.k.shape[0], self.k.shape[1], self.k.shape[3]):
            raise ValueError(f"KVCache: new keys of shape {k.shape} do not fit the cache {self.k.shape}")
        if v.shape != (B, Hkv, T, self.v.shape[3]):
            raise ValueError(f"KVCache: new values of shape {v.shape} do not fit the cache {self.v.shape} (with {T} new positions)")
        end = self.length + T
        if end > self.max_len:
            raise ValueError(f"KVCache: {self.length} cached + {T} new positions exceed its size {self.max_len}")
        self.k[:, :, self.length : end] = k.data  # write in place, (B, Hkv, T, D)
        self.v[:, :, self.length : end] = v.data
        self.length = end
        return Tensor._wrap(self.k[:, :, :end]), Tensor._wrap(self.v[:, :, :end])  # (B, Hkv, P+T, D)

    def reset(self) -> None:
        self.length = 0

    def reorder(self, index) -> None:
        """Keep cache row ``index[i]`` as row ``i`` (beam search: each surviving beam takes its
        parent's keys and values). ``index``: (B,) ints in [0, B); the arrays are rewritten in
        place, so views handed out earlier (e.g. a fused decoder's stacked cache) stay valid."""
        index = np.asarray(index)
        B = self.k.shape[0]
        if index.shape != (B,) or not np.issubdtype(index.dtype, np.integer) or (B and (index.min() < 0 or index.max() >= B)):
            raise ValueError(f"KVCache.reorder: index must be {B} ints in [0, {B}), got {index!r}")
        n = self.length
        self.k[:, :, :n] = self.k[index, :, :n]  # (B, Hkv, n, D): fancy indexing copies first, so in place is safe
        self.v[:, :, :n] = self.v[index, :, :n]
