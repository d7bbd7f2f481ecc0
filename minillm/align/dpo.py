"""Direct Preference Optimization (DPO; Rafailov et al. 2023; the book's 4.2.3 and 6.4).

RLHF trains a reward model and then runs RL against it. DPO skips both: the optimal policy of
the KL-regularised RL objective satisfies r(x, y) = β·log(π(y|x) / π_ref(y|x)) + const, so the
Bradley–Terry loss of the reward model can be written with the policy itself::

    loss = -log σ( β·[(log π(y_w|x) - log π_ref(y_w|x)) - (log π(y_l|x) - log π_ref(y_l|x))] )

``log π(y|x)`` is the *summed* log-probability of the reply's tokens (prompt tokens masked,
``sequence_logps``); π_ref is the frozen SFT model. Since the reference never changes, its
log-probs are computed once before training (``precompute_reference_logps``), so the reference
model is not even kept in memory. With LoRA (``minillm.peft``) the reference is the same
weights with the adapters switched off (``PeftModel.disable_adapter()``): no second copy.

We log what TRL's ``DPOTrainer`` logs: ``loss``, ``rewards/chosen`` = β·(log π - log π_ref)(y_w),
``rewards/rejected``, ``rewards/accuracies`` (chosen reward > rejected reward) and
``rewards/margins`` (their difference), plus ``logps/chosen`` and ``logps/rejected``.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import numpy as np

from ..autograd import no_grad
from ..data import DataLoader
from ..data.sft import IGNORE_INDEX
from ..nn import functional as F
from ..tensor import Tensor
from ..train import Trainer, TrainConfig
from .preference import PreferenceDataset, collate_pairs

__all__ = ["dpo_loss", "sequence_logps", "response_targets", "precompute_reference_logps", "dpo_forward",
           "train_dpo", "DPOOutput"]


def response_targets(input_ids: np.ndarray, attention_mask: np.ndarray, prompt_lens: np.ndarray) -> tuple:
    """``(inputs, targets)`` for summed reply log-probs of right-padded rows: inputs
    ``ids[:, :-1]``, targets ``ids[:, 1:]`` with -100 on prompt tokens and padding."""
    ids = np.asarray(input_ids)
    x = ids[:, :-1]  # (B, T-1)
    y = ids[:, 1:].copy()  # (B, T-1): y[t] is the token after x[..t]
    y[np.asarray(attention_mask)[:, 1:] == 0] = IGNORE_INDEX
    t = np.arange(y.shape[1])[None, :]
    y[t < (np.asarray(prompt_lens)[:, None] - 1)] = IGNORE_INDEX  # targets before position prompt_len-1 are prompt
    return x, y


def sequence_logps(model, input_ids, attention_mask, prompt_lens) -> Tensor:
    """Σ_t log π(y_t | x, y_<t) over each row's reply tokens: (B,). Differentiable.

    One fused ``F.cross_entropy(reduction="none")`` gives -log p of every target (0 where the
    target is -100), so no (B, T, vocab) log-softmax array is built.
    """
    x, y = response_targets(input_ids, attention_mask, prompt_lens)
    if not (y != IGNORE_INDEX).any(axis=1).all():
        raise ValueError("sequence_logps: a row has no reply token (the prompt fills it)")
    logits = model(x).logits  # (B, T-1, vocab); right padding never changes the real positions
    B, T, V = logits.shape
    nll = F.cross_entropy(logits.view(B * T, V), Tensor._wrap(y.reshape(-1)), ignore_index=IGNORE_INDEX,
                          reduction="none")  # (B·T,)
    return -nll.view(B, T).sum(dim=1)  # (B,)


LOSS_TYPES = ("sigmoid", "ipo")


def check_loss_settings(beta, loss_type: str, label_smoothing, who: str = "dpo_loss") -> None:
    """ValueError naming the bad value of DPO's β, ``loss_type`` or ``label_smoothing``."""
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not beta > 0:
        raise ValueError(f"{who}: beta must be a number > 0, got {beta!r}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"{who}: loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) or not 0 <= label_smoothing < 0.5:
        raise ValueError(f"{who}: label_smoothing must be a number in [0, 0.5), got {label_smoothing!r}")
    if loss_type == "ipo" and label_smoothing:
        raise ValueError(f"{who}: label_smoothing is for loss_type='sigmoid' (cDPO); IPO has no labels to smooth")


def dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps, ref_rejected_logps,
             beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> tuple:
    """The DPO loss and the implicit rewards, as TRL's ``DPOTrainer.dpo_loss``.

    With h = (log π(y_w) - log π_ref(y_w)) - (log π(y_l) - log π_ref(y_l)):

    * ``loss_type="sigmoid"`` (DPO): -log σ(β·h); with ``label_smoothing`` ε > 0 it is
      conservative DPO (cDPO: the labels are wrong with probability ε),
      -(1 - ε)·log σ(β·h) - ε·log σ(-β·h), whose optimum is a *finite* margin.
    * ``loss_type="ipo"`` (IPO, Azar et al. 2023, eq. 17): (h - 1/(2β))², a squared loss that
      pulls the margin to 1/(2β) instead of pushing the rejected reply's log-prob to -∞.

    policy_*: (B,) log-probs of the replies under the policy (Tensors, with grad);
    ref_*: (B,) the same under the frozen reference (arrays or Tensors; no grad flows there).
    Returns ``(loss, chosen_rewards, rejected_rewards)``: the mean loss (scalar Tensor) and
    β·(log π - log π_ref) of each side ((B,) arrays).
    """
    check_loss_settings(beta, loss_type, label_smoothing, "dpo_loss")
    ref_c = np.asarray(ref_chosen_logps.data if isinstance(ref_chosen_logps, Tensor) else ref_chosen_logps)
    ref_r = np.asarray(ref_rejected_logps.data if isinstance(ref_rejected_logps, Tensor) else ref_rejected_logps)
    shapes = {tuple(policy_chosen_logps.shape), tuple(policy_rejected_logps.shape), ref_c.shape, ref_r.shape}
    if len(shapes) != 1:
        raise ValueError(f"dpo_loss: all four log-prob arrays must have the same (B,) shape, got {sorted(shapes)}")
    if not (np.isfinite(ref_c).all() and np.isfinite(ref_r).all()):
        raise ValueError("dpo_loss: the reference log-probs are not finite (were they precomputed?)")
    dtype = policy_chosen_logps.dtype
    ref_margin = Tensor._wrap((ref_c - ref_r).astype(dtype))  # (B,) constant
    logits = (policy_chosen_logps - policy_rejected_logps) - ref_margin  # (B,) the log-ratio difference
    if loss_type == "ipo":
        loss = ((logits - 1.0 / (2.0 * beta)) ** 2).mean()
    elif label_smoothing:
        loss = (-(1.0 - label_smoothing) * F.logsigmoid(beta * logits) - label_smoothing * F.logsigmoid(-beta * logits)).mean()
    else:
        loss = -F.logsigmoid(beta * logits).mean()
    chosen_rewards = beta * (policy_chosen_logps.data - ref_c)  # (B,)
    rejected_rewards = beta * (policy_rejected_logps.data - ref_r)
    return loss, chosen_rewards, rejected_rewards


@no_grad()
def precompute_reference_logps(model, dataset: PreferenceDataset, pad_id: int, batch_size: int = 32) -> None:
    """Fill ``dataset.ref_chosen_logps`` / ``ref_rejected_logps`` with the reference's log-probs.

    ``model`` is the reference: the SFT model *before* DPO changes it (call this first), or a
    ``PeftModel``, whose adapters are switched off for the computation (the base is the SFT
    model, so no copy of the weights is needed).
    """
    disable = getattr(model, "disable_adapter", None)
    ctx = disable() if disable is not None else contextlib.nullcontext()
    with ctx, model.mode(training=False):
        for b0 in range(0, len(dataset), batch_size):
            idx = list(range(b0, min(b0 + batch_size, len(dataset))))
            batch = collate_pairs([dataset[i] for i in idx], pad_id)
            lp = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["prompt_lens"]).data
            n = len(idx)
            dataset.ref_chosen_logps[idx] = lp[:n]
            dataset.ref_rejected_logps[idx] = lp[n:]


@dataclass
class DPOOutput:
    loss: Tensor
    metrics: dict


def dpo_forward(model, batch: dict, beta: float = 0.1, rpo_alpha: float = 0.0, loss_type: str = "sigmoid",
                label_smoothing: float = 0.0) -> DPOOutput:
    """One DPO step on a ``collate_pairs`` batch (chosen rows first, reference log-probs filled).

    ``rpo_alpha`` > 0 adds that much of the chosen replies' mean token NLL (TRL's ``rpo_alpha``,
    "RPO"): it keeps the likelihood of the preferred answers from drifting down. ``loss_type``
    and ``label_smoothing``: see ``dpo_loss``; for "ipo" the log-probs (policy and reference)
    are per-token means, as in TRL, so the target margin 1/(2β) does not depend on length.
    """
    logps = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["prompt_lens"])  # (2B,)
    B = logps.shape[0] // 2
    ref = batch["ref_logps"]
    n_tokens = (response_targets(batch["input_ids"], batch["attention_mask"], batch["prompt_lens"])[1]
                != IGNORE_INDEX).sum(axis=1)  # (2B,) reply tokens per row
    policy = logps
    if loss_type == "ipo":
        policy, ref = logps / Tensor._wrap(n_tokens.astype(logps.dtype)), ref / n_tokens
    loss, rc, rr = dpo_loss(policy[:B], policy[B:], ref[:B], ref[B:], beta, loss_type, label_smoothing)
    if rpo_alpha:
        loss = loss + rpo_alpha * (-logps[:B].sum() / float(n_tokens[:B].sum()))
    metrics = {
        "rewards/chosen": float(rc.mean()), "rewards/rejected": float(rr.mean()),
        "rewards/accuracies": float((rc > rr).mean()), "rewards/margins": float((rc - rr).mean()),
        "logps/chosen": float(logps.data[:B].mean()), "logps/rejected": float(logps.data[B:].mean()),
    }
    return DPOOutput(loss, metrics)


def train_dpo(model, tokenizer, train_pairs, val_pairs, config: TrainConfig, beta: float = 0.1,
              batch_size: int = 16, max_length: int = 256, rpo_alpha: float = 0.0, ref_model=None,
              loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> Trainer:
    """DPO with the Trainer: tokenize, precompute the reference log-probs with ``ref_model``
    (default: ``model`` as it is now, i.e. the SFT model, or a PeftModel's base), then train
    ``model`` (in place). ``val_pairs`` may be None or empty: no held-out evaluation."""
    max_length = min(max_length, model.args.max_seq_len)
    pad = tokenizer.pad_token_id
    reference = model if ref_model is None else ref_model
    check_loss_settings(beta, loss_type, label_smoothing, "train_dpo")  # before the reference log-probs are computed
    train_ds = PreferenceDataset(train_pairs, tokenizer, max_length)
    if len(train_ds) < batch_size:
        raise ValueError(f"train_dpo: {len(train_ds)} training pairs is fewer than one batch of {batch_size}")
    precompute_reference_logps(reference, train_ds, pad)
    collate = functools.partial(collate_pairs, pad_id=pad)
    train_loader = DataLoader(train_ds, batch_size, shuffle=True, seed=config.seed, drop_last=True, collate_fn=collate)
    val_loader = None
    if val_pairs:
        val_ds = PreferenceDataset(val_pairs, tokenizer, max_length)
        precompute_reference_logps(reference, val_ds, pad)
        val_loader = DataLoader(val_ds, min(batch_size, len(val_ds)), shuffle=False, drop_last=True, collate_fn=collate)
    forward = functools.partial(dpo_forward, beta=beta, rpo_alpha=rpo_alpha, loss_type=loss_type,
                                label_smoothing=label_smoothing)
    trainer = Trainer(model, None, train_loader, val_loader, config, forward_fn=forward)
    trainer.train()
    return trainer
