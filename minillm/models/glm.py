"""GLM, the General Language Model of Happy LLM 3.3.3 (Du et al. 2022, "GLM: General Language
Model Pretraining with Autoregressive Blank Infilling"), the architecture of ChatGLM-6B's first
generation.

    3.3.3 (1)  GLMConfig                hyper-parameters
               GLMBlock                 post-norm (ChatGLM-6B's block): every LayerNorm normalises a residual sum, GeLU MLP
               GLM                      word embeddings + 2-D positions -> blocks -> final LayerNorm -> one linear output layer
    3.3.3 (2)  glm_attention_mask       Part A bidirectional, Part B causal (and sees all of Part A)
               rotary_2d                the 2-D positions as ChatGLM-6B's 2-D RoPE (default; or learned tables)
               infill                   fill each [MASK] autoregressively after [START] (KV cache)
               (data)                   span sampling and the Part A / Part B layout:
                                        ``minillm/data/glm_tasks.py``

What makes it GLM (and not GPT, ``models/gpt.py``):

* **post-norm** blocks (the book's first difference): the LayerNorm comes *after* the residual
  addition, ``LN(x + f(x))``, as in the 2017 Transformer and BERT; GPT-2 and LLaMA normalise the
  branch input instead and keep the raw sum as the residual stream (pre-norm). We write the block
  as ChatGLM-6B does (GLM-130B's DeepNorm form)::

      h  = input_layernorm(x);             x' = α·h  + attention(h)
      h' = post_attention_layernorm(x');   out = α·h' + mlp(h')          α = √(2·num_layers)

  Read across blocks this is post-norm: block l+1's ``input_layernorm`` normalises block l's
  sum, and the residual carried on is the *normalised* h, never the raw sum; ``final_layernorm``
  normalises the last block's sum. Two details matter for training (measured, see
  docs/chapter3.md): the first ``input_layernorm`` normalises the embeddings before any residual
  is taken (BERT's embedding LayerNorm does the same job), and α weighs the residual above the
  branch. Without them (``LN(x + f(x))`` straight on N(0, 0.02) embeddings) blank infilling
  collapsed to one output for every position: a branch output shared by all tokens outgrew the
  tiny embeddings, and each LayerNorm shrank what was left of the tokens (≈5x per layer);
* a **single linear output layer** (tied to the word embeddings) predicts the tokens, where
  BERT's MLM head has a dense + GeLU + LayerNorm MLP before its output matrix;
* **GeLU** in the MLP (``nn.FeedForward(activation="gelu")``, the exact erf form);
* **2-D positions**: every token carries two positions, its place in the corrupted text (all
  tokens of a span share their [MASK]'s place) and its place inside a span (0 in Part A, 1..k+1
  in Part B), so the model knows where a span goes but not how long it is. By default they are
  ChatGLM-6B's **2-D RoPE** (``rotary_2d``: half of each query/key head rotated by one position,
  half by the other); ``GLMConfig(position_encoding="learned")`` gives the GLM paper's two
  learned tables ``position_embeddings`` and ``block_position_embeddings`` added to the word
  embeddings. Measured (docs/chapter3.md): with learned tables our tiny GLM did not learn, in
  3000 steps, to read the token next to its [MASK] (the first span token was right 18 % of the
  time, and no held-out blank was filled); with rotary positions, where "one to the left of my
  [MASK]" is a single pattern for every place, it reached 39 % in 1000 steps and 64 % in 3000;
* **the GLM attention mask**: one sequence holds Part A (the text with [MASK]s), attended
  bidirectionally, and Part B (the spans), where each token sees all of Part A and the Part B
  tokens before it. One model is thus an encoder for Part A and a decoder for Part B.

Everything else is a shared block from ``minillm.nn``: ``MultiHeadAttention`` (with its
(B, Tq, Tk) boolean ``attn_mask``, True = may not attend, and ``KVCache``),
``positional.apply_rope`` (or ``LearnedPositionalEmbedding`` with ``position_ids``), ``FeedForward``,
``LayerNorm`` and the loss ``heads.lm_loss``. Parameter names follow THUDM's GLM code where it has the piece
(``word_embeddings``, ``transformer.position_embeddings``, ``transformer.block_position_embeddings``,
``transformer.layers.{i}.input_layernorm``, ``...attention``, ``...post_attention_layernorm``, ``...mlp``,
``transformer.final_layernorm``).

    out = model(input_ids, position_ids=pos, sep=sep, targets=labels)   # pos (B, 2, T), sep (B,)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from .. import nn
from .._checks import check_model_inputs
from ..autograd import no_grad
from ..generation.sampling import left_pad, sample_next_token
from ..nn.heads import lm_loss
from ..nn.kv_cache import KVCache
from ..nn.positional import apply_rope
from ..ops import cat
from ..tensor import Tensor
from .config import ConfigMixin
from .llama import CausalLMOutput

__all__ = ["GLMConfig", "GLMBlock", "GLM", "glm_attention_mask", "rotary_2d", "infill", "PRESETS"]

PRESETS = {
    # the same width/depth as GPTConfig's "tiny": the example compares the two at equal size
    "tiny": dict(hidden_size=128, num_layers=4, num_attention_heads=4, max_seq_len=256),
    # GLM-Large (the paper's 335M model, BERT-Large's shape)
    "large": dict(hidden_size=1024, num_layers=24, num_attention_heads=16, max_seq_len=512),
}


@dataclass
class GLMConfig(ConfigMixin):
    """GLM's hyper-parameters. Invalid values raise ``ValueError`` naming the field.

    ``max_seq_len`` bounds both positions (GLM's ``max_sequence_length``): a position in the
    corrupted text and a position inside a span are each < max_seq_len.

    ``position_encoding`` says how the 2-D positions enter the model: ``"rotary"`` (default,
    ChatGLM-6B's 2-D RoPE: the first half of every query/key head is rotated by the position in
    the corrupted text, the second half by the position inside the span; ``rope_theta`` its
    base) or ``"learned"`` (the GLM paper's two learned tables added to the word embeddings).
    Rotary learns blank infilling several times faster at our size (docs/chapter3.md 3.3.3).
    """

    PRESETS: ClassVar[dict] = PRESETS

    vocab_size: int = 50304
    max_seq_len: int = 512
    hidden_size: int = 1024
    num_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int | None = None  # MLP width; None = 4·hidden_size
    dropout: float = 0.0  # embeddings, attention probabilities, residual branches
    layernorm_epsilon: float = 1e-5
    flash_attn: bool = True  # fused attention (True) or the step-by-step softmax (False)
    position_encoding: str = "rotary"  # "rotary" (ChatGLM-6B's 2-D RoPE) or "learned" (GLM paper's tables)
    rope_theta: float = 10000.0

    def __post_init__(self):
        for name in ("vocab_size", "max_seq_len", "hidden_size", "num_layers", "num_attention_heads"):
            _positive_int(self, name)
        if self.intermediate_size is not None:
            _positive_int(self, "intermediate_size")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"GLMConfig.hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_attention_heads ({self.num_attention_heads})")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"GLMConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not (isinstance(self.layernorm_epsilon, (int, float)) and self.layernorm_epsilon > 0):
            raise ValueError(f"GLMConfig.layernorm_epsilon must be > 0, got {self.layernorm_epsilon!r}")
        if not isinstance(self.flash_attn, bool):
            raise ValueError(f"GLMConfig.flash_attn must be True or False, got {self.flash_attn!r}")
        if self.position_encoding not in ("rotary", "learned"):
            raise ValueError(f"GLMConfig.position_encoding must be 'rotary' or 'learned', got {self.position_encoding!r}")
        if self.position_encoding == "rotary" and self.head_dim % 4:
            raise ValueError(f"GLMConfig: 2-D rotary positions split each head in two halves of rotated pairs, so "
                             f"head_dim = hidden_size / num_attention_heads ({self.head_dim}) must be divisible by 4")
        if not (isinstance(self.rope_theta, (int, float)) and self.rope_theta > 0):
            raise ValueError(f"GLMConfig.rope_theta must be > 0, got {self.rope_theta!r}")

    @classmethod
    def from_dict(cls, d: dict):
        """As ``ConfigMixin.from_dict``, except that a config without ``position_encoding`` is read
        as ``"learned"``: files saved before 2-D RoPE became the default used the learned tables,
        and must keep loading."""
        if "position_encoding" not in d:
            d = {**d, "position_encoding": "learned"}
        return super().from_dict(d)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def hidden_dim(self) -> int:
        return 4 * self.hidden_size if self.intermediate_size is None else self.intermediate_size


def _positive_int(cfg, name):
    v = getattr(cfg, name)
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"GLMConfig.{name} must be a positive int, got {v!r}")


def glm_attention_mask(sep, q_len: int, k_len: int | None = None) -> np.ndarray:
    """GLM's self-attention mask, (B, Tq, Tk) bool, **True = may NOT attend** (``nn.MultiHeadAttention``'s
    convention).

    sep: (B,) ints (or one int), the length of Part A in each row. Key j is visible to query i
    iff ``j < sep`` (Part A is seen by everyone, in both directions) or ``j <= i`` (a Part B
    token sees itself and what comes before it). Queries are the last ``q_len`` of ``k_len``
    positions (``k_len`` defaults to ``q_len``), so a decoding step with a KV cache gets its rows.

    >>> (~glm_attention_mask([2], 4)).astype(int)[0]   # 1 = may attend; Part A = first 2 tokens
    array([[1, 1, 0, 0],
           [1, 1, 0, 0],
           [1, 1, 1, 0],
           [1, 1, 1, 1]])
    """
    k_len = q_len if k_len is None else k_len
    sep = np.atleast_1d(np.asarray(sep))
    if sep.ndim != 1 or sep.dtype.kind not in "iu":
        raise ValueError(f"glm_attention_mask: sep must be one int or a (batch,) int array, got {sep.dtype} {sep.shape}")
    if not (0 <= q_len <= k_len):
        raise ValueError(f"glm_attention_mask: need 0 <= q_len <= k_len, got q_len={q_len}, k_len={k_len}")
    if sep.size and (sep.min() < 0 or sep.max() > k_len):
        raise ValueError(f"glm_attention_mask: sep must be in [0, {k_len}] (the sequence length), got {sep.tolist()}")
    i = np.arange(k_len - q_len, k_len)[:, None]  # (Tq, 1) absolute query positions
    j = np.arange(k_len)[None, :]  # (1, Tk)
    visible = (j < sep[:, None, None]) | (j <= i)[None]  # (B, Tq, Tk)
    return ~visible


def rotary_2d(position_ids, head_dim: int, theta: float = 10000.0):
    """ChatGLM-6B's 2-D rotary positions: a function ``(q, k) -> (q, k)`` for
    ``nn.MultiHeadAttention(..., rotary=...)``.

    position_ids: (B, 2, T) ints (row 0 the position in the corrupted text, row 1 inside the
    span). Each (B, H, T, D) query/key head is cut in two halves: the first half is rotated by
    row 0 and the second by row 1, each as RoPE (``nn.positional.apply_rope``, pairs 2i, 2i+1,
    angle t·θ_i with θ_i = theta^(-2i/(D/2))). A score q·k then depends on the two *offsets*
    between query and key, not on where they are: "the token just left of my [MASK]" is one
    pattern for every blank, where learned position tables must learn it for each place.
    """
    pos = np.asarray(position_ids)
    half = head_dim // 2
    inv_freq = 1.0 / theta ** (np.arange(0, half, 2, dtype=np.float64) / half)  # (half/2,)
    angle = pos[..., None].astype(np.float64) * inv_freq  # (B, 2, T, half/2)
    cos, sin = np.cos(angle), np.sin(angle)

    def rotate(x: Tensor) -> Tensor:
        xt = x.transpose(1, 2)  # (B, H, T, D) -> (B, T, H, D), apply_rope's layout
        a = apply_rope(xt[..., :half], cos[:, 0], sin[:, 0])  # (B, T, H, D/2) by the text position
        b = apply_rope(xt[..., half:], cos[:, 1], sin[:, 1])  # (B, T, H, D/2) by the span position
        return cat([a, b], dim=-1).transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)

    return lambda q, k: (rotate(q), rotate(k))


class GLMBlock(nn.Module):
    """GLM's post-norm block, written as ChatGLM-6B's ``GLMBlock``::

        h = input_layernorm(x);  x' = α·h + attention(h);  h' = post_attention_layernorm(x');  out = α·h' + mlp(h')

    with α = √(2·num_layers) (DeepNorm). Each LayerNorm normalises a residual sum (the next
    block's ``input_layernorm`` the sum this one returns), and the residual carried on is the
    normalised h: post-norm. See the module docstring for why the form matters.
    """

    def __init__(self, config: GLMConfig):
        super().__init__()
        c = config
        self.alpha = math.sqrt(2 * c.num_layers)  # weighs the (normalised) residual above the branch
        self.input_layernorm = nn.LayerNorm(c.hidden_size, eps=c.layernorm_epsilon)
        self.attention = nn.MultiHeadAttention(c.hidden_size, c.num_attention_heads, dropout=c.dropout, bias=True,
                                               flash_attn=c.flash_attn)
        self.post_attention_layernorm = nn.LayerNorm(c.hidden_size, eps=c.layernorm_epsilon)
        self.mlp = nn.FeedForward(c.hidden_size, c.hidden_dim, dropout=c.dropout, activation="gelu", bias=True)

    def forward(self, x: Tensor, attn_mask=None, key_padding_mask=None, kv_cache: KVCache | None = None,
                rotary=None) -> Tensor:
        """x: (B, T, C); attn_mask (B, T, P+T) bool, True = may not attend; key_padding_mask (B, P+T);
        rotary: ``rotary_2d(...)`` of this call's positions, or None (learned positions)."""
        h = self.input_layernorm(x)  # normalise the previous block's sum (block 0: the embeddings)
        a = self.attention(h, attn_mask=attn_mask, key_padding_mask=key_padding_mask, kv_cache=kv_cache,
                           rotary=rotary)  # (B, T, C)
        h = self.post_attention_layernorm(h * self.alpha + a)  # normalise right after the residual addition
        return h * self.alpha + self.mlp(h)  # (B, T, C), normalised by the next block (or final_layernorm)


class GLM(nn.Module):
    """GLM: ``word_embeddings`` -> ``transformer.layers`` (post-norm, 2-D rotary positions in the
    attention) -> ``transformer.final_layernorm`` -> logits through the (tied) word-embedding matrix.
    With ``position_encoding="learned"`` the inputs are ``word_embeddings`` +
    ``transformer.position_embeddings`` + ``transformer.block_position_embeddings`` instead.

    >>> model = GLM(GLMConfig.preset("tiny", vocab_size=512))
    >>> out = model(input_ids, position_ids=pos, sep=sep, targets=labels)   # logits (B, T, 512), loss
    """

    def __init__(self, config: GLMConfig | None = None):
        super().__init__()
        config = GLMConfig() if config is None else config
        if not isinstance(config, GLMConfig):
            raise TypeError(f"GLM: expected a GLMConfig, got {type(config).__name__}")
        self.config = c = config
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        tables = {}
        if c.position_encoding == "learned":  # the GLM paper's two tables; rotary has no parameters
            tables = dict(position_embeddings=nn.LearnedPositionalEmbedding(c.max_seq_len, c.hidden_size),
                          block_position_embeddings=nn.LearnedPositionalEmbedding(c.max_seq_len, c.hidden_size))
        self.transformer = nn.ModuleDict(dict(
            **tables,
            embedding_dropout=nn.Dropout(c.dropout),
            layers=nn.ModuleList([GLMBlock(c) for _ in range(c.num_layers)]),
            final_layernorm=nn.LayerNorm(c.hidden_size, eps=c.layernorm_epsilon),  # the last block's sum
        ))
        # The single linear output layer (3.3.3's second difference), sharing the embedding matrix.
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.word_embeddings.weight = self.lm_head.weight  # tied: one Parameter, trained once
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight"):
                continue  # LayerNorm starts at the identity (weight 1, bias 0)
            if p.ndim == 2:
                # N(0, 0.02) as GLM / BERT; no 1/√(2L) scaling of the residual projections: with
                # post-norm each LayerNorm rescales the stream, so it does not grow with depth.
                nn.init.normal_(p, mean=0.0, std=0.02)
            elif not name.endswith("layernorm.bias"):
                nn.init.zeros_(p)

    @property
    def args(self) -> GLMConfig:
        return self.config

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        """One empty ``KVCache`` per block, for ``max_len`` (default max_seq_len) positions."""
        c = self.config
        max_len = c.max_seq_len if max_len is None else int(max_len)
        return [KVCache(batch_size, c.num_attention_heads, c.head_dim, max_len, self.lm_head.weight.dtype)
                for _ in range(c.num_layers)]

    def _ints(self, x, name: str, shape: tuple, high: int | None = None) -> np.ndarray:
        a = x.data if isinstance(x, Tensor) else np.asarray(x)
        if a.dtype.kind not in "iu":
            raise TypeError(f"GLM: {name} must be integers, got dtype {a.dtype}")
        if a.shape != shape:
            raise ValueError(f"GLM: {name} must have shape {shape}, got {a.shape}")
        if high is not None and a.size and (a.min() < 0 or a.max() >= high):
            raise ValueError(f"GLM: {name} must be in [0, {high}), got values {a.min()}..{a.max()}")
        return a.astype(np.int64, copy=False)

    def forward(self, input_ids, position_ids=None, sep=None, attention_mask=None, targets=None, kv_cache=None):
        """input_ids: (B, T) ids in [0, vocab_size).

        position_ids: (B, 2, T) ints: row 0 the position in the corrupted text, row 1 the
            position inside a span (0 in Part A). Default: [P, P+1, ...] and zeros (plain text).
        sep: (B,) ints or one int, the Part A length of each row (absolute, counting cached
            positions). Default: everything is Part A (fully bidirectional) without a cache; with a
            cache the cached positions are Part A and the new tokens Part B.
        attention_mask: (B, P+T) 1 = real token, 0 = padding (keys never attended to).
        targets: (B, T) next-token ids, -100 = no label (Part A, padding) -> ``loss``.
        kv_cache: list of ``KVCache`` from ``new_kv_cache`` (inference under ``mi.no_grad()``).
        Returns ``CausalLMOutput(logits (B, T, vocab), loss)``.
        """
        c = self.config
        ids, start = check_model_inputs(input_ids, c.vocab_size, "GLM", kv_cache, c.num_layers)  # (B, T), cached count
        B, T = ids.shape
        Tk = start + T
        if position_ids is None:
            if Tk > c.max_seq_len:
                raise ValueError(f"GLM: {Tk} positions exceed max_seq_len={c.max_seq_len} (the position tables)")
            pos = np.zeros((B, 2, T), dtype=np.int64)
            pos[:, 0] = np.arange(start, Tk)
        else:
            pos = self._ints(position_ids, "position_ids", (B, 2, T), c.max_seq_len)  # (B, 2, T)
        if sep is None:
            sep = np.full(B, Tk if start == 0 else start, dtype=np.int64)
        else:
            s = np.asarray(sep.data if isinstance(sep, Tensor) else sep)
            sep = self._ints(np.broadcast_to(s, (B,)) if s.ndim == 0 else s, "sep", (B,), Tk + 1)
        attn_mask = glm_attention_mask(sep, T, Tk)  # (B, T, P+T), True = may not attend
        key_padding_mask = None
        if attention_mask is not None:
            m = attention_mask.data if isinstance(attention_mask, Tensor) else np.asarray(attention_mask)
            if m.shape != (B, Tk):
                raise ValueError(f"GLM: attention_mask must have shape (batch, cached + new tokens) = {(B, Tk)}, got {m.shape}")
            key_padding_mask = ~m.astype(bool)  # (B, P+T), True = padding

        tr = self.transformer
        x = self.word_embeddings(ids.astype(np.int64, copy=False))  # (B, T) -> (B, T, C)
        rotary = None
        if c.position_encoding == "learned":
            x = tr.position_embeddings(x, position_ids=pos[:, 0])  # + where in the corrupted text
            x = tr.block_position_embeddings(x, position_ids=pos[:, 1])  # + where inside the span
        else:
            rotary = rotary_2d(pos, c.head_dim, c.rope_theta)  # queries/keys turned by both positions
        x = tr.embedding_dropout(x)
        for i, layer in enumerate(tr.layers):
            x = layer(x, attn_mask, key_padding_mask, None if kv_cache is None else kv_cache[i], rotary)  # (B, T, C)
        x = tr.final_layernorm(x)  # normalise the last block's residual sum
        logits = self.lm_head(x)  # (B, T, C) -> (B, T, vocab)
        loss = None if targets is None else lm_loss(logits, targets, (B, T), "GLM")  # mean over labels != -100
        return CausalLMOutput(logits=logits, loss=loss)

    def extra_repr(self):
        return f"params={self.num_parameters():,}"


def infill(model: GLM, contexts: Sequence[Sequence[int]], mask_id: int, sop_id: int, eop_id: int,
           max_new_tokens: int = 16, pad_id: int = 0) -> list[list[int]]:
    """Greedily fill the first ``mask_id`` ([MASK]) of each context (GLM's blank infilling at inference).

    Each context is Part A: token ids holding one or more [MASK]s; the first one is filled.
    The batch is left-padded (padding keys masked, positions counted from the first real
    token); Part A is run once, bidirectionally, into the KV cache; then [START] (``sop_id``) at
    the [MASK]'s position with span position 1, and each generated token at span position 2, 3, ...
    attends to all of Part A and to the span so far -- the Part B rows of the training mask.
    A row stops at ``eop_id`` ([END]). Returns the span's ids per context (without [START]/[END]).
    """
    if not contexts:
        return []
    c = model.config
    for n, ctx in enumerate(contexts):
        if mask_id not in list(ctx):
            raise ValueError(f"infill: context {n} has no [MASK] (id {mask_id}) to fill")
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
        raise ValueError(f"infill: max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    ids, mask = left_pad([list(ctx) for ctx in contexts], pad_id)  # (B, L) each
    B, L = ids.shape
    if max(len(x) for x in contexts) > c.max_seq_len or max_new_tokens >= c.max_seq_len:
        raise ValueError(f"infill: contexts of up to {max(len(x) for x in contexts)} tokens and spans of up to "
                         f"{max_new_tokens} need position tables larger than max_seq_len={c.max_seq_len}")
    pos_a = np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # (B, L) positions from each row's first real token
    where = np.array([int(np.argmax(ids[b] == mask_id) if (ids[b] == mask_id).any() else 0) for b in range(B)])
    mask_pos = pos_a[np.arange(B), where]  # (B,) the [MASK]'s position in the corrupted text
    out: list[list[int]] = [[] for _ in range(B)]
    done = np.zeros(B, dtype=bool)
    with no_grad(), model.mode(training=False):
        cache = model.new_kv_cache(B, L + max_new_tokens + 1)
        prefill_pos = np.stack([pos_a, np.zeros_like(pos_a)], axis=1)  # (B, 2, L), block position 0
        model(ids, position_ids=prefill_pos, sep=L, attention_mask=mask, kv_cache=cache)  # Part A, bidirectional
        token = np.full(B, sop_id, dtype=np.int64)
        for step in range(max_new_tokens):
            full_mask = np.concatenate([mask, np.ones((B, step + 1), dtype=mask.dtype)], axis=1)  # (B, L+step+1)
            pos = np.stack([mask_pos, np.full(B, step + 1)], axis=1)[:, :, None]  # (B, 2, 1)
            logits = model(token[:, None], position_ids=pos, sep=L, attention_mask=full_mask, kv_cache=cache).logits
            token = sample_next_token(logits.data[:, -1], temperature=0).astype(np.int64)  # (B,) greedy
            for b in range(B):
                if not done[b]:
                    if token[b] == eop_id:
                        done[b] = True
                    else:
                        out[b].append(int(token[b]))
            if done.all():
                break
    return out
