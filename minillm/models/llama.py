"""LLaMA2, built piece by piece as in Happy LLM section 5.1 ("动手实现一个 LLaMA2 大模型").

One class or function per subsection of the book, in the book's order and with its names:

    5.1.1    ModelConfig            hyper-parameters (+ validation and CPU presets)
    5.1.2    RMSNorm                y = x / √(mean(x²) + eps) · γ
    5.1.3    LLaMA2 Attention
    5.1.3.1    repeat_kv            copy each K/V head for the query heads that share it (GQA)
    5.1.3.2    precompute_freqs_cis, reshape_for_broadcast, apply_rotary_emb   (RoPE)
    5.1.3.3    Attention            wq/wk/wv -> RoPE -> causal attention -> wo
    5.1.4    MLP                    SwiGLU feed-forward: w2(silu(w1 x) · w3 x)
    5.1.5    DecoderLayer           pre-norm residual block
    5.1.6    Transformer            embeddings -> n_layers × DecoderLayer -> norm -> output head

Parameter names are the book's (``k_model.py``), so its checkpoints' keys line up:
``tok_embeddings.weight``, ``layers.{i}.attention.{wq,wk,wv,wo}.weight``,
``layers.{i}.feed_forward.{w1,w2,w3}.weight``, ``layers.{i}.attention_norm.weight``,
``layers.{i}.ffn_norm.weight``, ``norm.weight``, ``output.weight``.

Two paths through attention, chosen by ``ModelConfig.flash_attn`` (the book's switch):

* ``flash_attn=True`` (default): fused ops. ``F.rotary_embedding`` rotates q and k in one
  node, and ``F.scaled_dot_product_attention(..., is_causal=True, enable_gqa=True)``
  reads each K/V head directly for its group of query heads, so K/V are never repeated
  in memory and the (T, T) score matrix is never stored.
* ``flash_attn=False``: the book's readable version, written with primitive ops:
  ``apply_rotary_emb``, ``repeat_kv``, scores = q·kᵀ/√d + mask, softmax, dropout, · v.
  Tests check that both paths give the same logits and gradients.

Differences from the book's code (each on purpose):
* The scaled init of the residual projections uses ``wo`` and ``w2`` (the layers that write
  into the residual stream, as in GPT-2 / llama2.c); the book's code scales ``w3``.
* The loss is the mean cross-entropy over targets != -100 (the book uses ignore_index=0,
  i.e. it never learns to predict token 0, and returns per-token losses).
* ``forward`` always returns logits for every position (``logits_to_keep=1`` gives the
  book's "last position only" inference shortcut).
* ``forward`` takes an optional padding ``attention_mask``, ``position_ids`` and a KV cache
  (used by ``minillm.generation``); the book's model has neither.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import nn
from .._checks import check_model_inputs
from ..nn.kv_cache import KVCache  # noqa: F401  (shared by every decoder; re-exported here)
from ..nn import functional as F
from ..nn.heads import lm_loss
from ..nn.positional import apply_rope as _rotary, precompute_freqs_cis  # RoPE, shared with DeepSeek
from ..ops import stack
from ..autograd import is_grad_enabled
from ..tensor import Tensor
from ..utils.checkpoint import checkpoint
from .config import ConfigMixin

__all__ = [
    "ModelConfig", "PRESETS", "RMSNorm", "repeat_kv", "precompute_freqs_cis", "reshape_for_broadcast",
    "apply_rotary_emb", "Attention", "MLP", "DecoderLayer", "Transformer", "KVCache", "CausalLMOutput",
]


# =============================================================================== 5.1.1
# Named sizes for CPU work. ``vocab_size`` is not part of a preset: it follows the tokenizer
# (``ModelConfig.preset("tiny", vocab_size=tokenizer.vocab_size)``).
PRESETS = {
    # ~0.8M parameters in the blocks (+ vocab·128 for the tied embedding): trains in minutes.
    "tiny": dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, max_seq_len=256),
    # llama2.c's "stories15M" shape (dim 288, 6 layers, 6 heads, hidden 768).
    "small": dict(dim=288, n_layers=6, n_heads=6, n_kv_heads=6, max_seq_len=256),
    # The book's defaults (82.6M parameters with vocab 6144), too slow for a laptop CPU.
    "book": dict(),
}


@dataclass
class ModelConfig(ConfigMixin):
    """5.1.1 定义超参数: the model's hyper-parameters, with the book's defaults.

    ``ModelConfig()`` is the book's model (dim 768, 12 layers, 82,594,560 parameters);
    ``ModelConfig.preset("tiny", vocab_size=...)`` a size that trains on a laptop CPU.
    Invalid values raise ``ValueError`` naming the field.
    """

    PRESETS: ClassVar[dict] = PRESETS  # the named sizes at the top of this file

    dim: int = 768  # model (embedding) width
    n_layers: int = 12  # number of DecoderLayers
    n_heads: int = 16  # query heads; head_dim = dim // n_heads
    n_kv_heads: int | None = 8  # key/value heads (GQA); None = n_heads (plain multi-head attention)
    vocab_size: int = 6144  # the book's tokenizer size; follow your tokenizer
    hidden_dim: int | None = None  # MLP width; None = int(8·dim/3) rounded up to a multiple of `multiple_of`
    multiple_of: int = 64
    norm_eps: float = 1e-5  # RMSNorm epsilon
    max_seq_len: int = 512  # longest sequence (size of the RoPE table)
    dropout: float = 0.0  # dropout probability (embeddings, attention weights, residual branches)
    flash_attn: bool = True  # fused attention ops (True) or the book's step-by-step version (False)
    tie_word_embeddings: bool = True  # output head shares the embedding matrix
    rope_theta: float = 10000.0  # RoPE base

    def __post_init__(self):
        for name in ("dim", "n_layers", "n_heads", "vocab_size", "multiple_of", "max_seq_len"):
            _require_positive_int(self, name)
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        _require_positive_int(self, "n_kv_heads")
        if self.hidden_dim is not None:
            _require_positive_int(self, "hidden_dim")
        if self.dim % self.n_heads:
            raise ValueError(f"ModelConfig.dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"ModelConfig.n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads})")
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"ModelConfig.n_heads: head_dim = dim // n_heads = {self.dim // self.n_heads} must be even for RoPE")
        # finite numbers only (inf passes "> 0" but norm_eps=inf turns every logit into 0); a bool is not a number
        if not (_is_number(self.norm_eps) and 0 < self.norm_eps < math.inf):
            raise ValueError(f"ModelConfig.norm_eps must be a finite number > 0, got {self.norm_eps!r}")
        if not (_is_number(self.dropout) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not (_is_number(self.rope_theta) and 0 < self.rope_theta < math.inf):
            raise ValueError(f"ModelConfig.rope_theta must be a finite number > 0, got {self.rope_theta!r}")
        for name in ("flash_attn", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ModelConfig.{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        """The MLP width actually used (see ``MLP``)."""
        return _mlp_hidden_dim(self.dim, self.hidden_dim, self.multiple_of)





def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _require_positive_int(cfg, name):
    v = getattr(cfg, name)
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"ModelConfig.{name} must be a positive int, got {v!r}")


# =============================================================================== 5.1.2
class RMSNorm(nn.RMSNorm):
    """5.1.2 构建 RMSNorm:  RMSNorm(x) = x / √(mean(x²) + eps) · γ   (γ = ``self.weight``, init 1).

    The layer itself is the shared ``nn.RMSNorm`` (``forward`` runs the fused op
    ``F.rms_norm``); this subclass keeps the book's signature ``RMSNorm(dim, eps)`` and its
    ``_norm``, the formula written with primitive ops (tests check they agree, values and
    gradients).
    """

    def __init__(self, dim: int, eps: float):
        super().__init__(dim, eps)  # eps keeps the denominator away from 0; weight γ starts at 1

    def _norm(self, x: Tensor) -> Tensor:
        return x * ((x * x).mean(-1, keepdim=True) + self.eps).rsqrt()  # (..., dim) / (..., 1)


# =============================================================================== 5.1.3.1
def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """5.1.3.1 repeat_kv: (B, T, n_kv_heads, D) -> (B, T, n_kv_heads·n_rep, D).

    Each K/V head is copied ``n_rep`` times in a row, so query head h reads K/V head
    h // n_rep. Used by the step-by-step attention (``flash_attn=False``); the fused
    attention does the same indexing without making the copies.
    """
    bs, slen, n_kv_heads, head_dim = x.shape
    if n_rep == 1:
        return x
    return (
        x.unsqueeze(3)  # (B, T, Hkv, D) -> (B, T, Hkv, 1, D)
        .expand(bs, slen, n_kv_heads, n_rep, head_dim)  # -> (B, T, Hkv, n_rep, D)  (a view, no copy yet)
        .reshape(bs, slen, n_kv_heads * n_rep, head_dim)  # -> (B, T, Hkv·n_rep, D)
    )


# =============================================================================== 5.1.3.2
# precompute_freqs_cis (the cos/sin tables) lives in minillm/nn/positional.py, shared with
# DeepSeek's rotary key; imported above and re-exported here under the book's name.


def reshape_for_broadcast(freqs_cis: Tensor, x: Tensor) -> Tensor:
    """(T, D/2) -> (1, T, 1, D/2), to broadcast against x (B, T, H, D/2)."""
    ndim = x.ndim
    assert freqs_cis.shape == (x.shape[1], x.shape[-1]), (freqs_cis.shape, x.shape)
    shape = [d if i == 1 or i == ndim - 1 else 1 for i, d in enumerate(x.shape)]
    return freqs_cis.view(*shape)


def apply_rotary_emb(xq: Tensor, xk: Tensor, freqs_cos, freqs_sin):
    """5.1.3.2 apply_rotary_emb, the book's step-by-step version (primitive ops).

    Rotates *adjacent pairs* (dims 2i, 2i+1) of every head, the book's convention:
        out_2i   = x_2i · cos − x_2i+1 · sin
        out_2i+1 = x_2i · sin + x_2i+1 · cos
    xq: (B, T, H, D), xk: (B, T, Hkv, D); freqs_cos/sin: (T, D/2), or (B, T, D/2) when each
    row has its own positions (left-padded batches). Hugging Face rotates halves
    (i, i + D/2) instead; ``minillm.io.export_hf`` converts. ``F.rotary_embedding``
    computes the same in one fused node.
    """
    freqs_cos = freqs_cos if isinstance(freqs_cos, Tensor) else Tensor(freqs_cos)
    freqs_sin = freqs_sin if isinstance(freqs_sin, Tensor) else Tensor(freqs_sin)

    def rotate(x):
        pairs = x.reshape(*x.shape[:-1], -1, 2)  # (B, T, H, D) -> (B, T, H, D/2, 2)
        x_r, x_i = pairs[..., 0], pairs[..., 1]  # (B, T, H, D/2) each: even dims, odd dims
        if freqs_cos.ndim == 2:
            c, s = reshape_for_broadcast(freqs_cos, x_r), reshape_for_broadcast(freqs_sin, x_r)  # (1, T, 1, D/2)
        else:
            c, s = freqs_cos.unsqueeze(2), freqs_sin.unsqueeze(2)  # (B, T, D/2) -> (B, T, 1, D/2)
        c, s = c.to(x.dtype), s.to(x.dtype)
        out_r = x_r * c - x_i * s  # (B, T, H, D/2)
        out_i = x_r * s + x_i * c  # (B, T, H, D/2)
        return stack([out_r, out_i], dim=-1).flatten(3)  # (B, T, H, D/2, 2) -> (B, T, H, D)

    return rotate(xq), rotate(xk)


# ------------------------------------------------------------------------------ KV cache
# =============================================================================== 5.1.3.3
class Attention(nn.Module):
    """5.1.3.3 组装 LLaMA2 Attention: grouped-query causal self-attention with RoPE.

    x (B, T, dim) -> wq, wk, wv -> heads -> RoPE on q, k -> attention over the causal past
    (+ the KV cache) -> merge heads -> wo -> (B, T, dim).
    """

    def __init__(self, args: ModelConfig):
        super().__init__()
        self.n_kv_heads = args.n_heads if args.n_kv_heads is None else args.n_kv_heads
        assert args.n_heads % self.n_kv_heads == 0
        self.n_local_heads = args.n_heads  # (the book keeps Meta's model-parallel names; parallel size 1)
        self.n_local_kv_heads = self.n_kv_heads
        self.n_rep = self.n_local_heads // self.n_local_kv_heads  # query heads per K/V head
        self.head_dim = args.dim // args.n_heads
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)
        self.resid_dropout = nn.Dropout(args.dropout)
        self.dropout = args.dropout
        self.flash = args.flash_attn

    def forward(self, x: Tensor, freqs_cos, freqs_sin, mask=None, kv_cache: KVCache | None = None) -> Tensor:
        """x: (B, T, dim); freqs_cos/sin: (T, D/2) or (B, T, D/2) for these T positions;
        mask: None or bool (B, 1, 1, P+T), True = real token (P = cached positions)."""
        bsz, seqlen, _ = x.shape
        xq, xk, xv = self.wq(x), self.wk(x), self.wv(x)  # (B, T, dim) -> (B, T, H·D), (B, T, Hkv·D) ×2
        xq = xq.view(bsz, seqlen, self.n_local_heads, self.head_dim)  # (B, T, H·D) -> (B, T, H, D)
        xk = xk.view(bsz, seqlen, self.n_local_kv_heads, self.head_dim)  # -> (B, T, Hkv, D)
        xv = xv.view(bsz, seqlen, self.n_local_kv_heads, self.head_dim)  # -> (B, T, Hkv, D)
        cos = freqs_cos.data if isinstance(freqs_cos, Tensor) else np.asarray(freqs_cos)
        sin = freqs_sin.data if isinstance(freqs_sin, Tensor) else np.asarray(freqs_sin)
        dropout_p = self.dropout if self.training else 0.0

        if self.flash:
            xq = _rotary(xq, cos, sin).transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)
            xk = _rotary(xk, cos, sin).transpose(1, 2)  # (B, T, Hkv, D) -> (B, Hkv, T, D)
            xv = xv.transpose(1, 2)  # (B, T, Hkv, D) -> (B, Hkv, T, D)
            if kv_cache is not None:
                xk, xv = kv_cache.update(xk, xv)  # -> (B, Hkv, P+T, D)
            # Causal is aligned bottom-right: new query i sees cached keys and new keys <= i.
            output = F.scaled_dot_product_attention(
                xq, xk, xv, attn_mask=mask, dropout_p=dropout_p, is_causal=True, enable_gqa=True
            )  # (B, H, T, D)
        else:
            output = self._manual_attention(xq, xk, xv, cos, sin, mask, kv_cache, dropout_p)  # (B, H, T, D)

        output = output.transpose(1, 2).reshape(bsz, seqlen, -1)  # (B, H, T, D) -> (B, T, H, D) -> (B, T, H·D)
        output = self.wo(output)  # (B, T, H·D) -> (B, T, dim)
        return self.resid_dropout(output)

    def _manual_attention(self, xq, xk, xv, cos, sin, mask, kv_cache, dropout_p):
        """The book's step-by-step attention: explicit RoPE, the KV cache, ``repeat_kv``, then
        softmax(q·kᵀ/√d + causal and padding masks)·v, written out once for every model in
        ``F.manual_attention`` (``minillm/ops/attention.py``)."""
        xq, xk = apply_rotary_emb(xq, xk, cos, sin)  # shapes unchanged
        if kv_cache is not None:
            k_all, v_all = kv_cache.update(xk.transpose(1, 2), xv.transpose(1, 2))  # (B, Hkv, P+T, D)
            xk, xv = k_all.transpose(1, 2), v_all.transpose(1, 2)  # -> (B, P+T, Hkv, D)
        xk = repeat_kv(xk, self.n_rep)  # (B, P+T, Hkv, D) -> (B, P+T, H, D)
        xv = repeat_kv(xv, self.n_rep)
        xq, xk, xv = xq.transpose(1, 2), xk.transpose(1, 2), xv.transpose(1, 2)  # heads first: (B, H, T|P+T, D)
        # is_causal aligns the last query with the last key: new query i (absolute position
        # P+i) sees the P cached keys and the new keys up to itself.
        return F.manual_attention(xq, xk, xv, attn_mask=mask, dropout_p=dropout_p, is_causal=True)  # (B, H, T, D)


# =============================================================================== 5.1.4
def _mlp_hidden_dim(dim, hidden_dim, multiple_of):
    if hidden_dim is None:
        hidden_dim = 4 * dim
        hidden_dim = int(2 * hidden_dim / 3)  # SwiGLU has 3 matrices: keep the parameter count of a 4·dim MLP
        hidden_dim = multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of)  # round up to a multiple
    return hidden_dim


class MLP(nn.Module):
    """5.1.4 构建 LLaMA2 MLP 模块: the SwiGLU feed-forward network,
    MLP(x) = w2( silu(w1 x) · w3 x ).

    ``hidden_dim=None`` -> int(8·dim/3) rounded up to a multiple of ``multiple_of``
    (768 -> 2048). ``F.swiglu(a, b)`` computes silu(a)·b as one fused node.
    """

    def __init__(self, dim: int, hidden_dim: int | None, multiple_of: int, dropout: float):
        super().__init__()
        hidden_dim = _mlp_hidden_dim(dim, hidden_dim, multiple_of)
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)  # gate projection
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)  # down projection (writes into the residual stream)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)  # up projection
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = F.swiglu(self.w1(x), self.w3(x))  # (B, T, dim) -> (B, T, hidden): silu(w1 x) · w3 x
        return self.dropout(self.w2(h))  # (B, T, hidden) -> (B, T, dim)


# =============================================================================== 5.1.5
class DecoderLayer(nn.Module):
    """5.1.5 LLaMA2 Decoder Layer: two pre-norm residual branches,

        h   = x + Attention(attention_norm(x))
        out = h + MLP(ffn_norm(h))
    """

    def __init__(self, layer_id: int, args: ModelConfig):
        super().__init__()
        self.n_heads = args.n_heads
        self.dim = args.dim
        self.head_dim = args.dim // args.n_heads
        self.attention = Attention(args)
        self.feed_forward = MLP(dim=args.dim, hidden_dim=args.hidden_dim, multiple_of=args.multiple_of, dropout=args.dropout)
        self.layer_id = layer_id
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x, freqs_cos, freqs_sin, mask=None, kv_cache: KVCache | None = None):
        h = x + self.attention(self.attention_norm(x), freqs_cos, freqs_sin, mask, kv_cache)  # (B, T, dim)
        return h + self.feed_forward(self.ffn_norm(h))  # (B, T, dim)


# =============================================================================== 5.1.6
@dataclass
class CausalLMOutput:
    """What ``Transformer.forward`` returns: ``logits`` (B, T, vocab) and ``loss`` (a scalar
    Tensor, or None without targets)."""

    logits: Tensor
    loss: Tensor | None = None

    def __getitem__(self, key):  # out["logits"], as with the book's CausalLMOutputWithPast
        return getattr(self, key)


class Transformer(nn.Module):
    """5.1.6 构建 LLaMA2 模型: token embeddings -> n_layers × DecoderLayer -> RMSNorm -> output head.

    >>> model = Transformer(ModelConfig.preset("tiny", vocab_size=256))
    >>> out = model(input_ids, targets=labels)      # input_ids, labels: (B, T) int64
    >>> out.logits.shape, out.loss                   # (B, T, 256), mean cross-entropy
    """

    # Tells minillm.generation that the fused one-kernel-call decode step computes this
    # model (it still checks the first token against the modules before trusting it).
    fused_decode_layout = "llama2"

    def __init__(self, args: ModelConfig | None = None):
        super().__init__()
        args = ModelConfig() if args is None else args
        if not isinstance(args, ModelConfig):
            raise TypeError(f"Transformer: expected a ModelConfig, got {type(args).__name__}")
        self.args = args
        self.vocab_size = args.vocab_size
        self.n_layers = args.n_layers
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.dropout = nn.Dropout(args.dropout)
        self.layers = nn.ModuleList([DecoderLayer(layer_id, args) for layer_id in range(args.n_layers)])
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_word_embeddings:
            # One matrix for both: row i embeds token i and scores token i at the output.
            # named_parameters() lists it once, as "tok_embeddings.weight".
            self.tok_embeddings.weight = self.output.weight

        freqs_cos, freqs_sin = precompute_freqs_cis(args.dim // args.n_heads, args.max_seq_len, args.rope_theta)
        self.register_buffer("freqs_cos", freqs_cos, persistent=False)  # (max_seq_len, head_dim/2)
        self.register_buffer("freqs_sin", freqs_sin, persistent=False)

        # Gradient checkpointing (6.1, the book's TrainingArguments(gradient_checkpointing=True)):
        # off by default; gradient_checkpointing_enable() recomputes each layer in backward.
        self.gradient_checkpointing = False
        self.apply(self._init_weights)
        # Scaled init of the residual projections (GPT-2 / llama2.c): every layer adds the
        # outputs of wo (attention) and w2 (MLP) to the residual stream, 2·n_layers additions
        # in all, so their std is 0.02/√(2·n_layers) to keep the stream's variance in check.
        # (The book's code scales w3 instead of w2; w3 feeds the gate, not the residual.)
        for pn, p in self.named_parameters():
            if pn.endswith("wo.weight") or pn.endswith("w2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * args.n_layers))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ---------------------------------------------------------------- helpers
    def gradient_checkpointing_enable(self) -> None:
        """Keep only each decoder layer's input in training; recompute the layer in backward
        (``minillm.utils.checkpoint``): far less activation memory, ~1 extra forward pass."""
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        """One empty ``KVCache`` per layer, sized for ``max_len`` (default max_seq_len) positions."""
        a = self.args
        max_len = a.max_seq_len if max_len is None else max_len
        dtype = self.output.weight.dtype
        return [KVCache(batch_size, a.n_kv_heads, a.head_dim, max_len, dtype) for _ in range(a.n_layers)]

    def _check_input_ids(self, input_ids, start: int) -> np.ndarray:
        ids, _ = check_model_inputs(input_ids, self.vocab_size, "Transformer")  # (B, T) int64
        if start + ids.shape[1] > self.args.max_seq_len:
            raise ValueError(
                f"Transformer: sequence of {ids.shape[1]} tokens"
                + (f" after {start} cached ones" if start else "")
                + f" is longer than max_seq_len={self.args.max_seq_len}"
            )
        return ids

    def _check_inputs_embeds(self, inputs_embeds, start: int) -> Tensor:
        if not isinstance(inputs_embeds, Tensor):
            raise TypeError(f"Transformer: inputs_embeds must be a Tensor, got {type(inputs_embeds).__name__}")
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[2] != self.args.dim or inputs_embeds.shape[1] == 0:
            raise ValueError(f"Transformer: inputs_embeds must have shape (batch, seq_len >= 1, dim={self.args.dim}), "
                             f"got {inputs_embeds.shape}")
        if start + inputs_embeds.shape[1] > self.args.max_seq_len:
            raise ValueError(f"Transformer: {inputs_embeds.shape[1]} positions after {start} cached ones are longer "
                             f"than max_seq_len={self.args.max_seq_len}")
        return inputs_embeds

    def _rope_tables(self, B, T, start, position_ids):
        cos, sin = self.freqs_cos.data, self.freqs_sin.data  # (max_seq_len, D/2)
        if position_ids is None:
            return cos[start : start + T], sin[start : start + T]  # (T, D/2)
        pos = position_ids.data if isinstance(position_ids, Tensor) else np.asarray(position_ids)
        if pos.shape != (B, T) or pos.dtype.kind not in "iu":
            raise ValueError(f"Transformer: position_ids must be integers of shape {(B, T)}, got {pos.dtype} {pos.shape}")
        if pos.size and (pos.min() < 0 or pos.max() >= self.args.max_seq_len):
            raise IndexError(f"Transformer: position_ids must be in [0, {self.args.max_seq_len}), got {pos.min()}..{pos.max()}")
        return cos[pos], sin[pos]  # (B, T, D/2): each row its own positions

    @staticmethod
    def _padding_mask(attention_mask, B, total):
        if attention_mask is None:
            return None
        m = attention_mask.data if isinstance(attention_mask, Tensor) else np.asarray(attention_mask)
        if m.shape != (B, total):
            raise ValueError(
                f"Transformer: attention_mask must have shape (batch, cached + new tokens) = {(B, total)}, got {m.shape}"
            )
        m = m.astype(bool)
        if m.all():
            return None  # nothing to mask: keep the fast path
        return m[:, None, None, :]  # (B, P+T) -> (B, 1, 1, P+T), True = may attend

    # ---------------------------------------------------------------- forward
    def forward(self, input_ids=None, targets=None, attention_mask=None, position_ids=None, kv_cache=None,
                logits_to_keep: int = 0, inputs_embeds=None):
        """input_ids: (B, T) int token ids in [0, vocab_size).

        targets: (B, T) int (the next tokens; -100 = ignore) -> ``loss`` = mean cross-entropy.
        attention_mask: (B, P+T) of 1 (real token) / 0 (padding), P = tokens in ``kv_cache``.
        position_ids: (B, T) RoPE positions (default P, P+1, ...).
        kv_cache: a list of ``KVCache`` from ``new_kv_cache`` (inference, under ``mi.no_grad()``).
        logits_to_keep: if > 0, only the last that many positions get logits (generation).
        inputs_embeds: (B, T, dim) vectors to use instead of ``tok_embeddings(input_ids)``
            (Hugging Face's name; prompt tuning prepends trained vectors this way). Give
            either ``input_ids`` or ``inputs_embeds``.
        Returns ``CausalLMOutput(logits (B, T|logits_to_keep, vocab), loss)``.
        """
        if not isinstance(logits_to_keep, (int, np.integer)) or isinstance(logits_to_keep, bool) or logits_to_keep < 0:
            raise ValueError(f"Transformer: logits_to_keep must be an int >= 0 (0 = every position), got {logits_to_keep!r}")
        h = self.hidden_states(input_ids, attention_mask, position_ids, kv_cache, inputs_embeds=inputs_embeds)  # (B, T, dim)
        if logits_to_keep:
            if targets is not None:
                raise ValueError("Transformer: logits_to_keep cannot be combined with targets")
            h = h[:, -logits_to_keep:]  # (B, T, dim) -> (B, k, dim)
        logits = self.output(h)  # (B, T, dim) -> (B, T, vocab)
        loss = None if targets is None else lm_loss(logits, targets, tuple(h.shape[:2]), "Transformer")  # mean over labels != -100
        return CausalLMOutput(logits=logits, loss=loss)

    def hidden_states(self, input_ids=None, attention_mask=None, position_ids=None, kv_cache=None,
                      inputs_embeds=None) -> Tensor:
        """The backbone without the LM head: the final-norm hidden state of every position,
        (B, T, dim). ``forward`` puts ``output`` on top of it; a reward model or a PPO value
        head (``minillm.align``) puts a scalar head there instead (Hugging Face's
        ``model.model(...).last_hidden_state``). Arguments as in ``forward``."""
        start = 0
        if kv_cache is not None:
            if len(kv_cache) != self.n_layers:
                raise ValueError(f"Transformer: kv_cache has {len(kv_cache)} layers, the model has {self.n_layers}")
            start = kv_cache[0].length
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Transformer: give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            ids = self._check_input_ids(input_ids, start)
            h = self.tok_embeddings(ids)  # (B, T) -> (B, T, dim)
        else:
            h = self._check_inputs_embeds(inputs_embeds, start)  # (B, T, dim)
            ids = np.zeros(h.shape[:2], dtype=np.int64)  # only its shape is used below
        _bsz, seqlen = ids.shape
        h = self.dropout(h)
        freqs_cos, freqs_sin = self._rope_tables(_bsz, seqlen, start, position_ids)  # (T, D/2) or (B, T, D/2)
        mask = self._padding_mask(attention_mask, _bsz, start + seqlen)  # None or (B, 1, 1, P+T)
        recompute = self.gradient_checkpointing and self.training and kv_cache is None and is_grad_enabled()
        for i, layer in enumerate(self.layers):
            if recompute:  # keep h only; the layer's activations are rebuilt in backward
                h = checkpoint(layer, h, freqs_cos, freqs_sin, mask)  # (B, T, dim)
            else:
                h = layer(h, freqs_cos, freqs_sin, mask, None if kv_cache is None else kv_cache[i])  # (B, T, dim)
        return self.norm(h)  # (B, T, dim)

    def generate(self, idx, stop_id=None, max_new_tokens: int = 256, temperature: float = 1.0, top_k=None, **kwargs):
        """The book's ``model.generate(idx, stop_id, max_new_tokens, temperature, top_k)``, with a
        KV cache (and top_p, batching, ... as keyword arguments); see ``minillm.generation.generate``.
        ``stop_id`` is the book's name for ``eos_token_id``. Returns the new token ids as lists."""
        from ..generation import generate

        return generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k, eos_token_id=stop_id, **kwargs)

    def extra_repr(self):
        return f"params={self.num_parameters():,}"
