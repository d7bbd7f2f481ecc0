"""GPT-2, the decoder-only model of Happy LLM 3.3.1 ("Decoder-Only PLM: GPT").

    3.3.1   GPTConfig            hyper-parameters (GPT-2 small's by default)
            CausalSelfAttention  fused q/k/v projection ``c_attn`` -> causal attention -> ``c_proj``
            Block                pre-LN: x + attn(ln_1(x)), then + mlp(ln_2(x))
            GPT                  wte + wpe -> n_layer Blocks -> ln_f -> lm_head (tied to wte)

What makes it GPT-2 (and not the 2017 decoder or LLaMA):

* learned absolute positions (``wpe``, ``nn.LearnedPositionalEmbedding``), added to the token
  embeddings -- no RoPE;
* pre-LN blocks with a final ``ln_f``; LayerNorm with mean and bias (LLaMA: RMSNorm);
* a 4·dim MLP with the tanh approximation of GELU (``nn.FeedForward(activation="gelu_tanh")``;
  LLaMA: SwiGLU), biases everywhere;
* the LM head shares its matrix with ``wte``;
* init N(0, 0.02), and the two projections that write into the residual stream
  (``attn.c_proj``, ``mlp.w2``) get std 0.02/√(2·n_layer) (GPT-2 paper §2.3).

Parameter names are Hugging Face ``GPT2LMHeadModel``'s (``transformer.wte``, ``transformer.h.{i}.ln_1``,
``transformer.h.{i}.attn.c_attn``, ``...attn.c_proj``, ``transformer.ln_f``, ``lm_head``), except
in the two shared blocks reused from ``minillm.nn``: ``transformer.wpe.embedding.weight``
(HF: ``transformer.wpe.weight``) and ``mlp.w1``/``mlp.w2`` (HF: ``mlp.c_fc``/``mlp.c_proj``).
Our layers are ``nn.Linear`` (weight (out, in)); HF's GPT-2 uses ``Conv1D`` (weight (in, out)),
so ``minillm.io.hf_gpt2`` renames and transposes on export/import; the model never does.

The call contract is ``models/llama.py``'s ``Transformer``'s, so ``minillm.generation.generate``
and the ``Trainer`` use GPT unchanged::

    out = model(input_ids, targets=None, attention_mask=None, position_ids=None, kv_cache=None, logits_to_keep=0)
    out.logits (B, T, vocab), out.loss;  model.new_kv_cache(batch, max_len);  model.args.max_seq_len / vocab_size
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import nn
from .._checks import check_model_inputs
from ..nn import functional as F
from ..nn.heads import lm_loss
from ..nn.attention import merge_masks
from ..nn.kv_cache import KVCache
from ..tensor import Tensor
from .llama import CausalLMOutput
from .config import ConfigMixin

__all__ = ["GPTConfig", "CausalSelfAttention", "Block", "GPT", "PRESETS"]

PRESETS = {
    # ~0.9M parameters in the blocks: trains on the world corpus in minutes on a laptop CPU.
    "tiny": dict(n_embd=128, n_layer=4, n_head=4, max_seq_len=256),
    # GPT-2 small (124M with its 50257-token vocabulary).
    "gpt2": dict(),
}


@dataclass
class GPTConfig(ConfigMixin):
    """GPT-2's hyper-parameters (defaults: GPT-2 small). Invalid values raise ``ValueError``
    naming the field. ``max_seq_len`` is HF's ``n_positions`` (the size of ``wpe``)."""

    PRESETS: ClassVar[dict] = PRESETS  # the named sizes at the top of this file

    vocab_size: int = 50257
    max_seq_len: int = 1024  # positions in the learned table (HF: n_positions)
    n_embd: int = 768  # model width
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None = 4·n_embd
    dropout: float = 0.0  # embeddings, attention probabilities, residual branches (HF: embd/attn/resid_pdrop)
    layer_norm_epsilon: float = 1e-5
    flash_attn: bool = True  # fused attention kernel (True) or the step-by-step softmax (False)

    def __post_init__(self):
        for name in ("vocab_size", "max_seq_len", "n_embd", "n_layer", "n_head"):
            _positive_int(self, name)
        if self.n_inner is not None:
            _positive_int(self, "n_inner")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not (isinstance(self.layer_norm_epsilon, (int, float)) and self.layer_norm_epsilon > 0):
            raise ValueError(f"GPTConfig.layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}")
        if not isinstance(self.flash_attn, bool):
            raise ValueError(f"GPTConfig.flash_attn must be True or False, got {self.flash_attn!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def hidden_dim(self) -> int:
        return 4 * self.n_embd if self.n_inner is None else self.n_inner





def _positive_int(cfg, name):
    v = getattr(cfg, name)
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"GPTConfig.{name} must be a positive int, got {v!r}")


class CausalSelfAttention(nn.Module):
    """Masked multi-head self-attention with GPT-2's fused projection.

    ``c_attn`` (n_embd -> 3·n_embd) computes q, k and v in one matmul; ``c_proj`` merges the
    heads. The attention itself is ``F.scaled_dot_product_attention(is_causal=True)`` (or the
    step-by-step ``F.manual_attention``), with the shared ``nn.KVCache`` for decoding.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_embd, self.head_dim = config.n_head, config.n_embd, config.head_dim
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=True)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=True)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        self.flash = config.flash_attn

    def forward(self, x: Tensor, mask=None, kv_cache: KVCache | None = None) -> Tensor:
        """x: (B, T, C); mask: None or additive float (B, 1, 1, P+T) (-inf on padding keys)."""
        B, T, C = x.shape
        qkv = self.c_attn(x)  # (B, T, C) -> (B, T, 3C)
        qkv = qkv.view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # -> (3, B, H, T, D)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, T, D) each
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # -> (B, H, P+T, D)
        p = self.dropout if self.training else 0.0
        attend = F.scaled_dot_product_attention if self.flash else F.manual_attention
        y = attend(q, k, v, mask, p, True)  # causal, aligned bottom-right -> (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, H, T, D) -> (B, T, H, D) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


class Block(nn.Module):
    """GPT-2's pre-LN block: h = x + attn(ln_1(x)); out = h + mlp(ln_2(h))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = nn.FeedForward(config.n_embd, config.hidden_dim, dropout=config.dropout, activation="gelu_tanh", bias=True)

    def forward(self, x: Tensor, mask=None, kv_cache: KVCache | None = None) -> Tensor:
        h = x + self.attn(self.ln_1(x), mask, kv_cache)  # (B, T, C)
        return h + self.mlp(self.ln_2(h))  # (B, T, C)


class GPT(nn.Module):
    """GPT-2: ``transformer.wte`` + ``transformer.wpe`` -> ``transformer.h`` -> ``transformer.ln_f`` -> ``lm_head``.

    >>> model = GPT(GPTConfig.preset("tiny", vocab_size=512))
    >>> out = model(input_ids, targets=labels)   # (B, T) int64 each -> logits (B, T, 512), loss
    """

    def __init__(self, config: GPTConfig | None = None):
        super().__init__()
        config = GPTConfig() if config is None else config
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT: expected a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.LearnedPositionalEmbedding(config.max_seq_len, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied: state_dict lists it once, as transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2 §2.3: each block adds two branches to the residual stream, so the projections
        # that write into it start 1/√(2·n_layer) smaller, keeping the stream's variance ~ constant.
        for name, p in self.named_parameters():
            if name.endswith("attn.c_proj.weight") or name.endswith("mlp.w2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def args(self) -> GPTConfig:
        """The config under LLaMA's attribute name (``generation`` reads ``model.args.max_seq_len``)."""
        return self.config

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        """One empty ``KVCache`` per block, for ``max_len`` (default max_seq_len) positions."""
        c = self.config
        max_len = c.max_seq_len if max_len is None else int(max_len)
        return [KVCache(batch_size, c.n_head, c.head_dim, max_len, self.lm_head.weight.dtype) for _ in range(c.n_layer)]

    def _check_input_ids(self, input_ids, start: int) -> np.ndarray:
        ids, _ = check_model_inputs(input_ids, self.config.vocab_size, "GPT")  # (B, T) int64
        if start + ids.shape[1] > self.config.max_seq_len:
            raise ValueError(f"GPT: {ids.shape[1]} tokens" + (f" after {start} cached ones" if start else "")
                             + f" exceed max_seq_len={self.config.max_seq_len} (the learned position table)")
        return ids

    def forward(self, input_ids, targets=None, attention_mask=None, position_ids=None, kv_cache=None, logits_to_keep: int = 0):
        """input_ids: (B, T) ids in [0, vocab_size).

        targets: (B, T) next-token ids (-100 = ignore) -> ``loss``, the mean cross-entropy.
        attention_mask: (B, P+T) 1 = real token, 0 = padding (P = positions in ``kv_cache``).
        position_ids: (B, T) rows into ``wpe`` (default P, P+1, ...; left-padded rows pass
            positions counted from their first real token, as ``generation`` does).
        kv_cache: list of ``KVCache`` from ``new_kv_cache`` (inference under ``mi.no_grad()``).
        logits_to_keep: if > 0, logits for the last that many positions only.
        Returns ``CausalLMOutput(logits (B, T, vocab), loss)``.
        """
        start = 0
        if kv_cache is not None:
            if len(kv_cache) != self.config.n_layer:
                raise ValueError(f"GPT: kv_cache has {len(kv_cache)} layers, the model has {self.config.n_layer}")
            start = kv_cache[0].length
        ids = self._check_input_ids(input_ids, start)
        B, T = ids.shape
        mask = None
        if attention_mask is not None:
            m = attention_mask.data if isinstance(attention_mask, Tensor) else np.asarray(attention_mask)
            if m.shape != (B, start + T):
                raise ValueError(f"GPT: attention_mask must have shape (batch, cached + new tokens) = {(B, start + T)}, got {m.shape}")
            if not m.astype(bool).all():
                mask = merge_masks(~m.astype(bool), None, B, T, start + T, self.lm_head.weight.dtype, "GPT")  # (B, 1, 1, P+T)
        tr = self.transformer
        x = tr.wte(ids)  # (B, T) -> (B, T, C)
        x = tr.wpe(x, start, position_ids)  # + learned positions
        x = tr.drop(x)
        for i, block in enumerate(tr.h):
            x = block(x, mask, None if kv_cache is None else kv_cache[i])  # (B, T, C)
        x = tr.ln_f(x)
        if logits_to_keep:
            if targets is not None:
                raise ValueError("GPT: logits_to_keep cannot be combined with targets")
            x = x[:, -logits_to_keep:]  # (B, T, C) -> (B, k, C)
        logits = self.lm_head(x)  # (B, T, C) -> (B, T, vocab)
        loss = None if targets is None else lm_loss(logits, targets, ids.shape, "GPT")  # mean over labels != -100
        return CausalLMOutput(logits=logits, loss=loss)

    def extra_repr(self):
        return f"params={self.num_parameters():,}"
