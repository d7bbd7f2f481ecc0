"""The Transformer of "Attention Is All You Need", as Happy LLM chapter 2 builds it ("Transformer 架构").

One class per subsection, in the book's order and with the names of its code
(``docs/chapter2/code/transformer.py``):

    2.1.3-2.1.6  MultiHeadAttention   scores = q·kᵀ/√d (+ mask) -> softmax -> · v, over n_heads heads
                                      (a book-named wrapper of ``minillm.nn.MultiHeadAttention``)
    2.2.2        MLP                  position-wise ReLU feed-forward network (``nn.FeedForward``)
    2.2.3        LayerNorm            PyTorch's formula by default, the book's as a variant
    2.2.4        (residuals)          inside the layers: pre-norm (the book's code) or post-norm (the paper)
    2.2.5        EncoderLayer, Encoder
    2.2.6        DecoderLayer, Decoder  masked self-attention, cross-attention, MLP
    2.3.1        (Embedding)          ``transformer.wte`` (source), ``transformer.tgt_wte`` (target)
    2.3.2        PositionalEncoding   the sine/cosine table (``nn.SinusoidalPositionalEncoding``)
    2.3.3        ModelArgs, Transformer  embeddings -> Encoder -> Decoder -> lm_head

What differs from the book's code, each on purpose (these are its most-reported bugs):

* ``n_embd`` vs ``dim``: the book uses ``n_embd`` for embeddings and LayerNorms and ``dim`` for
  attention and the MLP, but the residual ``x + attention(x)`` only works when they are equal
  (its example passes 100 and 100). Here ``dim`` is the one width; ``n_embd`` may be left out
  or must equal it (``ModelArgs`` raises otherwise). Likewise ``block_size`` (the book's
  positional-table length) and ``max_seq_len`` (its mask size) are one length.
* The decoder reads the **target** sequence (the book feeds the source embeddings to both
  encoder and decoder, so it never translates anything) and the cross-attention's keys have
  the **source** length (the book's ``view(bsz, seqlen, ...)`` reshapes keys with the query
  length, which fails as soon as source and target lengths differ).
* Residuals: the book's pre-norm layer overwrites ``x = norm(x)`` and then adds ``x + attn(x)``,
  so the residual stream carries the *normalised* input. Here pre-norm is ``x + attn(norm(x))``
  and post-norm (the paper) is ``norm(x + attn(x))``, chosen by ``ModelArgs.norm_first``.
* Padding: source and target key-padding masks (1 = real token, 0 = padding); the book has none.
  The causal mask is built for the actual lengths (no ``max_seq_len``² buffer).
* The MLP is 4·dim wide (``hidden_dim``), as in the paper; the book's is dim wide.
* LayerNorm: PyTorch's ``(x - mean) / √(var + eps)`` with the biased variance; the book's
  ``(x - mean) / (std + eps)`` with the unbiased std is kept as ``LayerNorm(..., book_formula=True)``.
* Token embeddings are scaled by √dim before the positional table is added (the paper, §3.4):
  with std-0.02 embeddings the table (values ±1) would otherwise drown the tokens.
* ``forward`` returns logits for every target position and the mean cross-entropy over targets
  != ``-100`` (the book returns the last position only and ignores id -1). ``print`` calls removed.

Decoding protocol (shared with ``minillm.generation``)::

    Transformer.is_encoder_decoder = True
    memory = model.encode(src_ids, src_mask)                          # (B, S) -> (B, S, dim)
    cache = model.new_kv_cache(batch_size, max_len)                   # one nn.KVCache per decoder layer
    logits = model.decode(tgt_ids, memory, src_mask, kv_cache=cache)  # new tokens only -> (B, T, V)
    model.config.max_seq_len
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import nn
from .._checks import check_token_ids
from ..nn import functional as F
from ..nn.heads import lm_loss
from ..nn.kv_cache import KVCache
from ..tensor import Tensor
from .config import ConfigMixin

__all__ = [
    "ModelArgs", "MultiHeadAttention", "LayerNorm", "MLP", "EncoderLayer", "Encoder", "DecoderLayer", "Decoder",
    "PositionalEncoding", "Transformer", "Seq2SeqLMOutput",
]


# =============================================================================== 2.3.3 ModelArgs
@dataclass
class ModelArgs(ConfigMixin):
    """The book's ``ModelArgs`` with defaults, validation and the fixes above.

    ``ModelArgs(n_embd=100, n_heads=10, dim=100, dropout=0.1, max_seq_len=512, vocab_size=1000,
    block_size=1000, n_layer=2)`` -- the book's positional call -- is refused, because its
    ``block_size`` (1000) and ``max_seq_len`` (512) disagree; pass one of them.
    Invalid values raise ``ValueError`` naming the field.
    """

    n_embd: int | None = None  # the book's embedding width; None = dim (it must equal dim)
    n_heads: int = 4  # attention heads; head_dim = dim // n_heads
    dim: int = 128  # model width: embeddings, attention, residual stream
    dropout: float = 0.1  # on embeddings, attention probabilities and residual branches (training only)
    max_seq_len: int | None = None  # longest source or target sequence; None = block_size (default 128)
    vocab_size: int = 1000  # vocabulary of both sides unless src_vocab_size / tgt_vocab_size are set
    block_size: int | None = None  # the book's name for the positional-table length; None = max_seq_len
    n_layer: int = 2  # EncoderLayers and DecoderLayers (each)
    # ---- beyond the book's fields
    src_vocab_size: int | None = None  # source vocabulary; None = vocab_size
    tgt_vocab_size: int | None = None  # target vocabulary (and lm_head outputs); None = vocab_size
    hidden_dim: int | None = None  # MLP width; None = 4 * dim (the paper)
    norm_first: bool = True  # True: pre-norm (the book's code); False: post-norm (the 2017 paper)
    norm_eps: float = 1e-5  # LayerNorm epsilon (PyTorch's default)
    book_layernorm: bool = False  # True: the book's LayerNorm formula (unbiased std, / (std + eps))
    bias: bool = False  # biases in the Linear layers (the book: none; torch.nn.Transformer: all)
    pad_token_id: int | None = None  # if set, forward() defaults src_mask/tgt_mask to ids != pad_token_id
    flash_attn: bool = True  # fused attention (True) or the book's step-by-step attention (False)

    def __post_init__(self):
        if self.n_embd is None:
            self.n_embd = self.dim
        if self.max_seq_len is None:
            self.max_seq_len = 128 if self.block_size is None else self.block_size
        if self.block_size is None:
            self.block_size = self.max_seq_len
        if self.src_vocab_size is None:
            self.src_vocab_size = self.vocab_size
        if self.tgt_vocab_size is None:
            self.tgt_vocab_size = self.vocab_size
        if self.hidden_dim is None and isinstance(self.dim, int):
            self.hidden_dim = 4 * self.dim
        for name in ("n_embd", "n_heads", "dim", "max_seq_len", "vocab_size", "block_size", "n_layer",
                     "src_vocab_size", "tgt_vocab_size", "hidden_dim"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"ModelArgs.{name} must be a positive int, got {v!r}")
        if self.n_embd != self.dim:
            raise ValueError(
                f"ModelArgs.n_embd ({self.n_embd}) must equal dim ({self.dim}): the residual x + attention(x) "
                "adds vectors of both widths (leave n_embd out to use dim)"
            )
        if self.block_size != self.max_seq_len:
            raise ValueError(
                f"ModelArgs.block_size ({self.block_size}) must equal max_seq_len ({self.max_seq_len}): both are the "
                "longest sequence the positional table covers (pass only one of them)"
            )
        if self.dim % self.n_heads:
            raise ValueError(f"ModelArgs.dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"ModelArgs.dropout must be in [0, 1), got {self.dropout!r}")
        if not (isinstance(self.norm_eps, (int, float)) and self.norm_eps > 0):
            raise ValueError(f"ModelArgs.norm_eps must be > 0, got {self.norm_eps!r}")
        for name in ("norm_first", "book_layernorm", "bias", "flash_attn"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ModelArgs.{name} must be True or False, got {getattr(self, name)!r}")
        if self.pad_token_id is not None:
            p = self.pad_token_id
            if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or not 0 <= p < min(self.src_vocab_size, self.tgt_vocab_size):
                raise ValueError(f"ModelArgs.pad_token_id must be None or an id in both vocabularies, got {p!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


# =============================================================================== 2.1.6 MultiHeadAttention
class MultiHeadAttention(nn.MultiHeadAttention):
    """2.1.6 多头注意力, the book's ``MultiHeadAttention(args, is_causal)``.

    ``forward(q, k, v)`` as in the book: self-attention is ``attn(x, x, x)``, cross-attention
    ``attn(x, enc_out, enc_out)``; plus ``key_padding_mask`` (B, Tk) True = padding, and
    ``kv_cache`` for decoding. Weights ``wq, wk, wv, wo`` as in the book. The maths (both the
    fused and the step-by-step path) is ``minillm.nn.MultiHeadAttention``.
    """

    def __init__(self, args: ModelArgs, is_causal: bool = False):
        super().__init__(args.dim, args.n_heads, dropout=args.dropout, bias=args.bias, is_causal=is_causal,
                         flash_attn=args.flash_attn)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask=None, kv_cache: KVCache | None = None,
                need_weights: bool = False):
        if kv_cache is not None:  # the cache path is self-attention: the same tensor for q, k and v
            return super().forward(q, None, None, key_padding_mask=key_padding_mask, kv_cache=kv_cache, need_weights=need_weights)
        return super().forward(q, k, v, key_padding_mask=key_padding_mask, need_weights=need_weights)


# =============================================================================== 2.2.3 LayerNorm
class LayerNorm(nn.Module):
    """2.2.3 层归一化 over the last dim: ``weight · (x - mean) / √(var + eps) + bias``.

    That is PyTorch's ``nn.LayerNorm`` (biased variance, eps inside the root), the default.
    ``book_formula=True`` computes the book's version, ``a_2 · (x - mean) / (std + eps) + b_2``
    with the *unbiased* std (÷ (C-1)) and eps outside the root. With eps -> 0 the two differ by
    the constant factor √(C / (C-1)) only (``tests/test_transformer.py`` checks it): 1.4 % for
    C = 128, so the book's works, but weights trained with one do not load exactly into the other.
    ``weight``/``bias`` are the book's ``a_2``/``b_2`` (PyTorch's names, for ``state_dict`` parity).
    """

    def __init__(self, features: int, eps: float = 1e-5, book_formula: bool = False, bias: bool = True):
        super().__init__()
        self.features, self.eps, self.book_formula = int(features), float(eps), bool(book_formula)
        self.weight = nn.Parameter(np.ones(self.features, dtype=np.float32))  # a_2
        self.bias = nn.Parameter(np.zeros(self.features, dtype=np.float32)) if bias else None  # b_2

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.features:
            raise ValueError(f"LayerNorm: input's last dim must be {self.features}, got shape {x.shape}")
        if not self.book_formula:
            return F.layer_norm(x, (self.features,), self.weight, self.bias, self.eps)  # (..., C)
        mean = x.mean(-1, keepdim=True)  # (..., C) -> (..., 1)
        std = x.std(-1, keepdim=True)  # (..., 1), unbiased (÷ (C-1)) as torch.std's default
        y = self.weight * (x - mean) / (std + self.eps)  # (..., C)
        return y if self.bias is None else y + self.bias

    def extra_repr(self):
        return f"{self.features}, eps={self.eps}" + (", book_formula=True" if self.book_formula else "")


# =============================================================================== 2.2.2 MLP
class MLP(nn.FeedForward):
    """2.2.2 前馈神经网络: ``dropout(w2(relu(w1 x)))``, dim -> hidden_dim -> dim (``nn.FeedForward``)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float, bias: bool = False):
        super().__init__(dim, hidden_dim, dropout=dropout, activation="relu", bias=bias)


def _norm(args: ModelArgs) -> LayerNorm:
    return LayerNorm(args.dim, eps=args.norm_eps, book_formula=args.book_layernorm, bias=True)


# =============================================================================== 2.2.5 Encoder
class EncoderLayer(nn.Module):
    """2.2.5 Encoder layer: self-attention and an MLP, each a residual branch with a LayerNorm.

        pre-norm  (norm_first=True):   h = x + attention(norm(x));   out = h + feed_forward(norm(h))
        post-norm (norm_first=False):  h = norm(x + attention(x));   out = norm(h + feed_forward(h))
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.norm_first = args.norm_first
        self.attention_norm = _norm(args)
        self.attention = MultiHeadAttention(args, is_causal=False)
        self.ffn_norm = _norm(args)  # (the book's code spells it "fnn_norm")
        self.feed_forward = MLP(args.dim, args.hidden_dim, args.dropout, bias=args.bias)

    def forward(self, x: Tensor, src_key_padding_mask=None) -> Tensor:
        """x: (B, S, dim); src_key_padding_mask: (B, S) bool, True = padding."""
        if self.norm_first:
            h = self.attention_norm(x)
            h = x + self.attention(h, h, h, key_padding_mask=src_key_padding_mask)  # (B, S, dim)
            return h + self.feed_forward(self.ffn_norm(h))
        h = self.attention_norm(x + self.attention(x, x, x, key_padding_mask=src_key_padding_mask))
        return self.ffn_norm(h + self.feed_forward(h))


class Encoder(nn.Module):
    """2.2.5 Encoder: ``n_layer`` EncoderLayers and a final LayerNorm (as torch.nn.Transformer)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(args) for _ in range(args.n_layer)])
        self.norm = _norm(args)

    def forward(self, x: Tensor, src_key_padding_mask=None) -> Tensor:
        for layer in self.layers:
            x = layer(x, src_key_padding_mask)  # (B, S, dim)
        return self.norm(x)


# =============================================================================== 2.2.6 Decoder
class DecoderLayer(nn.Module):
    """2.2.6 Decoder layer: masked self-attention, cross-attention to the encoder output, MLP.

        pre-norm:   x = x + mask_attention(norm_1(x));  x = x + attention(norm_2(x), enc_out);  x = x + ffn(norm(x))
        post-norm:  x = norm_1(x + mask_attention(x));  x = norm_2(x + attention(x, enc_out));  x = norm(x + ffn(x))
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.norm_first = args.norm_first
        self.attention_norm_1 = _norm(args)
        self.mask_attention = MultiHeadAttention(args, is_causal=True)
        self.attention_norm_2 = _norm(args)
        self.attention = MultiHeadAttention(args, is_causal=False)
        self.ffn_norm = _norm(args)
        self.feed_forward = MLP(args.dim, args.hidden_dim, args.dropout, bias=args.bias)

    def forward(self, x: Tensor, enc_out: Tensor, src_key_padding_mask=None, tgt_key_padding_mask=None,
                kv_cache: KVCache | None = None) -> Tensor:
        """x: (B, T, dim) target states; enc_out: (B, S, dim); masks: (B, S) / (B, P+T) bool, True = padding."""
        def self_attn(h):
            return self.mask_attention(h, h, h, key_padding_mask=tgt_key_padding_mask, kv_cache=kv_cache)  # (B, T, dim)

        def cross_attn(h):
            return self.attention(h, enc_out, enc_out, key_padding_mask=src_key_padding_mask)  # (B, T, dim)

        if self.norm_first:
            x = x + self_attn(self.attention_norm_1(x))
            x = x + cross_attn(self.attention_norm_2(x))
            return x + self.feed_forward(self.ffn_norm(x))
        x = self.attention_norm_1(x + self_attn(x))
        x = self.attention_norm_2(x + cross_attn(x))
        return self.ffn_norm(x + self.feed_forward(x))


class Decoder(nn.Module):
    """2.2.6 Decoder: ``n_layer`` DecoderLayers and a final LayerNorm."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(args) for _ in range(args.n_layer)])
        self.norm = _norm(args)

    def forward(self, x: Tensor, enc_out: Tensor, src_key_padding_mask=None, tgt_key_padding_mask=None, kv_cache=None) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, enc_out, src_key_padding_mask, tgt_key_padding_mask, None if kv_cache is None else kv_cache[i])
        return self.norm(x)  # (B, T, dim)


# =============================================================================== 2.3.2 PositionalEncoding
class PositionalEncoding(nn.SinusoidalPositionalEncoding):
    """2.3.2 位置编码: x + PE[start : start + T] with the sine/cosine table of ``block_size`` rows
    (``nn.SinusoidalPositionalEncoding``; the table is a buffer, never trained or saved)."""

    def __init__(self, args: ModelArgs):
        super().__init__(args.dim, args.block_size)


# =============================================================================== 2.3.3 Transformer
@dataclass
class Seq2SeqLMOutput:
    """``logits`` (B, T, tgt_vocab) and ``loss`` (scalar Tensor or None). Unpacks like the book's
    return value: ``logits, loss = model(src, tgt, targets)``."""

    logits: Tensor
    loss: Tensor | None = None

    def __iter__(self):
        return iter((self.logits, self.loss))

    def __getitem__(self, key):
        return (self.logits, self.loss)[key] if isinstance(key, int) else getattr(self, key)


class Transformer(nn.Module):
    """2.3.3 一个完整的 Transformer: source -> Encoder -> memory; target -> Decoder (reading memory) -> lm_head.

    >>> model = Transformer(ModelArgs(vocab_size=100, dim=32, n_heads=4, n_layer=2, max_seq_len=16))
    >>> logits, loss = model(src, tgt_in, targets=tgt_out, src_mask=src_mask, tgt_mask=tgt_mask)

    src: (B, S) source ids; tgt: (B, T) target ids fed to the decoder (start with BOS);
    targets: (B, T) the ids to predict (tgt shifted left; -100 = ignore); src_mask / tgt_mask:
    (B, S) / (B, T) of 1 (real token) / 0 (padding) -- default: all real, or ids != pad_token_id
    when ``ModelArgs.pad_token_id`` is set (``encode``/``decode`` take their masks explicitly).
    """

    is_encoder_decoder = True  # generation: encode once, decode with a KV cache

    def __init__(self, args: ModelArgs):
        super().__init__()
        if not isinstance(args, ModelArgs):
            raise TypeError(f"Transformer: expected a ModelArgs, got {type(args).__name__}")
        self.args = args
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(args.src_vocab_size, args.dim),  # source token embeddings
            tgt_wte=nn.Embedding(args.tgt_vocab_size, args.dim),  # target token embeddings
            wpe=PositionalEncoding(args),
            drop=nn.Dropout(args.dropout),
            encoder=Encoder(args),
            decoder=Decoder(args),
        ))
        self.lm_head = nn.Linear(args.dim, args.tgt_vocab_size, bias=False)
        self.apply(self._init_weights)

    @property
    def config(self) -> ModelArgs:
        """The ``ModelArgs`` (the name ``minillm.generation`` and Hugging Face use)."""
        return self.args

    def get_num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters; ``non_embedding=True`` leaves out the two token embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel() + self.transformer.tgt_wte.weight.numel()
        return n

    def _init_weights(self, module):
        """N(0, 0.02) for Linear and Embedding weights, zero biases (the book's init); LayerNorms 1/0."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ---------------------------------------------------------------- input checks
    def _ids(self, ids, name: str, vocab: int, start: int = 0) -> np.ndarray:
        a = ids.data if isinstance(ids, Tensor) else np.asarray(ids)
        if a.dtype.kind not in "iu":
            raise TypeError(f"Transformer: {name} must be integer token ids (e.g. int64), got dtype {a.dtype}")
        if a.ndim != 2 or a.shape[1] == 0:
            raise ValueError(f"Transformer: {name} must have shape (batch, seq_len) with seq_len >= 1, got shape {a.shape}")
        if start + a.shape[1] > self.args.max_seq_len:
            raise ValueError(
                f"Transformer: {name} has {a.shape[1]} tokens" + (f" after {start} cached ones" if start else "")
                + f", longer than max_seq_len={self.args.max_seq_len}"
            )
        check_token_ids(a, vocab, "Transformer", name=name)
        return a.astype(np.int64, copy=False)

    @staticmethod
    def _padding(mask, name: str, shape: tuple):
        """1/0 mask (1 = real) -> bool (B, L) True = padding, or None when nothing is padded."""
        if mask is None:
            return None
        m = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
        if m.shape != shape:
            raise ValueError(f"Transformer: {name} must have shape {shape} (1 = token, 0 = padding), got {m.shape}")
        pad = ~m.astype(bool)
        return pad if pad.any() else None

    def _embed(self, ids: np.ndarray, table: nn.Embedding, start: int = 0) -> Tensor:
        x = table(ids) * math.sqrt(self.args.dim)  # (B, L) -> (B, L, dim), scaled as in the paper
        x = self.transformer.wpe(x, start)  # + positions start .. start+L-1
        return self.transformer.drop(x)

    # ---------------------------------------------------------------- the two halves
    def encode(self, src, src_mask=None) -> Tensor:
        """src: (B, S) ids; src_mask: (B, S) 1/0 or None -> memory (B, S, dim)."""
        ids = self._ids(src, "src", self.args.src_vocab_size)
        pad = self._padding(src_mask, "src_mask", ids.shape)
        return self.transformer.encoder(self._embed(ids, self.transformer.wte), pad)

    def decode(self, tgt, memory: Tensor, src_mask=None, kv_cache: list[KVCache] | None = None, tgt_mask=None) -> Tensor:
        """tgt: (B, T) target ids (with ``kv_cache``: only the new ones; their positions continue
        after the cached ones); memory: (B, S, dim) from ``encode``; src_mask: (B, S) 1/0 or None;
        tgt_mask: (B, P+T) 1/0 over cached + new target tokens, or None. -> logits (B, T, tgt_vocab)."""
        start = 0
        if kv_cache is not None:
            if len(kv_cache) != self.args.n_layer:
                raise ValueError(f"Transformer: kv_cache has {len(kv_cache)} layers, the decoder has {self.args.n_layer}")
            start = kv_cache[0].length
        ids = self._ids(tgt, "tgt", self.args.tgt_vocab_size, start)
        B, T = ids.shape
        if not isinstance(memory, Tensor) or memory.ndim != 3 or memory.shape[0] != B or memory.shape[2] != self.args.dim:
            raise ValueError(f"Transformer: memory must be (batch={B}, src_len, dim={self.args.dim}) from encode(), "
                             f"got {getattr(memory, 'shape', type(memory).__name__)}")
        src_pad = self._padding(src_mask, "src_mask", (B, memory.shape[1]))
        tgt_pad = self._padding(tgt_mask, "tgt_mask", (B, start + T))
        h = self._embed(ids, self.transformer.tgt_wte, start)  # (B, T, dim)
        h = self.transformer.decoder(h, memory, src_pad, tgt_pad, kv_cache)  # (B, T, dim)
        return self.lm_head(h)  # (B, T, dim) -> (B, T, tgt_vocab)

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        """One empty ``KVCache`` per decoder layer (its masked self-attention), for ``max_len``
        target positions (default ``max_seq_len``)."""
        a = self.args
        max_len = a.max_seq_len if max_len is None else int(max_len)
        dtype = self.lm_head.weight.dtype
        return [KVCache(batch_size, a.n_heads, a.head_dim, max_len, dtype) for _ in range(a.n_layer)]

    # ---------------------------------------------------------------- forward
    def forward(self, src, tgt, targets=None, src_mask=None, tgt_mask=None) -> Seq2SeqLMOutput:
        """Teacher-forced training pass; see the class docstring. Returns ``Seq2SeqLMOutput``."""
        s = self._ids(src, "src", self.args.src_vocab_size)
        t = self._ids(tgt, "tgt", self.args.tgt_vocab_size)
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"Transformer: src has batch size {s.shape[0]} but tgt has {t.shape[0]}")
        if self.args.pad_token_id is not None:  # masks from the padding id, unless given
            src_mask = s != self.args.pad_token_id if src_mask is None else src_mask
            tgt_mask = t != self.args.pad_token_id if tgt_mask is None else tgt_mask
        memory = self.encode(s, src_mask)  # (B, S, dim)
        logits = self.decode(t, memory, src_mask, tgt_mask=tgt_mask)  # (B, T, V)
        loss = None if targets is None else lm_loss(logits, targets, t.shape, "Transformer", "tgt")  # mean over labels != -100
        return Seq2SeqLMOutput(logits=logits, loss=loss)

    def extra_repr(self):
        return f"params={self.get_num_params():,}, norm_first={self.args.norm_first}"
