"""Positional information for attention, which by itself ignores word order (Happy LLM 2.3.2).

* ``SinusoidalPositionalEncoding``: the fixed table of "Attention Is All You Need" (and the book),

      PE(pos, 2i)   = sin(pos / 10000^(2i/d))
      PE(pos, 2i+1) = cos(pos / 10000^(2i/d))

  added to the token embeddings; no parameters. Any offset k is a linear map of the table
  (sin/cos of a sum), which is why the paper hoped it would help relative positions.
* ``LearnedPositionalEmbedding``: one trained vector per position (BERT, GPT-2).
* ``RelativePositionBias``: T5's alternative (Happy LLM 3.2.1): nothing is added to the
  embeddings; each attention head adds a learned scalar to the score of query i and key j that
  depends only on the bucketed offset j - i (``relative_position_bucket``).
* Rotary position embedding (RoPE, Happy LLM 5.1.3.2): nothing is added either; the queries
  and keys are rotated by an angle proportional to their position, so q·k depends on the
  offset only. ``precompute_freqs_cis`` builds the cos/sin tables and ``apply_rope`` rotates
  one (B, T, H, D) tensor with the fused op ``F.rotary_embedding``. LLaMA (``models/llama.py``,
  which also keeps the book's step-by-step ``apply_rotary_emb``) and DeepSeek's decoupled
  rotary key (``models/deepseek.py``) share them.

The first two have the same call, ``pe(x, start=0)``: x (B, T, C) -> x + PE[start : start + T], so a
model can switch between them, and decoding with a KV cache continues at ``start = cached``.
"""
from __future__ import annotations

import math

import numpy as np

from ..tensor import Tensor, get_default_dtype
from . import functional as F
from . import init
from .layers import Embedding
from .module import Module, Parameter

__all__ = [
    "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding", "RelativePositionBias", "relative_position_bucket",
    "sinusoidal_table", "precompute_freqs_cis", "apply_rope",
]


def sinusoidal_table(max_len: int, dim: int, base: float = 10000.0) -> np.ndarray:
    """The (max_len, dim) sine/cosine table, computed in float64.

    Column 2i holds sin(pos·θ_i), column 2i+1 cos(pos·θ_i), θ_i = base^(-2i/dim) (the book's
    ``div_term = exp(arange(0, d, 2) · -(ln 10000 / d))``). An odd ``dim`` gets one more sine column.
    """
    position = np.arange(max_len, dtype=np.float64)[:, None]  # (max_len, 1)
    div_term = np.exp(np.arange(0, dim, 2, dtype=np.float64) * -(math.log(base) / dim))  # (ceil(dim/2),)
    pe = np.zeros((max_len, dim), dtype=np.float64)
    pe[:, 0::2] = np.sin(position * div_term)  # (max_len, ceil(dim/2))
    pe[:, 1::2] = np.cos(position * div_term[: dim // 2])  # (max_len, floor(dim/2))
    return pe


def _check_len(who, T, start, max_len):
    if not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"{who}: start must be an int >= 0, got {start!r}")
    if start + T > max_len:
        raise ValueError(f"{who}: positions {start}..{start + T - 1} exceed the table of max_len={max_len} positions")


class SinusoidalPositionalEncoding(Module):
    """x (B, T, dim) -> x + PE[start : start + T]. The table is a non-persistent buffer
    (recomputed, never saved) kept in float64 and cast to x's dtype."""

    def __init__(self, dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        for name, v in (("dim", dim), ("max_len", max_len)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"SinusoidalPositionalEncoding: {name} must be a positive int, got {v!r}")
        self.dim, self.max_len, self.base = int(dim), int(max_len), float(base)
        # float64 table (small), cast to the input's dtype when added: a float64 model gets exact values
        self.register_buffer("pe", Tensor(sinusoidal_table(self.max_len, self.dim, self.base)), persistent=False)  # (max_len, dim)

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"SinusoidalPositionalEncoding: x must be (batch, seq_len, {self.dim}), got {x.shape}")
        T = x.shape[1]
        _check_len("SinusoidalPositionalEncoding", T, start, self.max_len)
        pe = self.pe.data[start : start + T]
        return x + Tensor._wrap(pe.astype(x.dtype, copy=False))  # (B, T, dim) + (T, dim)

    def extra_repr(self):
        return f"dim={self.dim}, max_len={self.max_len}"


class LearnedPositionalEmbedding(Module):
    """x (B, T, dim) -> x + weight[start : start + T]; ``weight`` (max_len, dim) is trained.

    ``position_ids`` (B, T) ints instead of ``start``: each row its own positions (a left-padded
    batch whose rows count from their first real token, as GPT-2 decoding does).
    """

    def __init__(self, max_len: int, dim: int, dtype=None):
        super().__init__()
        self.embedding = Embedding(max_len, dim, dtype=dtype)
        self.max_len, self.dim = self.embedding.num_embeddings, self.embedding.embedding_dim

    @property
    def weight(self):
        return self.embedding.weight

    def forward(self, x: Tensor, start: int = 0, position_ids=None) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"LearnedPositionalEmbedding: x must be (batch, seq_len, {self.dim}), got {x.shape}")
        B, T = x.shape[0], x.shape[1]
        if position_ids is not None:
            pos = position_ids.data if isinstance(position_ids, Tensor) else np.asarray(position_ids)
            if pos.shape != (B, T) or pos.dtype.kind not in "iu":
                raise ValueError(f"LearnedPositionalEmbedding: position_ids must be ints of shape {(B, T)}, got {pos.dtype} {pos.shape}")
            if pos.size and (pos.min() < 0 or pos.max() >= self.max_len):
                raise ValueError(f"LearnedPositionalEmbedding: position_ids must be in [0, {self.max_len}), got {pos.min()}..{pos.max()}")
            return x + self.embedding(pos.astype(np.int64, copy=False))  # (B, T, dim) + (B, T, dim)
        _check_len("LearnedPositionalEmbedding", T, start, self.max_len)
        pos = np.arange(start, start + T, dtype=np.int64)  # (T,)
        return x + self.embedding(pos)  # (B, T, dim) + (T, dim)

    def extra_repr(self):
        return f"max_len={self.max_len}, dim={self.dim}"


def relative_position_bucket(relative_position, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128) -> np.ndarray:
    """T5's bucket of each offset ``relative_position`` = key position - query position (ints).

    Bidirectional (encoder): half the buckets for keys after the query (offset > 0), half for
    the rest. Causal (decoder): only offsets <= 0 are meaningful; positive ones share bucket 0.
    Within a half of n buckets, offsets 0 .. n/2 - 1 get one bucket each (exact); larger ones
    share buckets that grow logarithmically up to ``max_distance``, beyond which everything
    falls in the last bucket. The logarithm is taken in float32, as Hugging Face's T5 does, so
    the buckets are identical to its.

    >>> relative_position_bucket(np.array([-3, 0, 1, 200]), num_buckets=8, max_distance=20).tolist()
    [2, 0, 5, 7]
    """
    rp = np.asarray(relative_position)
    if rp.dtype.kind not in "iu":
        raise TypeError(f"relative_position_bucket: relative_position must be integers, got dtype {rp.dtype}")
    rp = rp.astype(np.int64)
    buckets = np.zeros_like(rp)
    n = int(num_buckets)
    if bidirectional:
        n //= 2
        buckets += (rp > 0) * n  # keys to the right get the upper half
        rp = np.abs(rp)
    else:
        rp = -np.minimum(rp, 0)  # distance into the past; the future collapses to 0
    max_exact = n // 2
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) for the exact offsets, discarded by the where below
        scaled = np.log(rp.astype(np.float32) / np.float32(max_exact)) / np.float32(math.log(max_distance / max_exact))
        large = max_exact + (scaled * np.float32(n - max_exact)).astype(np.int64, copy=False)  # truncation, like .to(long)
    large = np.minimum(large, n - 1)
    return buckets + np.where(rp < max_exact, rp, large)


class RelativePositionBias(Module):
    """T5's relative position bias: ``bias(q_len, k_len)`` -> (1, n_heads, q_len, k_len), added to
    the attention scores (before softmax) of every layer of a stack.

    ``weight`` (num_buckets, n_heads): one learned scalar per bucket and head (Hugging Face's
    ``relative_attention_bias.weight``). ``bidirectional``: True in the encoder, False in the
    decoder (causal). ``q_offset``: absolute position of the first query (with a KV cache the new
    queries come after the cached keys). The lookup is ``F.embedding``, so ``weight`` is trained.
    """

    def __init__(self, num_buckets: int, n_heads: int, max_distance: int = 128, bidirectional: bool = True, dtype=None):
        super().__init__()
        for name, v in (("num_buckets", num_buckets), ("n_heads", n_heads), ("max_distance", max_distance)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"RelativePositionBias: {name} must be a positive int, got {v!r}")
        if num_buckets < (4 if bidirectional else 2):
            raise ValueError(f"RelativePositionBias: num_buckets must be >= {4 if bidirectional else 2}, got {num_buckets}")
        self.num_buckets, self.n_heads, self.max_distance = int(num_buckets), int(n_heads), int(max_distance)
        self.bidirectional = bool(bidirectional)
        self.weight = Parameter(np.empty((self.num_buckets, self.n_heads), dtype=np.dtype(dtype or get_default_dtype())))
        init.normal_(self.weight)

    def buckets(self, q_len: int, k_len: int, q_offset: int = 0) -> np.ndarray:
        """(q_len, k_len) bucket ids for queries at q_offset.. and keys at 0.. ."""
        context = np.arange(q_offset, q_offset + q_len, dtype=np.int64)[:, None]  # (Tq, 1) query positions
        memory = np.arange(k_len, dtype=np.int64)[None, :]  # (1, Tk) key positions
        return relative_position_bucket(memory - context, self.bidirectional, self.num_buckets, self.max_distance)  # (Tq, Tk)

    def forward(self, q_len: int, k_len: int, q_offset: int = 0) -> Tensor:
        for name, v in (("q_len", q_len), ("k_len", k_len), ("q_offset", q_offset)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"RelativePositionBias: {name} must be an int >= 0, got {v!r}")
        values = F.embedding(self.buckets(int(q_len), int(k_len), int(q_offset)), self.weight)  # (Tq, Tk) -> (Tq, Tk, H)
        return values.permute(2, 0, 1).unsqueeze(0)  # (Tq, Tk, H) -> (1, H, Tq, Tk)

    def extra_repr(self):
        return f"num_buckets={self.num_buckets}, n_heads={self.n_heads}, max_distance={self.max_distance}, bidirectional={self.bidirectional}"


def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0):
    """5.1.3.2 旋转嵌入: the cos and sin tables of RoPE, each (end, dim // 2).

    ``dim`` is the head dim. Pair i of a head (dims 2i, 2i+1) turns with frequency
    θ_i = theta^(-2i/dim); at position t its angle is t·θ_i. Computed in float64 and
    stored as float32 (so long positions keep their precision).
    """
    freqs = 1.0 / (theta ** (np.arange(0, dim, 2)[: dim // 2].astype(np.float64) / dim))  # (dim/2,)
    t = np.arange(end, dtype=np.float64)  # (end,)
    freqs = np.outer(t, freqs)  # (end,) ⊗ (dim/2,) -> (end, dim/2), angle t·θ_i
    freqs_cos = Tensor(np.cos(freqs).astype(np.float32))  # real part, (end, dim/2)
    freqs_sin = Tensor(np.sin(freqs).astype(np.float32))  # imaginary part, (end, dim/2)
    return freqs_cos, freqs_sin


def apply_rope(x: Tensor, cos: np.ndarray, sin: np.ndarray) -> Tensor:
    """Rotate x (B, T, H, D) by RoPE (adjacent pairs 2i, 2i+1) with the fused op.

    cos/sin: (T, D/2) when every row has the same positions (rows of ``precompute_freqs_cis``),
    or (B, T, D/2) when each row has its own (a left-padded batch counting from its first token).
    """
    if cos.ndim == 2:
        return F.rotary_embedding(x, cos, sin)  # (B, T, H, D)
    B, T, H, D = x.shape
    if cos.shape != (B, T, D // 2) or sin.shape != cos.shape:
        raise ValueError(f"apply_rope: per-row cos/sin must be (batch, seq_len, head_dim/2) = {(B, T, D // 2)}, "
                         f"got {cos.shape} and {sin.shape}")
    # Lay the B rows end to end as one long sequence, each position with its own angle.
    y = F.rotary_embedding(x.reshape(1, B * T, H, D), cos.reshape(B * T, D // 2), sin.reshape(B * T, D // 2))  # (1, B·T, H, D)
    return y.reshape(B, T, H, D)  # (1, B·T, H, D) -> (B, T, H, D)
