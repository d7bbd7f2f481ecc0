"""RLHF with PPO (Happy LLM 4.2.3; InstructGPT's third step), sized for a CPU.

Four models take part, as in the book's figure:

=============  ==========================================================================
actor          the policy being trained: a copy of the SFT model
critic         V(s_t), the reward still to come after token t. As in the book (图4.5): a
               copy of the reward model, its scalar head read at every token
               (``critic=RewardModel``); or, cheaper on a CPU, a value head
               ``Linear(dim, 1)`` on the actor's own hidden states (one trunk for both, as
               TRL's ``AutoModelForCausalLMWithValueHead``)
reference      the frozen SFT model: a per-token KL penalty keeps the actor near it
reward         the reward model's score of the whole reply (``RewardModel``), or a rule
               from the world's ground truth (``exact_match`` with the answer: +1 / -1)
=============  ==========================================================================

One PPO iteration::

    replies = actor.generate(prompts)                        # rollout, KV-cached, temperature 1
    logp_old, V_old = actor(replies); logp_ref = ref(replies)       (no grad)
    r_t = -kl_coef·(logp_old_t - logp_ref_t);  r_last += score(reply)    # per-token rewards
    A_t = GAE(r, V_old, γ, λ);  R_t = A_t + V_old_t          # advantages and returns
    for epoch in range(ppo_epochs):  for minibatch:
        ratio = exp(logp_t - logp_old_t)
        L_pg = mean(max(-A·ratio, -A·clip(ratio, 1-ε, 1+ε)))        # clipped policy objective
        L_v  = ½·mean(max((V - R)², (V_old + clip(V - V_old, ±ε_v) - R)²))   # clipped value loss
        (L_pg + vf_coef·L_v).backward(); AdamW step

Means are over the reply tokens of the minibatch (the prompt and padding are masked).
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from .. import nn
from ..autograd import no_grad
from ..data.sft import IGNORE_INDEX
from ..nn import functional as F
from ..ops import clamp, exp, maximum
from ..optim import AdamW, clip_grad_norm_, param_groups_for_weight_decay
from ..tensor import Tensor
from ..train.metrics import MetricsLogger
from .dpo import response_targets
from .rollout import Reply, generate_replies

__all__ = ["PPOConfig", "ActorCritic", "gae", "ppo_losses", "per_token_rewards", "PPOTrainer"]


@dataclass
class PPOConfig:
    """PPO's knobs, with InstructGPT / TRL-like defaults scaled to a tiny model."""

    lr: float = 3e-5  # AdamW learning rate of actor + critic
    batch_size: int = 32  # prompts per rollout
    mini_batch_size: int = 16  # replies per gradient step
    ppo_epochs: int = 2  # passes over each rollout
    gamma: float = 1.0  # discount: a reply is short, every token counts fully
    lam: float = 0.95  # GAE's λ: bias / variance trade-off of the advantages
    cliprange: float = 0.2  # ε of the clipped policy ratio
    cliprange_value: float = 0.2  # ε_v of the clipped value loss
    vf_coef: float = 0.5  # weight of the value loss
    kl_coef: float = 0.1  # β of the per-token KL penalty to the reference
    max_new_tokens: int = 24
    temperature: float = 1.0
    grad_clip: float = 1.0
    whiten_advantages: bool = True  # advantages scaled to mean 0, std 1 per rollout
    seed: int = 0

    def __post_init__(self):
        for name in ("lr", "cliprange", "cliprange_value", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PPOConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("batch_size", "mini_batch_size", "ppo_epochs", "max_new_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"PPOConfig.{name} must be an int >= 1, got {v!r}")
        if self.mini_batch_size > self.batch_size:
            raise ValueError(f"PPOConfig.mini_batch_size ({self.mini_batch_size}) must be <= batch_size ({self.batch_size})")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"PPOConfig.gamma and lam must be in [0, 1], got {self.gamma}, {self.lam}")
        if self.kl_coef < 0 or self.vf_coef < 0:
            raise ValueError(f"PPOConfig.kl_coef and vf_coef must be >= 0, got {self.kl_coef}, {self.vf_coef}")


class ActorCritic(nn.Module):
    """The actor (a llama ``Transformer``) and the critic.

    ``critic=None``: a value head on the actor's hidden states (the trunk runs once for both).
    ``critic=RewardModel``: the book's separate critic, initialised from the reward model; its
    ``score`` head is read at every position instead of only the last one.
    ``forward(ids) -> (logits (B, T, V), values (B, T))``.
    """

    def __init__(self, model, critic=None):
        super().__init__()
        self.model = model
        self.args = model.args
        if critic is not None:
            if not (hasattr(critic, "model") and hasattr(critic, "score")):
                raise TypeError(f"ActorCritic: critic must be a RewardModel, got {type(critic).__name__}")
            self.critic = critic
        else:
            self.v_head = nn.Linear(model.args.dim, 1)
            nn.init.zeros_(self.v_head.weight)
            nn.init.zeros_(self.v_head.bias)
            self.v_head.to(model.output.weight.dtype)

    def forward(self, input_ids):
        h = self.model.hidden_states(input_ids)  # (B, T, dim)
        B, T, _ = h.shape
        logits = self.model.output(h)  # (B, T, vocab)
        if "critic" in self._modules:
            values = self.critic.score(self.critic.model.hidden_states(input_ids))  # (B, T, 1)
        else:
            values = self.v_head(h)  # (B, T, 1)
        return logits, values.view(B, T)  # (B, T, vocab), (B, T)


# ----------------------------------------------------------------------------- the math
def gae(rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float, lam: float) -> tuple:
    """Generalised advantage estimation over each row's masked positions (reply tokens).

    rewards, values, mask: (B, T) (mask 1 on reply tokens, which form one contiguous run).
    δ_t = r_t + γ·V_{t+1} - V_t (V after the last token is 0), A_t = δ_t + γλ·A_{t+1}.
    Returns ``(advantages, returns)``, (B, T) each, 0 outside the mask; returns = A + V.
    """
    rewards, values, mask = (np.asarray(a, dtype=np.float64) for a in (rewards, values, mask))
    if not rewards.shape == values.shape == mask.shape or rewards.ndim != 2:
        raise ValueError(f"gae: rewards {rewards.shape}, values {values.shape} and mask {mask.shape} must be equal (B, T)")
    adv = np.zeros_like(rewards)
    last = np.zeros(rewards.shape[0])
    next_v = np.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = np.where(m > 0, delta + gamma * lam * last, last)
        adv[:, t] = last * m
        next_v = np.where(m > 0, values[:, t], next_v)
    return adv, (adv + values) * mask


def per_token_rewards(scores: np.ndarray, logp: np.ndarray, ref_logp: np.ndarray, mask: np.ndarray,
                      kl_coef: float) -> tuple:
    """InstructGPT's reward: -kl_coef·(log π - log π_ref) at every reply token, plus the
    sequence score at the reply's last token. Returns ``(rewards (B, T), kl (B, T))``."""
    kl = (logp - ref_logp) * mask
    rewards = -kl_coef * kl
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1] > 0, axis=1)  # index of each row's last reply token
    rewards[np.arange(len(scores)), last] += scores
    return rewards, kl


def ppo_losses(logp: Tensor, values: Tensor, old_logp, old_values, advantages, returns, mask,
               cliprange: float = 0.2, cliprange_value: float = 0.2) -> tuple:
    """The clipped policy loss and the clipped value loss (both scalars), means over ``mask``.

    logp, values: (B, T) Tensors with grad; the rest (B, T) arrays from the rollout.
    Returns ``(pg_loss, vf_loss, stats)`` with the clip fraction and approximate KL.
    """
    m = np.asarray(mask, dtype=logp.dtype)
    n = float(m.sum())
    if n == 0:
        raise ValueError("ppo_losses: the mask selects no token")
    c = lambda a: Tensor._wrap(np.asarray(a, dtype=logp.dtype))  # noqa: E731 - constants of the rollout
    M, A, R, LP0, V0 = c(m), c(advantages), c(returns), c(old_logp), c(old_values)
    ratio = exp((logp - LP0) * M)  # (B, T); 1 outside the mask
    pg = maximum(-A * ratio, -A * clamp(ratio, 1 - cliprange, 1 + cliprange))
    pg_loss = (pg * M).sum() / n
    v_clipped = V0 + clamp(values - V0, -cliprange_value, cliprange_value)
    vf = maximum((values - R) ** 2, (v_clipped - R) ** 2)
    vf_loss = 0.5 * (vf * M).sum() / n
    r = ratio.data
    stats = {
        "clipfrac": float(((np.abs(r - 1) > cliprange) * m).sum() / n),
        "approx_kl": float((0.5 * (logp.data - np.asarray(old_logp)) ** 2 * m).sum() / n),
    }
    return pg_loss, vf_loss, stats


# ----------------------------------------------------------------------------- the loop
def _token_logps(logits: Tensor, targets: np.ndarray) -> Tensor:
    """log π(target_t) at every position, 0 where the target is -100: (B, T)."""
    B, T, V = logits.shape
    nll = F.cross_entropy(logits.view(B * T, V), Tensor._wrap(targets.reshape(-1)), ignore_index=IGNORE_INDEX,
                          reduction="none")  # (B·T,)
    return -nll.view(B, T)


def _batch(replies: Sequence[Reply], pad_id: int) -> tuple:
    seqs = [r.prompt_ids + r.ids for r in replies]
    T = max(len(s) for s in seqs)
    ids = np.full((len(seqs), T), pad_id, dtype=np.int64)  # (B, T)
    mask = np.zeros((len(seqs), T), dtype=np.int64)
    for j, s in enumerate(seqs):
        ids[j, : len(s)], mask[j, : len(s)] = s, 1
    x, y = response_targets(ids, mask, np.array([len(r.prompt_ids) for r in replies]))
    return x, y, (y != IGNORE_INDEX).astype(np.float64)  # inputs (B, T-1), targets, reply-token mask


class PPOTrainer:
    """PPO on prompts (lists of messages) with a score function.

    ``score_fn(prompt_indices, replies) -> (B,) scores`` gives each reply its sequence reward
    (the reward model's score, or a rule). ``reference`` is the frozen SFT model (a copy is
    taken of ``model`` when None). ``critic``: a ``RewardModel`` copy to train as the critic (the
    book's setup), or None for a value head on the actor. ``step()`` runs one rollout + ``ppo_epochs`` of updates and
    returns (and logs to ``out_dir/metrics.jsonl``) the iteration's statistics.
    """

    def __init__(self, model, tokenizer, prompts: Sequence[list], score_fn: Callable, config: PPOConfig,
                 out_dir: str, reference=None, critic=None):
        self.config = config
        self.tok = tokenizer
        self.prompts = list(prompts)
        if len(self.prompts) < config.batch_size:
            raise ValueError(f"PPOTrainer: {len(self.prompts)} prompts is fewer than one rollout of {config.batch_size}")
        self.reference = reference if reference is not None else copy.deepcopy(model)
        self.ac = ActorCritic(model, critic)
        self.optimizer = AdamW(param_groups_for_weight_decay(self.ac, 0.0), lr=config.lr, betas=(0.9, 0.95))
        self.score_fn = score_fn
        self.rng = np.random.default_rng(config.seed)
        self.iteration = 0
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "metrics.jsonl")
        if os.path.exists(path):  # a fresh run: never append to an earlier run's curves
            os.remove(path)
        self.metrics = MetricsLogger(path)

    @no_grad()
    def _rollout(self):
        cfg = self.config
        idx = self.rng.choice(len(self.prompts), size=cfg.batch_size, replace=False)
        replies = [r[0] for r in generate_replies(self.ac.model, self.tok, [self.prompts[i] for i in idx], n=1,
                                                   temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                                   seed=cfg.seed * 100_003 + self.iteration)]
        keep = [j for j, r in enumerate(replies) if r.ids]
        idx, replies = idx[keep], [replies[j] for j in keep]
        scores = np.asarray(self.score_fn(idx, replies), dtype=np.float64)
        x, y, mask = _batch(replies, self.tok.pad_token_id)
        with self.ac.mode(training=False):
            logits, values = self.ac(x)
            logp = _token_logps(logits, y).data.astype(np.float64) * mask
        with self.reference.mode(training=False):
            ref_logp = _token_logps(self.reference(x).logits, y).data.astype(np.float64) * mask
        values = values.data.astype(np.float64) * mask
        rewards, kl = per_token_rewards(scores, logp, ref_logp, mask, cfg.kl_coef)
        adv, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            a = adv[mask > 0]
            adv = (adv - a.mean()) / (a.std() + 1e-8) * mask
        return dict(x=x, y=y, mask=mask, logp=logp, values=values, adv=adv, returns=returns, scores=scores,
                    kl=kl, replies=replies, idx=idx)

    def step(self) -> dict:
        cfg = self.config
        ro = self._rollout()
        B = len(ro["replies"])
        stats = {"pg_loss": [], "vf_loss": [], "clipfrac": [], "approx_kl": [], "grad_norm": []}
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.ac.train()
        for _ in range(cfg.ppo_epochs):
            order = self.rng.permutation(B)
            for b0 in range(0, B, cfg.mini_batch_size):
                mb = order[b0: b0 + cfg.mini_batch_size]
                cols = int(ro["mask"][mb].sum(0).nonzero()[0].max()) + 1  # drop all-padding columns
                sl = (mb, slice(0, cols))
                logits, values = self.ac(ro["x"][mb, :cols])
                logp = _token_logps(logits, ro["y"][sl])
                pg, vf, st = ppo_losses(logp, values, ro["logp"][sl], ro["values"][sl], ro["adv"][sl],
                                        ro["returns"][sl], ro["mask"][sl], cfg.cliprange, cfg.cliprange_value)
                loss = pg + cfg.vf_coef * vf
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"PPO: the loss is {loss.item()} at iteration {self.iteration + 1}; lower lr")
                loss.backward()
                stats["grad_norm"].append(clip_grad_norm_(params, cfg.grad_clip))
                self.optimizer.step()
                self.optimizer.zero_grad()
                stats["pg_loss"].append(pg.item())
                stats["vf_loss"].append(vf.item())
                stats["clipfrac"].append(st["clipfrac"])
                stats["approx_kl"].append(st["approx_kl"])
        self.iteration += 1
        mask = ro["mask"]
        out = {
            "step": self.iteration, "score": float(ro["scores"].mean()),
            "kl": float(ro["kl"].sum(1).mean()),  # Σ_t (log π - log π_ref) per reply, on the rollout
            "reply_tokens": float(mask.sum(1).mean()),
            "stopped": float(np.mean([r.stopped for r in ro["replies"]])),
            **{k: float(np.mean(v)) for k, v in stats.items()},
        }
        self.metrics.log(out)
        return out

    def train(self, iterations: int, log: Optional[Callable] = None) -> list:
        history = []
        for _ in range(iterations):
            history.append(self.step())
            if log is not None:
                log(history[-1])
        return history

    @property
    def policy(self):
        return self.ac.model

    def config_dict(self) -> dict:
        return asdict(self.config)
