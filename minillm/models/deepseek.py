"""DeepSeek-V2/V3, Happy LLM 3.3.4 (work in progress in the book): a LLaMA-style decoder whose
feed-forward layers are a mixture of experts (DeepSeekMoE) and whose attention is multi-head
latent attention (MLA).

    DeepseekConfig      hyper-parameters (Hugging Face ``DeepseekV3Config``'s names)
    MoEGate             the router: scores = softmax (V2) or sigmoid (V3) of x·Wᵀ, top-k experts,
                        the expert-level balance loss (V2) or the bias-adjusted choice (V3)
    DeepseekMoE         shared experts (every token) + routed experts (k of them per token)
    MLA                 keys/values from a compressed latent c_kv, decoupled RoPE, a latent KV cache,
                        absorbed matrices at decode time
    DecoderLayer        pre-norm: x + attn(norm(x)), then + mlp(norm(x)) (the first
                        ``first_k_dense_replace`` layers keep a dense SwiGLU MLP)
    DeepseekForCausalLM embed_tokens -> layers -> norm -> lm_head (``minillm.generation`` works unchanged)

Mixture of experts (DeepSeekMoE, Dai et al. 2024; DeepSeek-V2 §2.2, V3 §2.1.2)
------------------------------------------------------------------------------
Each MoE layer holds ``n_shared_experts`` experts that every token goes through and
``n_routed_experts`` small ("fine-grained", ``moe_intermediate_size`` wide) SwiGLU experts of
which the router picks ``num_experts_per_tok`` (k) per token::

    s_t = softmax(W_gate · x_t)                         (V3: sigmoid, optionally renormalised over the k)
    chosen = top-k of s_t  (V3 "noaux_tc": top-k of s_t + b, b a bias that is not trained)
    y_t = Σ_shared E_s(x_t) + Σ_{i in chosen} s_t,i · E_i(x_t)

Group-limited routing (``n_group`` > 1; V2's device-limited routing, V3's node-limited routing):
the E routed experts are split into ``n_group`` equal groups (in DeepSeek, the devices or nodes
that hold them), and a token may only use experts of its ``topk_group`` best groups, so its
activations travel to at most ``topk_group`` places. A group's score is its best expert score
(V2, ``topk_method="group_limited_greedy"``) or the sum of its two best bias-adjusted scores
(V3, ``"noaux_tc"``); the top k are then chosen among the experts of the kept groups only.

Dispatch: the (token, slot) pairs are sorted by expert; each expert runs once on the rows it
received (a gather), and each token adds up its k rows with its gate weights (a gather of the
outputs; its backward is the scatter-add). Experts that received no token do not run.

Capacity: **dropless**. Every token reaches all k of its experts, however unbalanced the
routing (as DeepSeek-V3's inference and Hugging Face's implementation do); there is no
capacity factor and no token is ever dropped. Balance comes from the losses below instead.

Balancing:

* ``aux_loss_alpha`` > 0 (V2's expert-level balance loss, computed over the batch's tokens):
  L_bal = α · Σ_i f_i · P_i, f_i = E/(k·N) · (tokens sent to expert i), P_i = mean_t s_t,i.
  f is a count (no gradient); P carries the gradient back into the router. Perfectly uniform
  routing gives f_i = 1 and P_i = 1/E, so L_bal = α (its minimum); a collapsed router pays up to E/k times more.
  ``DeepseekForCausalLM`` adds every layer's L_bal to the loss in training mode.
* ``topk_method="noaux_tc"`` (V3's auxiliary-loss-free balancing): a per-expert bias b (buffer
  ``e_score_correction_bias``) is added to the scores only to *choose* the experts (the gate weights
  are the unbiased scores); after each training forward b_i += γ·sign(mean load − load_i), so
  overloaded experts become less attractive (γ = ``bias_update_speed``).

Multi-head latent attention (DeepSeek-V2 §2.1)
----------------------------------------------
::

    c_kv = RMSNorm(W_DKV x)        (kv_lora_rank r)          k_rope = RoPE(W_KR x)   (one head, shared)
    k_h  = [W_UK,h c_kv ; k_rope]     v_h = W_UV,h c_kv
    c_q  = RMSNorm(W_DQ x) if q_lora_rank else x               q_h = [W_UQ,h c_q ; RoPE(W_QR,h c_q)]
    o    = W_O · concat_h softmax(q_h·k_hᵀ / √(d_nope + d_rope)) v_h

(``kv_a_proj_with_mqa`` = [W_DKV; W_KR], ``kv_b_proj`` = [W_UK; W_UV] per head, ``q_b_proj`` or
``q_proj`` = [W_UQ; W_QR] per head, ``o_proj`` = W_O.) RoPE cannot act on c_kv (a rotation
between W_UK and the latent would stop W_UK from being absorbed), hence the *decoupled*
rotary part: a separate d_rope-wide key, shared by all heads. RoPE rotates adjacent pairs
(dims 2i, 2i+1), the book's convention and DeepSeek's own (HF: ``rope_interleave=True``).

The KV cache (``new_kv_cache``) stores per token only c_kv and k_rope: r + d_rope numbers per
layer, instead of 2·H·d_h for multi-head attention. At decode time the up-projections are
absorbed: q_h·k_h = (W_UK,hᵀ q_nope,h)·c_kv + q_rope,h·k_rope, so each head attends over the
latent directly (one shared "key/value head", like MQA, of width r + d_rope), and W_UV,h is
folded into W_O. ``MLA.forward(absorb=True)`` (the default with a cache) computes this; the
test checks it gives the naive expansion's logits.
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
from ..nn.kv_cache import KVCache
from ..nn.positional import apply_rope, precompute_freqs_cis
from ..ops import cat
from ..tensor import Tensor
from .config import ConfigMixin
from .llama import MLP, CausalLMOutput

__all__ = ["DeepseekConfig", "MoEGate", "DeepseekMoE", "MLA", "DecoderLayer", "DeepseekForCausalLM", "PRESETS",
           "kv_cache_bytes_per_token"]

PRESETS = {
    # a CPU-sized MoE: 8 routed experts (2 per token) + 1 shared, MLA with a 32-wide latent
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=344,
                 n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, moe_intermediate_size=64,
                 kv_lora_rank=32, q_lora_rank=None, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=32,
                 max_seq_len=256),
}

_SCORING = ("softmax", "sigmoid")
_TOPK = ("greedy", "group_limited_greedy", "noaux_tc")


@dataclass
class DeepseekConfig(ConfigMixin):
    """DeepSeek's hyper-parameters (Hugging Face ``DeepseekV3Config`` names; ``max_seq_len`` is
    its ``max_position_embeddings``). Invalid values raise ``ValueError`` naming the field.

    ``n_routed_experts=0`` makes a dense model (every layer a SwiGLU MLP of ``intermediate_size``).
    """

    PRESETS: ClassVar[dict] = PRESETS

    vocab_size: int = 32000
    max_seq_len: int = 256
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 344  # dense MLP width (layers < first_k_dense_replace, or all if no experts)
    # --- mixture of experts
    n_routed_experts: int = 8
    n_shared_experts: int = 1
    num_experts_per_tok: int = 2  # k
    moe_intermediate_size: int = 64  # width of each (fine-grained) expert
    first_k_dense_replace: int = 0  # the first layers keep a dense MLP
    scoring_func: str = "softmax"  # "softmax" (V2) or "sigmoid" (V3)
    norm_topk_prob: bool = False  # renormalise the k gate weights to sum 1 (V3 with sigmoid)
    routed_scaling_factor: float = 1.0
    aux_loss_alpha: float = 0.01  # expert-level balance loss weight; 0 = off
    topk_method: str = "greedy"  # "greedy", "group_limited_greedy" (V2) or "noaux_tc" (V3's bias-adjusted choice)
    n_group: int = 1  # routed experts split into this many groups (1 = no group limit)
    topk_group: int = 1  # a token's experts come from its topk_group best groups only
    bias_update_speed: float = 0.001  # γ of the auxiliary-loss-free bias update ("noaux_tc")
    # --- multi-head latent attention
    q_lora_rank: int | None = None  # None = queries straight from x (V2-Lite); else compressed to this rank
    kv_lora_rank: int = 32  # r, the width of the cached latent c_kv
    qk_nope_head_dim: int = 16
    qk_rope_head_dim: int = 16  # the decoupled rotary part (shared key)
    v_head_dim: int = 32
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    dropout: float = 0.0
    tie_word_embeddings: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "max_seq_len", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            _int(self, name, 1)
        for name in ("n_routed_experts", "n_shared_experts", "first_k_dense_replace"):
            _int(self, name, 0)
        if self.n_routed_experts:
            _int(self, "moe_intermediate_size", 1)
            _int(self, "num_experts_per_tok", 1)
            if self.num_experts_per_tok > self.n_routed_experts:
                raise ValueError(f"DeepseekConfig.num_experts_per_tok ({self.num_experts_per_tok}) must be <= "
                                 f"n_routed_experts ({self.n_routed_experts})")
        for name in ("n_group", "topk_group"):
            _int(self, name, 1)
        if self.topk_group > self.n_group:
            raise ValueError(f"DeepseekConfig.topk_group ({self.topk_group}) must be <= n_group ({self.n_group})")
        if self.n_routed_experts and self.n_routed_experts % self.n_group:
            raise ValueError(f"DeepseekConfig.n_routed_experts ({self.n_routed_experts}) must be divisible by "
                             f"n_group ({self.n_group})")
        if self.n_routed_experts and self.topk_group * (self.n_routed_experts // self.n_group) < self.num_experts_per_tok:
            raise ValueError(f"DeepseekConfig.topk_group ({self.topk_group}) groups of {self.n_routed_experts // self.n_group} "
                             f"experts hold fewer than num_experts_per_tok ({self.num_experts_per_tok})")
        if self.q_lora_rank is not None:
            _int(self, "q_lora_rank", 1)
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"DeepseekConfig.qk_rope_head_dim must be even (RoPE turns pairs), got {self.qk_rope_head_dim}")
        if self.scoring_func not in _SCORING:
            raise ValueError(f"DeepseekConfig.scoring_func must be one of {_SCORING}, got {self.scoring_func!r}")
        if self.topk_method not in _TOPK:
            raise ValueError(f"DeepseekConfig.topk_method must be one of {_TOPK}, got {self.topk_method!r}")
        for name in ("aux_loss_alpha", "bias_update_speed", "dropout"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0):
                raise ValueError(f"DeepseekConfig.{name} must be a number >= 0, got {v!r}")
        if self.dropout >= 1:
            raise ValueError(f"DeepseekConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.n_routed_experts and self.n_group > 1:
            if self.topk_method == "greedy":
                raise ValueError(f"DeepseekConfig.n_group={self.n_group} needs topk_method 'group_limited_greedy' (V2) "
                                 f"or 'noaux_tc' (V3); 'greedy' chooses among all experts")
            if self.topk_method == "noaux_tc" and self.n_routed_experts // self.n_group < 2:
                raise ValueError(f"DeepseekConfig.n_group={self.n_group}: 'noaux_tc' scores a group by its two best "
                                 f"experts, so groups need >= 2 experts, got {self.n_routed_experts // self.n_group}")
        if not (isinstance(self.routed_scaling_factor, (int, float)) and self.routed_scaling_factor > 0):
            raise ValueError(f"DeepseekConfig.routed_scaling_factor must be > 0, got {self.routed_scaling_factor!r}")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, layer_id: int) -> bool:
        return self.n_routed_experts > 0 and layer_id >= self.first_k_dense_replace

    @property
    def active_ffn_params(self) -> int:
        """Feed-forward parameters one token uses in an MoE layer: its k routed experts, the
        shared ones and the router (3 matrices of moe_intermediate_size per SwiGLU expert)."""
        per_expert = 3 * self.hidden_size * self.moe_intermediate_size
        return (self.num_experts_per_tok + self.n_shared_experts) * per_expert + self.n_routed_experts * self.hidden_size


def _int(cfg, name, low):
    v = getattr(cfg, name)
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
        raise ValueError(f"DeepseekConfig.{name} must be an int >= {low}, got {v!r}")


def kv_cache_bytes_per_token(kind: str, n_layers: int, n_heads: int, head_dim: int, n_kv_heads: int | None = None,
                             kv_lora_rank: int | None = None, qk_rope_head_dim: int | None = None, dtype_bytes: int = 4) -> int:
    """The KV-cache bytes one token costs, by formula: MHA 2·H·d_h, GQA 2·G·d_h, MQA 2·d_h,
    MLA r + d_rope numbers per layer (times layers and bytes per number)."""
    per_layer = {
        "MHA": lambda: 2 * n_heads * head_dim,
        "GQA": lambda: 2 * n_kv_heads * head_dim,
        "MQA": lambda: 2 * head_dim,
        "MLA": lambda: kv_lora_rank + qk_rope_head_dim,
    }
    if kind not in per_layer:
        raise ValueError(f"kv_cache_bytes_per_token: kind must be one of {sorted(per_layer)}, got {kind!r}")
    return per_layer[kind]() * n_layers * dtype_bytes


# ============================================================================ mixture of experts
class MoEGate(nn.Module):
    """The router of one MoE layer: ``weight`` (E, C); ``forward(x)`` with x (N, C) returns the
    chosen experts ``topk_idx`` (N, k) int array, their gate weights ``topk_weight`` (N, k) Tensor
    and the balance loss (a scalar Tensor, or None when it is off or in eval mode).

    ``last_load`` (E,) holds how many tokens each expert received in the last call, and
    ``load_history`` one such array per training call (to watch the balance over training).
    """

    def __init__(self, config: DeepseekConfig):
        super().__init__()
        c = config
        self.top_k, self.n_experts = c.num_experts_per_tok, c.n_routed_experts
        self.n_group, self.topk_group = c.n_group, c.topk_group
        self.scoring_func, self.topk_method, self.norm_topk_prob = c.scoring_func, c.topk_method, c.norm_topk_prob
        self.routed_scaling_factor, self.alpha, self.gamma = c.routed_scaling_factor, c.aux_loss_alpha, c.bias_update_speed
        self.weight = nn.Parameter(np.zeros((c.n_routed_experts, c.hidden_size), dtype=np.float32))
        nn.init.normal_(self.weight, 0.0, 0.02)
        # V3's balancing bias: chooses, never weighs; updated by counting, not by gradients.
        self.register_buffer("e_score_correction_bias", Tensor(np.zeros(c.n_routed_experts, dtype=np.float32)))
        self.last_load = np.zeros(c.n_routed_experts, dtype=np.int64)
        self.load_history: list[np.ndarray] = []

    def scores(self, x: Tensor) -> Tensor:
        logits = x @ self.weight.transpose(0, 1)  # (N, C) @ (C, E) -> (N, E)
        return F.softmax(logits, dim=-1) if self.scoring_func == "softmax" else F.sigmoid(logits)

    def choose(self, choice: np.ndarray) -> np.ndarray:
        """The k experts of each token from its selection scores ``choice`` (N, E), best first
        (ties: the lower id). With ``n_group`` > 1 only the experts of the token's ``topk_group``
        best groups compete (the group score: the best expert in it (V2) or the sum of its two
        best (V3, "noaux_tc"))."""
        if self.n_group > 1:
            N, E = choice.shape
            grouped = choice.reshape(N, self.n_group, E // self.n_group)  # (N, G, E/G)
            if self.topk_method == "noaux_tc":
                group_score = np.sort(grouped, axis=-1)[..., -2:].sum(axis=-1)  # (N, G) sum of the two best
            else:
                group_score = grouped.max(axis=-1)  # (N, G) the best expert of the group
            best_groups = np.argsort(-group_score, axis=-1, kind="stable")[:, : self.topk_group]  # (N, topk_group)
            keep = np.zeros((N, self.n_group), dtype=bool)
            np.put_along_axis(keep, best_groups, True, axis=-1)
            # -inf, as DeepSeek-V3's own code; Hugging Face fills 0.0 (the same unless a kept score is < 0)
            choice = np.where(np.repeat(keep, E // self.n_group, axis=1), choice, -np.inf)  # (N, E)
        return np.argsort(-choice, axis=-1, kind="stable")[:, : self.top_k]  # (N, k)

    def forward(self, x: Tensor):
        N = x.shape[0]
        s = self.scores(x)  # (N, E)
        choice = s.data
        if self.topk_method == "noaux_tc":
            choice = choice + self.e_score_correction_bias.data  # (N, E), only to choose
        idx = self.choose(choice)  # (N, k) best first (ties: lower id)
        w = s.gather(1, Tensor._wrap(idx))  # (N, k) gate weights (differentiable through the scores)
        if self.norm_topk_prob:
            w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
        w = w * self.routed_scaling_factor
        load = np.bincount(idx.reshape(-1), minlength=self.n_experts)  # (E,) tokens per expert
        self.last_load = load
        if self.training:
            self.load_history.append(load)
        aux = None
        if self.training and self.alpha > 0:
            f = load * (self.n_experts / (self.top_k * N))  # (E,) 1 for every expert under uniform routing
            P = s.mean(dim=0)  # (E,) mean score
            aux = (P * Tensor._wrap(f.astype(s.dtype))).sum() * self.alpha
        if self.training and self.topk_method == "noaux_tc" and self.gamma > 0:
            b = self.e_score_correction_bias.data
            b += (self.gamma * np.sign(load.mean() - load)).astype(b.dtype)  # raise the underloaded, lower the overloaded
        return idx, w, aux


class DeepseekMoE(nn.Module):
    """Shared experts + routed experts. x (B, T, C) -> (B, T, C); ``aux_loss`` holds the balance
    loss of the last training call (or None). Experts are SwiGLU ``MLP``s (``models/llama.py``)."""

    def __init__(self, config: DeepseekConfig):
        super().__init__()
        c = config
        self.top_k = c.num_experts_per_tok
        self.experts = nn.ModuleList([MLP(c.hidden_size, c.moe_intermediate_size, 1, c.dropout)
                                      for _ in range(c.n_routed_experts)])
        self.gate = MoEGate(c)
        self.shared_experts = (MLP(c.hidden_size, c.moe_intermediate_size * c.n_shared_experts, 1, c.dropout)
                               if c.n_shared_experts else None)
        self.aux_loss = None

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        flat = x.reshape(B * T, C)  # (N, C)
        idx, w, self.aux_loss = self.gate(flat)  # (N, k), (N, k)
        N, k = idx.shape
        slot_expert = idx.reshape(-1)  # (N·k,) expert of each (token, slot)
        order = np.argsort(slot_expert, kind="stable")  # slots grouped by expert, tokens in order
        counts = np.bincount(slot_expert, minlength=len(self.experts))  # (E,)
        rows = flat[order // k]  # (N·k, C): each expert's tokens, expert after expert (gather)
        outs, start = [], 0
        for e, n in enumerate(counts):
            if n:  # an expert runs once, on the tokens it received; idle experts do not run
                outs.append(self.experts[e](rows[start : start + n]))  # (n, C)
                start += n
        y_sorted = cat(outs, dim=0) if len(outs) > 1 else outs[0]  # (N·k, C) in expert order
        where = np.empty_like(order)
        where[order] = np.arange(N * k)  # row of y_sorted holding (token, slot)
        y = y_sorted[where].reshape(N, k, C)  # (N, k, C) each token's k expert outputs (backward: scatter-add)
        y = (y * w.unsqueeze(-1)).sum(dim=1)  # (N, C) weighted by the gate
        if self.shared_experts is not None:
            y = y + self.shared_experts(flat)  # every token, weight 1
        return y.reshape(B, T, C)


# ============================================================================ attention
class MLA(nn.Module):
    """Multi-head latent attention (module docstring). x (B, T, C) -> (B, T, C).

    Parameters (Hugging Face's names): ``q_proj`` (C -> H·(d_nope+d_rope)) or ``q_a_proj`` (C -> q_lora_rank),
    ``q_a_layernorm``, ``q_b_proj``; ``kv_a_proj_with_mqa`` (C -> r + d_rope), ``kv_a_layernorm`` (r),
    ``kv_b_proj`` (r -> H·(d_nope + d_v)); ``o_proj`` (H·d_v -> C).
    """

    def __init__(self, config: DeepseekConfig):
        super().__init__()
        c = config
        self.H, self.r = c.num_attention_heads, c.kv_lora_rank
        self.d_nope, self.d_rope, self.d_v = c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
        self.q_lora_rank = c.q_lora_rank
        qk = self.d_nope + self.d_rope
        if c.q_lora_rank is None:
            self.q_proj = nn.Linear(c.hidden_size, self.H * qk, bias=False)
        else:
            self.q_a_proj = nn.Linear(c.hidden_size, c.q_lora_rank, bias=False)
            self.q_a_layernorm = nn.RMSNorm(c.q_lora_rank, eps=c.rms_norm_eps)
            self.q_b_proj = nn.Linear(c.q_lora_rank, self.H * qk, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(c.hidden_size, self.r + self.d_rope, bias=False)
        self.kv_a_layernorm = nn.RMSNorm(self.r, eps=c.rms_norm_eps)
        self.kv_b_proj = nn.Linear(self.r, self.H * (self.d_nope + self.d_v), bias=False)
        self.o_proj = nn.Linear(self.H * self.d_v, c.hidden_size, bias=False)
        self.softmax_scale = 1.0 / math.sqrt(qk)
        self.dropout = c.dropout
        self.resid_dropout = nn.Dropout(c.dropout)

    def _queries(self, x: Tensor, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x) if self.q_lora_rank is None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))  # (B, T, H·qk)
        q = q.view(B, T, self.H, self.d_nope + self.d_rope)  # (B, T, H, qk)
        q_nope, q_rope = q[..., : self.d_nope], q[..., self.d_nope :]  # (B, T, H, d_nope), (B, T, H, d_rope)
        return q_nope, apply_rope(q_rope, cos, sin)

    def _latent(self, x: Tensor, cos, sin):
        B, T, _ = x.shape
        kv = self.kv_a_proj_with_mqa(x)  # (B, T, C) -> (B, T, r + d_rope)
        c_kv = self.kv_a_layernorm(kv[..., : self.r])  # (B, T, r), the compressed keys and values
        k_rope = apply_rope(kv[..., self.r :].view(B, T, 1, self.d_rope), cos, sin)  # (B, T, 1, d_rope), one head for all
        return c_kv, k_rope

    def up_weights(self):
        """W_UK (H, d_nope, r) and W_UV (H, d_v, r), views of ``kv_b_proj.weight``."""
        w = self.kv_b_proj.weight.view(self.H, self.d_nope + self.d_v, self.r)  # (H, d_nope + d_v, r)
        return w[:, : self.d_nope], w[:, self.d_nope :]

    def forward(self, x: Tensor, cos, sin, mask=None, kv_cache: KVCache | None = None, absorb: bool | None = None) -> Tensor:
        """x: (B, T, C); cos/sin: RoPE tables for these T positions, (T, d_rope/2) or (B, T, d_rope/2);
        mask: None or bool (B, 1, 1, P+T), True = real token; kv_cache: a latent ``KVCache``
        (k slot: c_kv, (B, 1, L, r); v slot: k_rope, (B, 1, L, d_rope)).
        absorb: attend over the latent with absorbed matrices (default: when decoding with a cache)."""
        B, T, _ = x.shape
        absorb = kv_cache is not None if absorb is None else bool(absorb)
        q_nope, q_rope = self._queries(x, cos, sin)  # (B, T, H, d_nope), (B, T, H, d_rope)
        c_kv, k_rope = self._latent(x, cos, sin)  # (B, T, r), (B, T, 1, d_rope)
        c_kv, k_rope = c_kv.unsqueeze(1), k_rope.transpose(1, 2)  # -> (B, 1, T, r), (B, 1, T, d_rope)
        if kv_cache is not None:
            c_kv, k_rope = kv_cache.update(c_kv, k_rope)  # -> (B, 1, P+T, r), (B, 1, P+T, d_rope): all that is cached
        dropout_p = self.dropout if self.training else 0.0
        W_UK, W_UV = self.up_weights()  # (H, d_nope, r), (H, d_v, r)
        q_rope = q_rope.transpose(1, 2)  # (B, H, T, d_rope)
        if absorb:
            # q·k_nope = (W_UKᵀ q_nope)·c_kv: the query moves into latent space; keys are never expanded.
            q_lat = q_nope.transpose(1, 2) @ W_UK  # (B, H, T, d_nope) @ (H, d_nope, r) -> (B, H, T, r)
            q_all = cat([q_lat, q_rope], dim=-1)  # (B, H, T, r + d_rope)
            k_all = cat([c_kv, k_rope], dim=-1)  # (B, 1, L, r + d_rope), one key head for all query heads
            ctx = F.manual_attention(q_all, k_all, c_kv, mask, dropout_p, True, self.softmax_scale)  # (B, H, T, r)
            # W_UV folded into W_O: o_proj(concat_h W_UV,h ctx_h) = (W_O·blockdiag(W_UV)) · concat_h ctx_h
            W_O = self.o_proj.weight.view(-1, self.H, self.d_v)  # (C, H, d_v)
            W_OUV = (W_O.transpose(0, 1) @ W_UV).transpose(0, 1).reshape(-1, self.H * self.r)  # (H, C, r) -> (C, H·r)
            out = ctx.transpose(1, 2).reshape(B, T, self.H * self.r)  # (B, H, T, r) -> (B, T, H·r)
            return self.resid_dropout(F.linear(out, W_OUV))  # (B, T, C)
        # naive: expand every cached latent into per-head keys and values
        kv = self.kv_b_proj(c_kv.squeeze(1))  # (B, L, r) -> (B, L, H·(d_nope + d_v))
        L = kv.shape[1]
        kv = kv.view(B, L, self.H, self.d_nope + self.d_v).transpose(1, 2)  # (B, H, L, d_nope + d_v)
        k = cat([kv[..., : self.d_nope], k_rope.expand(B, self.H, L, self.d_rope)], dim=-1)  # (B, H, L, qk)
        v = kv[..., self.d_nope :]  # (B, H, L, d_v)
        q = cat([q_nope.transpose(1, 2), q_rope], dim=-1)  # (B, H, T, qk)
        if v.shape[-1] == q.shape[-1]:  # the fused kernel needs equal widths
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=True,
                                               scale=self.softmax_scale)  # (B, H, T, d_v)
        else:
            y = F.manual_attention(q, k, v, mask, dropout_p, True, self.softmax_scale)  # (B, H, T, d_v)
        y = y.transpose(1, 2).reshape(B, T, self.H * self.d_v)  # (B, H, T, d_v) -> (B, T, H·d_v)
        return self.resid_dropout(self.o_proj(y))  # (B, T, C)


# ============================================================================ the model
class DecoderLayer(nn.Module):
    """Pre-norm block: h = x + self_attn(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h))."""

    def __init__(self, layer_id: int, config: DeepseekConfig):
        super().__init__()
        c = config
        self.input_layernorm = nn.RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.self_attn = MLA(c)
        self.post_attention_layernorm = nn.RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.mlp = DeepseekMoE(c) if c.is_moe_layer(layer_id) else MLP(c.hidden_size, c.intermediate_size, 1, c.dropout)

    def forward(self, x, cos, sin, mask=None, kv_cache=None, absorb=None):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache, absorb)  # (B, T, C)
        return h + self.mlp(self.post_attention_layernorm(h))  # (B, T, C)


class DeepseekForCausalLM(nn.Module):
    """``model.embed_tokens`` -> ``model.layers`` -> ``model.norm`` -> ``lm_head``.

    The call contract of ``models/llama.py``'s ``Transformer`` (so ``minillm.generation`` and the
    ``Trainer`` use it unchanged); in training mode ``loss`` includes the balance losses
    (``last_aux_loss`` holds their sum as a float)::

        out = model(input_ids, targets=None, attention_mask=None, position_ids=None, kv_cache=None, logits_to_keep=0)
    """

    def __init__(self, config: DeepseekConfig | None = None):
        super().__init__()
        config = DeepseekConfig() if config is None else config
        if not isinstance(config, DeepseekConfig):
            raise TypeError(f"DeepseekForCausalLM: expected a DeepseekConfig, got {type(config).__name__}")
        self.config = c = config
        self.model = nn.ModuleDict(dict(
            embed_tokens=nn.Embedding(c.vocab_size, c.hidden_size),
            layers=nn.ModuleList([DecoderLayer(i, c) for i in range(c.num_hidden_layers)]),
            norm=nn.RMSNorm(c.hidden_size, eps=c.rms_norm_eps),
        ))
        self.dropout = nn.Dropout(c.dropout)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        if c.tie_word_embeddings:
            self.model.embed_tokens.weight = self.lm_head.weight
        cos, sin = precompute_freqs_cis(c.qk_rope_head_dim, c.max_seq_len, c.rope_theta)
        self.register_buffer("freqs_cos", cos, persistent=False)  # (max_seq_len, d_rope/2)
        self.register_buffer("freqs_sin", sin, persistent=False)
        for name, p in self.named_parameters():
            if p.ndim == 2:
                # N(0, 0.02); the projections writing into the residual stream 1/√(2L) smaller (GPT-2)
                std = 0.02 / math.sqrt(2 * c.num_hidden_layers) if name.endswith(("o_proj.weight", "w2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
        self.last_aux_loss = 0.0

    @property
    def args(self) -> DeepseekConfig:
        return self.config

    def moe_layers(self) -> list[DeepseekMoE]:
        return [layer.mlp for layer in self.model.layers if isinstance(layer.mlp, DeepseekMoE)]

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        """One latent cache per layer: c_kv (B, 1, L, r) in the k slot, k_rope (B, 1, L, d_rope) in the v slot."""
        c = self.config
        max_len = c.max_seq_len if max_len is None else int(max_len)
        return [KVCache(batch_size, 1, c.kv_lora_rank, max_len, self.lm_head.weight.dtype, v_head_dim=c.qk_rope_head_dim)
                for _ in range(c.num_hidden_layers)]

    def _rope(self, B, T, start, position_ids):
        cos, sin = self.freqs_cos.data, self.freqs_sin.data
        if position_ids is None:
            return cos[start : start + T], sin[start : start + T]  # (T, d_rope/2)
        pos = position_ids.data if isinstance(position_ids, Tensor) else np.asarray(position_ids)
        if pos.shape != (B, T) or pos.dtype.kind not in "iu":
            raise ValueError(f"DeepseekForCausalLM: position_ids must be integers of shape {(B, T)}, got {pos.dtype} {pos.shape}")
        if pos.size and (pos.min() < 0 or pos.max() >= self.config.max_seq_len):
            raise ValueError(f"DeepseekForCausalLM: position_ids must be in [0, {self.config.max_seq_len}), got {pos.min()}..{pos.max()}")
        return cos[pos], sin[pos]  # (B, T, d_rope/2)

    def forward(self, input_ids, targets=None, attention_mask=None, position_ids=None, kv_cache=None,
                logits_to_keep: int = 0, absorb: bool | None = None):
        """input_ids (B, T) ids; targets (B, T), -100 = ignored; attention_mask (B, P+T) 1/0;
        position_ids (B, T); kv_cache from ``new_kv_cache``; absorb: see ``MLA.forward``.
        Returns ``CausalLMOutput(logits (B, T|logits_to_keep, vocab), loss)``."""
        c = self.config
        ids, start = check_model_inputs(input_ids, c.vocab_size, "DeepseekForCausalLM", kv_cache, c.num_hidden_layers)
        if position_ids is None and start + ids.shape[1] > c.max_seq_len:
            raise ValueError(f"DeepseekForCausalLM: {start} cached + {ids.shape[1]} new tokens exceed max_seq_len={c.max_seq_len}")
        B, T = ids.shape
        cos, sin = self._rope(B, T, start, position_ids)
        mask = None
        if attention_mask is not None:
            m = attention_mask.data if isinstance(attention_mask, Tensor) else np.asarray(attention_mask)
            if m.shape != (B, start + T):
                raise ValueError(f"DeepseekForCausalLM: attention_mask must have shape (batch, cached + new tokens) = "
                                 f"{(B, start + T)}, got {m.shape}")
            if not m.astype(bool).all():
                mask = m.astype(bool)[:, None, None, :]  # (B, 1, 1, P+T), True = may attend
        h = self.dropout(self.model.embed_tokens(ids.astype(np.int64, copy=False)))  # (B, T) -> (B, T, C)
        for i, layer in enumerate(self.model.layers):
            h = layer(h, cos, sin, mask, None if kv_cache is None else kv_cache[i], absorb)  # (B, T, C)
        h = self.model.norm(h)
        if logits_to_keep:
            if targets is not None:
                raise ValueError("DeepseekForCausalLM: logits_to_keep cannot be combined with targets")
            h = h[:, -logits_to_keep:]  # (B, k, C)
        logits = self.lm_head(h)  # (B, T, vocab)
        loss = None
        aux = [m.aux_loss for m in self.moe_layers() if m.aux_loss is not None] if self.training else []
        self.last_aux_loss = float(sum(a.item() for a in aux)) if aux else 0.0
        if targets is not None:
            loss = lm_loss(logits, targets, (B, T), "DeepseekForCausalLM")  # mean over labels != -100
            for a in aux:
                loss = loss + a  # the balance losses join the training objective
        return CausalLMOutput(logits=logits, loss=loss)

    def extra_repr(self):
        return f"params={self.num_parameters():,}"
