"""Online (iterative) DPO: the preference pairs are re-sampled from the *current* policy each round.

Offline DPO trains on pairs made once, from the SFT model. Online / iterative DPO (Xu et al.
2023, "Some things are more CRINGE than others"; Guo et al. 2024, "Direct language model
alignment from online AI feedback"; the iterative DPO recipes of Snorkel and Meta) repeats::

    for each round:
        sample k replies per training prompt from the policy as it is now (temperature 1)
        label each with the judge (here: the world's answer, ``label_reply``)
        pairs = (a right sample, a wrong sample) of the same prompt: both are the policy's own
        DPO for one short round against a reference
            reference="round": the policy at the start of the round (the usual iterative DPO)
            reference="sft":   the model before round 1, for every round

Both replies of a pair are this policy's samples for this prompt (``on_policy_pairs(...,
sampled_chosen_only=True)``), so the rejected reply is a mistake the policy actually makes now,
not the world's answer against a reply of a model it no longer is. Sampling reuses
``rollout.generate_replies`` and labelling ``preference.on_policy_pairs``; training is
``dpo.train_dpo`` (so ``rpo_alpha`` works here too, and β ≈ 0 with ``rpo_alpha=1`` is the
rejection-sampling fine-tuning control: the NLL of the same kind of chosen replies, no
preference term).
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..train import TrainConfig
from ..train.metrics import read_metrics
from .dpo import check_loss_settings, train_dpo
from .preference import MISTAKES, _check_record, on_policy_pairs
from .rollout import generate_replies

__all__ = ["OnlineDPOConfig", "train_online_dpo"]


@dataclass
class OnlineDPOConfig:
    """Settings of ``train_online_dpo`` (TRL's ``OnlineDPOConfig`` names where they exist)."""

    rounds: int = 3  # sample -> label -> DPO, this many times
    prompts_per_round: int = 2000  # fresh training prompts each round (the list wraps around)
    samples: int = 4  # replies sampled per prompt (TRL: num_generations)
    temperature: float = 1.0
    max_new_tokens: int = 24
    max_pairs_per_prompt: int = 4  # one pair per distinct wrong sample, up to this many
    own_chosen_only: bool = True  # False: a prompt never answered right gets the world's answer as chosen
    kinds: Optional[tuple] = None  # keep only pairs whose rejected reply is one of these MISTAKES (None: all)
    beta: float = 0.1
    loss_type: str = "sigmoid"  # "sigmoid" (DPO; cDPO with label_smoothing > 0) or "ipo"
    label_smoothing: float = 0.0
    rpo_alpha: float = 0.0  # > 0: add the chosen replies' NLL (RPO)
    reference: str = "round"  # "round": the policy at the round's start; "sft": the starting model
    lr: float = 1e-4
    batch_size: int = 16
    epochs: int = 1  # passes over each round's pairs
    seed: int = 0

    def __post_init__(self):
        for name in ("rounds", "prompts_per_round", "samples", "max_new_tokens", "max_pairs_per_prompt", "batch_size",
                     "epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"OnlineDPOConfig: {name} must be an int >= 1, got {v!r}")
        if self.samples < 2:
            raise ValueError(f"OnlineDPOConfig: samples must be >= 2 (a pair needs a right and a wrong sample), "
                             f"got {self.samples}")
        if self.kinds is not None:
            bad = [k for k in self.kinds if k not in MISTAKES]
            if bad or not self.kinds:
                raise ValueError(f"OnlineDPOConfig: kinds must be some of {MISTAKES}, got {self.kinds!r}")
        if self.reference not in ("round", "sft"):
            raise ValueError(f"OnlineDPOConfig: reference must be 'round' or 'sft', got {self.reference!r}")
        for name in ("temperature", "lr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"OnlineDPOConfig: {name} must be a number > 0, got {v!r}")
        check_loss_settings(self.beta, self.loss_type, self.label_smoothing, "OnlineDPOConfig")
        if isinstance(self.rpo_alpha, bool) or not isinstance(self.rpo_alpha, (int, float)) or self.rpo_alpha < 0:
            raise ValueError(f"OnlineDPOConfig: rpo_alpha must be a number >= 0, got {self.rpo_alpha!r}")


def train_online_dpo(model, tokenizer, records: Sequence[dict], config: OnlineDPOConfig, out_dir: str,
                     progress: bool = False, overwrite: bool = False,
                     log: Optional[Callable[[dict], None]] = None) -> list:
    """Train ``model`` in place with ``config.rounds`` rounds of online DPO on the SFT
    ``records`` of the world (``{"messages": [..., user, assistant]}``; the assistant message is
    the answer the judge compares with). Round r uses the next ``prompts_per_round`` records
    and writes its Trainer run to ``out_dir/round{r}``.

    Returns one dict per round: ``{"round", "prompts", "pairs", "sampled_correct"`` (the share of
    the round's sampled replies that were right: the online reward, measured before the
    round trains), ``"replies"`` (labels counted), ``"steps"``, ``"loss"``,
    ``"rewards/margins"``, ``"rewards/accuracies"`` (the round's last logged training values),
    ``"seconds"}``. ``log`` is called with each dict as it is made.
    """
    records = list(records)
    if not records:
        raise ValueError("train_online_dpo: no records")
    for i, rec in enumerate(records):
        _check_record(rec, i, "train_online_dpo")
    cfg = config
    lora = getattr(model, "disable_adapter", None) is not None
    if lora and cfg.reference == "round":
        raise ValueError("train_online_dpo: a PeftModel's reference is its base with the adapters off, i.e. the "
                         "starting model: use reference='sft'")
    # reference="sft": a frozen copy precomputes every round's reference log-probs (LoRA: the base, adapters off);
    # reference="round": None, so train_dpo precomputes them with the policy as it is when the round starts
    sft = copy.deepcopy(model) if cfg.reference == "sft" and not lora else None
    history = []
    for r in range(cfg.rounds):
        t0 = time.time()
        start = (r * cfg.prompts_per_round) % len(records)
        chunk = [records[(start + j) % len(records)] for j in range(min(cfg.prompts_per_round, len(records)))]
        prompts = [rec["messages"][:-1] for rec in chunk]
        replies = generate_replies(model, tokenizer, prompts, n=cfg.samples, temperature=cfg.temperature,
                                   max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + 1000 * r)
        pairs, stats = on_policy_pairs(chunk, replies, seed=cfg.seed + r, max_pairs_per_prompt=cfg.max_pairs_per_prompt,
                                       sampled_chosen_only=cfg.own_chosen_only)
        if cfg.kinds is not None:
            pairs = [p for p in pairs if p.meta["kind"] in cfg.kinds]
        total = sum(stats.values())
        row = {"round": r + 1, "prompts": len(chunk), "pairs": len(pairs), "sampled_correct": stats["correct"] / total,
               "replies": stats}
        if len(pairs) < cfg.batch_size:
            raise ValueError(f"train_online_dpo: round {r + 1} gave {len(pairs)} pairs, fewer than one batch of "
                             f"{cfg.batch_size}: the policy got (nearly) every prompt all right or all wrong"
                             + (f", or few mistakes were of kinds {cfg.kinds}" if cfg.kinds else "")
                             + "; raise prompts_per_round or samples")
        steps = max(1, cfg.epochs * (len(pairs) // cfg.batch_size))
        tc = TrainConfig(out_dir=os.path.join(out_dir, f"round{r + 1}"), max_steps=steps, lr=cfg.lr,
                         min_lr=cfg.lr / 10, warmup_steps=max(1, steps // 10), eval_interval=0,
                         checkpoint_interval=0, keep_last=1, log_interval=max(1, min(10, steps // 4)),
                         progress=progress, plot=False, overwrite=overwrite, seed=cfg.seed + r)
        trainer = train_dpo(model, tokenizer, pairs, None, tc, beta=cfg.beta, batch_size=cfg.batch_size,
                            rpo_alpha=cfg.rpo_alpha, ref_model=sft, loss_type=cfg.loss_type,
                            label_smoothing=cfg.label_smoothing)  # ref_model None: the policy as it is now
        logged = [m for m in read_metrics(trainer.metrics.path) if "rewards/margins" in m]
        last = logged[-1] if logged else {}
        row.update(steps=steps, loss=last.get("train_loss"), seconds=time.time() - t0,
                   **{k: last.get(k) for k in ("rewards/margins", "rewards/accuracies")})
        history.append(row)
        if log is not None:
            log(row)
    return history
