"""T5, the encoder-decoder model of Happy LLM 3.2.1 ("Encoder-Decoder PLM: T5").

    3.2.1   T5Config                hyper-parameters (t5-small's by default)
            T5LayerNorm             RMS normalisation: no mean, no bias (``nn.RMSNorm``)
            (relative position)     ``nn.RelativePositionBias``: one learned scalar per head and bucketed
                                    offset, added to the attention scores; computed by the first
                                    layer of each stack and shared by all of its layers
            T5Attention             q/k/v/o without biases and *without* the 1/√d scaling
            T5DenseActDense         ReLU feed-forward (T5 v1.0) ...
            T5DenseGatedActDense    ... or gated-GELU (T5 v1.1): wo(gelu(wi_0 x) · wi_1 x)
            T5Block, T5Stack        pre-norm residual layers; the decoder adds cross-attention
            T5ForConditionalGeneration  shared embedding -> encoder -> decoder -> lm_head

Why no 1/√d: T5 folds it into the initialisation instead (q starts with std (d_model·d_kv)^-½
rather than d_model^-½), so the same function is learned with one multiplication fewer;
``tests/test_t5.py`` checks the scores are exactly q·kᵀ + bias.

With ``tie_word_embeddings=True`` (T5 v1.0) the LM head is the shared embedding and the
decoder output is scaled by d_model^-½ before it (as Mesh TensorFlow did); v1.1 unties them.

Parameter names are Hugging Face ``T5ForConditionalGeneration``'s (``shared``,
``encoder.block.{i}.layer.0.SelfAttention.q``, ``...relative_attention_bias``,
``decoder.block.{i}.layer.1.EncDecAttention.k``, ``...layer.2.DenseReluDense.wi``,
``encoder.final_layer_norm``, ``lm_head``), so ``minillm.io.hf_t5`` only copies tensors.

Decoding protocol (shared with ``models/transformer.py`` and ``minillm.generation``)::

    T5ForConditionalGeneration.is_encoder_decoder = True
    memory = model.encode(src_ids, src_mask)                          # (B, S) -> (B, S, d_model)
    cache = model.new_kv_cache(batch_size, max_len)                   # one nn.KVCache per decoder block
    logits = model.decode(tgt_ids, memory, src_mask, kv_cache=cache)  # new tokens only -> (B, T, V)
    model.config.max_seq_len

The decoder starts from ``config.decoder_start_token_id`` (the pad id, 0, as in T5).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import nn
from .._checks import check_token_ids
from ..nn import functional as F
from ..nn.heads import lm_loss
from ..nn.kv_cache import KVCache
from ..nn.positional import RelativePositionBias
from ..tensor import Tensor
from .transformer import Seq2SeqLMOutput
from .config import ConfigMixin

__all__ = [
    "T5Config", "T5LayerNorm", "T5Attention", "T5DenseActDense", "T5DenseGatedActDense", "T5Block", "T5Stack",
    "T5ForConditionalGeneration", "shift_right", "PRESETS",
]

PRESETS = {
    # a laptop-CPU size for the world tasks (~1.5M parameters with a 1k vocabulary)
    "tiny": dict(d_model=128, d_kv=32, d_ff=512, num_layers=3, num_heads=4, max_seq_len=256),
    "t5-small": dict(),
}


@dataclass
class T5Config(ConfigMixin):
    """T5's hyper-parameters (defaults: t5-small, 60M). Names are Hugging Face ``T5Config``'s.
    Invalid values raise ``ValueError`` naming the field."""

    PRESETS: ClassVar[dict] = PRESETS  # the named sizes at the top of this file

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64  # per-head width; num_heads·d_kv need not equal d_model
    d_ff: int = 2048
    num_layers: int = 6  # encoder blocks
    num_decoder_layers: int | None = None  # None = num_layers
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"  # "relu" (v1.0) or "gated-gelu" (v1.1)
    tie_word_embeddings: bool = True  # v1.0: lm_head = shared, output scaled by d_model^-1/2
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    max_seq_len: int = 512  # longest target the decoder's KV cache is sized for (positions are relative: no table)

    def __post_init__(self):
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
                     "relative_attention_num_buckets", "relative_attention_max_distance", "max_seq_len"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"T5Config.{name} must be a positive int, got {v!r}")
        if self.relative_attention_num_buckets < 4:
            raise ValueError(f"T5Config.relative_attention_num_buckets must be >= 4, got {self.relative_attention_num_buckets}")
        if self.feed_forward_proj not in ("relu", "gated-gelu"):
            raise ValueError(f"T5Config.feed_forward_proj must be 'relu' or 'gated-gelu', got {self.feed_forward_proj!r}")
        if not (isinstance(self.dropout_rate, (int, float)) and 0.0 <= self.dropout_rate < 1.0):
            raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        if not (isinstance(self.layer_norm_epsilon, (int, float)) and self.layer_norm_epsilon > 0):
            raise ValueError(f"T5Config.layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}")
        for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 0 <= v < self.vocab_size:
                raise ValueError(f"T5Config.{name} must be an id in [0, {self.vocab_size}), got {v!r}")
        if not isinstance(self.tie_word_embeddings, bool):
            raise ValueError(f"T5Config.tie_word_embeddings must be True or False, got {self.tie_word_embeddings!r}")

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv





class T5LayerNorm(nn.RMSNorm):
    """y = x / √(mean(x²) + eps) · weight: T5's "layer norm" is an RMSNorm (no mean, no bias)."""

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__(d_model, eps)


class T5Attention(nn.Module):
    """Multi-head attention as T5 computes it:

        scores = q·kᵀ + position_bias + mask        (no 1/√d_kv: it is folded into q's init)
        out    = o( softmax(scores) · v )

    ``q, k, v`` (d_model -> num_heads·d_kv) and ``o`` (back) have no biases. Only the first
    layer of a stack owns ``relative_attention_bias`` (an ``nn.RelativePositionBias``); the
    stack computes the bias once and hands it to every layer. Written with primitive ops
    because the bias is a trained input of the scores (a fused kernel's mask gets no gradient).
    """

    def __init__(self, config: T5Config, has_relative_attention_bias: bool = False, bidirectional: bool = True):
        super().__init__()
        self.n_heads, self.d_kv = config.num_heads, config.d_kv
        self.q = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.k = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.v = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.o = nn.Linear(config.inner_dim, config.d_model, bias=False)
        self.attn_dropout = nn.Dropout(config.dropout_rate)
        if has_relative_attention_bias:
            self.relative_attention_bias = RelativePositionBias(
                config.relative_attention_num_buckets, config.num_heads, config.relative_attention_max_distance, bidirectional)

    def _heads(self, x: Tensor, proj: nn.Linear) -> Tensor:
        B, T, _ = x.shape
        return proj(x).view(B, T, self.n_heads, self.d_kv).transpose(1, 2)  # (B, T, d_model) -> (B, H, T, d_kv)

    def forward(self, x: Tensor, memory: Tensor | None = None, position_bias: Tensor | None = None, mask=None,
                kv_cache: KVCache | None = None) -> Tensor:
        """x: (B, Tq, d_model); memory: (B, Tk, d_model) for cross-attention (None = self-attention);
        position_bias: (1, H, Tq, Tk) Tensor or None; mask: bool (B|1, 1, Tq|1, Tk), True = may NOT
        attend, or None; kv_cache: self-attention decoding (Tk = cached + Tq)."""
        B, Tq, _ = x.shape
        src = x if memory is None else memory
        q = self._heads(x, self.q)  # (B, H, Tq, D)
        k, v = self._heads(src, self.k), self._heads(src, self.v)  # (B, H, Tk, D)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # (B, H, P+Tq, D)
        scores = q @ k.transpose(-2, -1)  # (B, H, Tq, D) @ (B, H, D, Tk) -> (B, H, Tq, Tk), no 1/√d
        if position_bias is not None:
            scores = scores + position_bias  # + (1, H, Tq, Tk), trained
        if mask is not None:
            # the dtype's lowest value, not -inf (as HF): a fully masked row becomes uniform, never NaN
            scores = scores.masked_fill(np.broadcast_to(mask, scores.shape), float(np.finfo(scores.dtype).min))
        probs = self.attn_dropout(F.softmax(scores, dim=-1))  # (B, H, Tq, Tk)
        out = (probs @ v).transpose(1, 2).reshape(B, Tq, self.n_heads * self.d_kv)  # (B, H, Tq, D) -> (B, Tq, H·D)
        return self.o(out)  # (B, Tq, d_model)


class T5DenseActDense(nn.Module):
    """T5 v1.0 feed-forward: wo(dropout(relu(wi x))), no biases."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: Tensor) -> Tensor:
        return self.wo(self.dropout(F.relu(self.wi(x))))  # (B, T, d_model) -> (B, T, d_ff) -> (B, T, d_model)


class T5DenseGatedActDense(nn.Module):
    """T5 v1.1 feed-forward: wo(dropout(gelu(wi_0 x) · wi_1 x)) with the tanh GELU, no biases."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x)  # (B, T, d_ff)
        return self.wo(self.dropout(h))  # (B, T, d_model)


class _Residual(nn.Module):
    """One pre-norm residual sub-layer: x + dropout(f(layer_norm(x))). The attribute holding f
    gets T5's name (``SelfAttention``, ``EncDecAttention`` or ``DenseReluDense``)."""

    def __init__(self, config: T5Config, name: str, inner: nn.Module):
        super().__init__()
        self._inner_name = name
        setattr(self, name, inner)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        return x + self.dropout(getattr(self, self._inner_name)(self.layer_norm(x), *args, **kwargs))  # (B, T, d_model)


class T5Block(nn.Module):
    """layer[0]: self-attention; (decoder) layer[1]: cross-attention; last: feed-forward."""

    def __init__(self, config: T5Config, is_decoder: bool, has_relative_attention_bias: bool):
        super().__init__()
        self.is_decoder = is_decoder
        ff = T5DenseGatedActDense(config) if config.feed_forward_proj == "gated-gelu" else T5DenseActDense(config)
        layers = [_Residual(config, "SelfAttention", T5Attention(config, has_relative_attention_bias, bidirectional=not is_decoder))]
        if is_decoder:
            layers.append(_Residual(config, "EncDecAttention", T5Attention(config)))
        layers.append(_Residual(config, "DenseReluDense", ff))
        self.layer = nn.ModuleList(layers)

    def forward(self, x, position_bias, self_mask, memory=None, cross_mask=None, kv_cache=None):
        x = self.layer[0](x, None, position_bias, self_mask, kv_cache)  # (B, T, d_model)
        if self.is_decoder:
            x = self.layer[1](x, memory, None, cross_mask)  # cross-attention: no position bias
        return self.layer[-1](x)


class T5Stack(nn.Module):
    """The encoder (bidirectional) or decoder (causal, with cross-attention): blocks and a final norm."""

    def __init__(self, config: T5Config, embed_tokens: nn.Embedding, is_decoder: bool):
        super().__init__()
        self.is_decoder = is_decoder
        self.embed_tokens = embed_tokens  # the shared table (listed once in parameters())
        n = config.num_decoder_layers if is_decoder else config.num_layers
        self.block = nn.ModuleList([T5Block(config, is_decoder, has_relative_attention_bias=i == 0) for i in range(n)])
        self.final_layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, ids: np.ndarray, self_pad=None, memory=None, cross_pad=None, kv_cache=None) -> Tensor:
        """ids (B, T); self_pad: (B, P+T) bool True = padding key, or None; cross_pad: (B, S) likewise."""
        B, T = ids.shape
        start = 0 if kv_cache is None else kv_cache[0].length
        x = self.dropout(self.embed_tokens(ids))  # (B, T) -> (B, T, d_model)
        # computed once, by the first block's module, and shared by every block (T5's design)
        position_bias = self.block[0].layer[0].SelfAttention.relative_attention_bias(T, start + T, start)  # (1, H, T, P+T)
        self_mask = None if self_pad is None else self_pad[:, None, None, :]  # (B, 1, 1, P+T)
        if self.is_decoder:  # query i (absolute start+i) must not see later keys
            future = np.triu(np.ones((T, start + T), dtype=bool), k=start + 1)[None, None]  # (1, 1, T, P+T)
            self_mask = future if self_mask is None else self_mask | future
        cross_mask = None if cross_pad is None else cross_pad[:, None, None, :]  # (B, 1, 1, S)
        for i, blk in enumerate(self.block):
            x = blk(x, position_bias, self_mask, memory, cross_mask, None if kv_cache is None else kv_cache[i])
        return self.dropout(self.final_layer_norm(x))  # (B, T, d_model)


def shift_right(labels: np.ndarray, decoder_start_token_id: int, pad_token_id: int) -> np.ndarray:
    """Teacher forcing: decoder inputs = [start] + labels[:-1], with -100 replaced by the pad id.

    >>> shift_right(np.array([[5, 6, 1, -100]]), 0, 0).tolist()
    [[0, 5, 6, 1]]
    """
    out = np.empty_like(labels)
    out[:, 0] = decoder_start_token_id
    out[:, 1:] = labels[:, :-1]
    return np.where(out == -100, pad_token_id, out)


class T5ForConditionalGeneration(nn.Module):
    """T5: ``shared`` embedding -> ``encoder`` -> ``decoder`` (cross-attending) -> ``lm_head``.

    >>> model = T5ForConditionalGeneration(T5Config.preset("tiny", vocab_size=1000))
    >>> out = model(input_ids, attention_mask=mask, labels=labels)    # labels: (B, T), -100 = ignore
    >>> out.logits.shape, out.loss                                      # (B, T, 1000), mean cross-entropy
    """

    is_encoder_decoder = True

    def __init__(self, config: T5Config | None = None):
        super().__init__()
        config = T5Config() if config is None else config
        if not isinstance(config, T5Config):
            raise TypeError(f"T5ForConditionalGeneration: expected a T5Config, got {type(config).__name__}")
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, self.shared, is_decoder=False)
        self.decoder = T5Stack(config, self.shared, is_decoder=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self._init_weights()
        if config.tie_word_embeddings:
            self.lm_head.weight = self.shared.weight

    def _init_weights(self):
        """Hugging Face's T5 init (factor 1): every std is 1/√(fan-in), and q's also carries the
        1/√d_kv the attention leaves out."""
        c = self.config
        nn.init.normal_(self.shared.weight, 0.0, 1.0)
        nn.init.normal_(self.lm_head.weight, 0.0, 1.0)
        for name, m in self.named_modules():
            if isinstance(m, T5Attention):
                nn.init.normal_(m.q.weight, 0.0, (c.d_model * c.d_kv) ** -0.5)
                nn.init.normal_(m.k.weight, 0.0, c.d_model**-0.5)
                nn.init.normal_(m.v.weight, 0.0, c.d_model**-0.5)
                nn.init.normal_(m.o.weight, 0.0, c.inner_dim**-0.5)
                if hasattr(m, "relative_attention_bias"):
                    nn.init.normal_(m.relative_attention_bias.weight, 0.0, c.d_model**-0.5)
            elif isinstance(m, (T5DenseActDense, T5DenseGatedActDense)):
                for wi in ("wi", "wi_0", "wi_1"):
                    if hasattr(m, wi):
                        nn.init.normal_(getattr(m, wi).weight, 0.0, c.d_model**-0.5)
                nn.init.normal_(m.wo.weight, 0.0, c.d_ff**-0.5)

    @property
    def args(self) -> T5Config:
        return self.config

    # ---------------------------------------------------------------- checks
    def _ids(self, ids, name: str) -> np.ndarray:
        a = ids.data if isinstance(ids, Tensor) else np.asarray(ids)
        if a.dtype.kind not in "iu":
            raise TypeError(f"T5: {name} must be integer token ids, got dtype {a.dtype}")
        if a.ndim != 2 or a.shape[1] == 0:
            raise ValueError(f"T5: {name} must have shape (batch, seq_len) with seq_len >= 1, got shape {a.shape}")
        check_token_ids(a, self.config.vocab_size, "T5", name=name)
        return a.astype(np.int64, copy=False)

    @staticmethod
    def _pad(mask, name: str, shape):
        """1/0 mask (1 = token) -> bool True = padding, or None when nothing is padded."""
        if mask is None:
            return None
        m = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
        if m.shape != tuple(shape):
            raise ValueError(f"T5: {name} must have shape {tuple(shape)} (1 = token, 0 = padding), got {m.shape}")
        pad = ~m.astype(bool)
        return pad if pad.any() else None

    # ---------------------------------------------------------------- the two halves
    def encode(self, src_ids, src_mask=None) -> Tensor:
        """src_ids (B, S), src_mask (B, S) 1/0 or None -> memory (B, S, d_model)."""
        ids = self._ids(src_ids, "input_ids")
        return self.encoder(ids, self._pad(src_mask, "attention_mask", ids.shape))

    def decode(self, tgt_ids, memory: Tensor, src_mask=None, kv_cache: list[KVCache] | None = None, tgt_mask=None) -> Tensor:
        """tgt_ids (B, T) (with ``kv_cache``: only the new ones); memory (B, S, d_model) from
        ``encode``; src_mask (B, S); tgt_mask (B, P+T) 1/0 or None. -> logits (B, T, vocab)."""
        start = 0
        if kv_cache is not None:
            if len(kv_cache) != self.config.num_decoder_layers:
                raise ValueError(f"T5: kv_cache has {len(kv_cache)} layers, the decoder has {self.config.num_decoder_layers}")
            start = kv_cache[0].length
        ids = self._ids(tgt_ids, "decoder_input_ids")
        B, T = ids.shape
        if not isinstance(memory, Tensor) or memory.ndim != 3 or memory.shape[0] != B or memory.shape[2] != self.config.d_model:
            raise ValueError(f"T5: memory must be (batch={B}, src_len, d_model={self.config.d_model}) from encode(), "
                             f"got {getattr(memory, 'shape', type(memory).__name__)}")
        if kv_cache is not None and start + T > kv_cache[0].max_len:
            raise ValueError(f"T5: {start} cached + {T} new target positions exceed the cache size {kv_cache[0].max_len}")
        h = self.decoder(ids, self._pad(tgt_mask, "decoder_attention_mask", (B, start + T)), memory,
                         self._pad(src_mask, "attention_mask", (B, memory.shape[1])), kv_cache)  # (B, T, d_model)
        if self.config.tie_word_embeddings:
            h = h * (self.config.d_model**-0.5)  # rescale before the tied head (Mesh TensorFlow)
        return self.lm_head(h)  # (B, T, d_model) -> (B, T, vocab)

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        """One empty ``KVCache`` per decoder block (its self-attention), for ``max_len`` targets."""
        c = self.config
        max_len = c.max_seq_len if max_len is None else int(max_len)
        return [KVCache(batch_size, c.num_heads, c.d_kv, max_len, self.lm_head.weight.dtype) for _ in range(c.num_decoder_layers)]

    # ---------------------------------------------------------------- forward
    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, labels=None, decoder_attention_mask=None):
        """Teacher-forced pass (Hugging Face's argument names).

        input_ids, attention_mask: (B, S) source ids and 1/0 mask.
        labels: (B, T) target ids, -100 = ignore -> ``loss`` (mean cross-entropy); when
            ``decoder_input_ids`` is None they are ``shift_right(labels)``.
        Returns ``Seq2SeqLMOutput(logits (B, T, vocab), loss)``.
        """
        c = self.config
        y = None
        if labels is not None:
            y = labels.data if isinstance(labels, Tensor) else np.asarray(labels)
            if y.dtype.kind not in "iu" or y.ndim != 2:
                raise TypeError(f"T5: labels must be 2-D integer ids (-100 = ignore), got {y.dtype} {y.shape}")
            if decoder_input_ids is None:
                decoder_input_ids = shift_right(y.astype(np.int64), c.decoder_start_token_id, c.pad_token_id)
        if decoder_input_ids is None:
            raise ValueError("T5: pass labels or decoder_input_ids")
        memory = self.encode(input_ids, attention_mask)  # (B, S, d_model)
        logits = self.decode(decoder_input_ids, memory, attention_mask, tgt_mask=decoder_attention_mask)  # (B, T, V)
        loss = None if y is None else lm_loss(logits, y, logits.shape[:2], "T5", "decoder_input_ids", "labels")  # labels != -100
        return Seq2SeqLMOutput(logits=logits, loss=loss)

    def extra_repr(self):
        return f"params={self.num_parameters():,}, feed_forward_proj={self.config.feed_forward_proj!r}"


def greedy_generate(model: T5ForConditionalGeneration, input_ids, attention_mask=None, max_new_tokens: int = 32,
                    eos_token_id: int | None = None) -> list:
    """Greedy decoding with the KV cache (used by the example and the parity tests until the
    generation package speaks the encoder-decoder protocol). Returns the new ids per row,
    stopping at ``eos_token_id`` (not included; default the config's, -1 = never stop, as a
    benchmark wants)."""
    from ..autograd import no_grad

    c = model.config
    eos = c.eos_token_id if eos_token_id is None else eos_token_id
    if isinstance(eos, bool) or not isinstance(eos, (int, np.integer)):
        raise TypeError(f"greedy_generate: eos_token_id must be an int or None, got {eos_token_id!r}")
    with no_grad(), model.mode(training=False):
        ids = model._ids(input_ids, "input_ids")
        B = ids.shape[0]
        memory = model.encode(ids, attention_mask)  # (B, S, d_model)
        cache = model.new_kv_cache(B, max_new_tokens)
        nxt = np.full((B, 1), c.decoder_start_token_id, dtype=np.int64)
        out, done = [[] for _ in range(B)], np.zeros(B, dtype=bool)
        for _ in range(max_new_tokens):
            logits = model.decode(nxt, memory, attention_mask, kv_cache=cache).data[:, -1]  # (B, V)
            tok = logits.argmax(-1)
            for b in range(B):
                if not done[b]:
                    if tok[b] == eos:
                        done[b] = True
                    else:
                        out[b].append(int(tok[b]))
            if done.all():
                break
            nxt = tok[:, None].astype(np.int64)
    return out
