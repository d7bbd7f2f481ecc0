"""The reward model (Happy LLM 4.2.3 "RLHF": 奖励模型 RM).

A reward model reads a prompt and a reply and gives one number: how good the reply is. It is
the SFT model with its language-model head swapped for a *scalar* head::

    h = backbone.hidden_states(input_ids)          # (B, T, dim): the LLaMA trunk, initialised from SFT
    r = score(h[b, last non-pad token of row b])   # (B,): one number per sequence

The last real token is the reply's ``<|im_end|>``: by then the causal model has read the
whole prompt and reply (Hugging Face's ``LlamaForSequenceClassification`` reads the same
position). It is trained on comparisons with the Bradley–Terry loss

    loss = -log σ(r_chosen - r_rejected)

the negative log-likelihood of "chosen beats rejected" when P(y_w ≻ y_l) = σ(r_w - r_l)
(InstructGPT, eq. 1). Only differences of rewards matter, so a constant shift is free.
``F.logsigmoid`` keeps the loss finite for any margin (see ``minillm/ops/elementwise.py``).
Its quality is measured by held-out pairwise accuracy: the share of unseen pairs where
``r_chosen > r_rejected``.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..autograd import no_grad
from ..data import DataLoader
from ..nn import functional as F
from ..tensor import Tensor
from ..train import Trainer, TrainConfig
from .preference import PreferenceDataset, collate_pairs, tokenize_reply

__all__ = ["RewardModel", "bradley_terry_loss", "last_token_index", "reward_forward", "train_reward_model",
           "pairwise_accuracy", "score_replies", "save_reward_model", "load_reward_model", "SCORE_WEIGHTS_NAME"]

SCORE_WEIGHTS_NAME = "score.safetensors"  # the scalar head, beside the backbone's model.safetensors


def last_token_index(attention_mask) -> np.ndarray:
    """Index of each row's last real token (right padding): ``attention_mask.sum(1) - 1``, (B,).
    Refuses rows with no real token and masks that are not right-padded (a 0 before a 1)."""
    m = np.asarray(attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask)
    if m.ndim != 2:
        raise ValueError(f"attention_mask must be (batch, seq_len), got shape {m.shape}")
    n = m.astype(bool).sum(1)
    if (n == 0).any():
        raise ValueError(f"attention_mask: row(s) {np.nonzero(n == 0)[0].tolist()} have no real token")
    if (m.astype(bool) != (np.arange(m.shape[1])[None, :] < n[:, None])).any():
        raise ValueError("attention_mask must be right-padded (1s, then 0s) for a reward model")
    return n - 1


class RewardModel(nn.Module):
    """A LLaMA backbone with a scalar head: ``rm(input_ids, attention_mask) -> rewards (B,)``.

    ``RewardModel.from_sft(model)`` copies the SFT model (the copy is trained; the SFT model
    is left alone). The LM head ``output`` is kept (unused) so the backbone stays a whole
    ``Transformer`` that loads and saves like any other.
    """

    def __init__(self, backbone):
        super().__init__()
        if not hasattr(backbone, "hidden_states"):
            raise TypeError(f"RewardModel: the backbone needs hidden_states() (a llama Transformer), got {type(backbone).__name__}")
        self.model = backbone
        self.args = backbone.args
        self.score = nn.Linear(backbone.args.dim, 1, bias=False)  # Hugging Face's name for the head
        nn.init.normal_(self.score.weight, mean=0.0, std=1.0 / np.sqrt(backbone.args.dim + 1))
        self.score.to(backbone.output.weight.dtype)  # a float64 backbone (gradchecks) gets a float64 head

    @classmethod
    def from_sft(cls, sft_model) -> "RewardModel":
        base = getattr(sft_model, "base_model", sft_model)  # a PeftModel: its base (with adapters as they are)
        return cls(copy.deepcopy(base))

    def forward(self, input_ids, attention_mask=None) -> Tensor:
        """input_ids: (B, T) right-padded ids; attention_mask: (B, T) of 1/0 (None: no padding).
        Returns rewards (B,)."""
        ids = np.asarray(input_ids.data if isinstance(input_ids, Tensor) else input_ids)
        if attention_mask is None:
            attention_mask = np.ones(ids.shape, dtype=np.int64)
        last = last_token_index(attention_mask)  # (B,)
        if ids.ndim != 2 or np.asarray(attention_mask).shape != ids.shape:
            raise ValueError(f"RewardModel: input_ids {ids.shape} and attention_mask {np.shape(attention_mask)} must be equal (B, T)")
        # right padding + causal attention: the padding after a token never changes its state
        h = self.model.hidden_states(ids)  # (B, T, dim)
        h_last = h[np.arange(ids.shape[0]), last]  # (B, T, dim) -> (B, dim)
        return self.score(h_last).view(-1)  # (B, 1) -> (B,)


def bradley_terry_loss(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """``mean(-log σ(r_chosen - r_rejected))`` over the pairs (both (B,))."""
    if tuple(chosen_rewards.shape) != tuple(rejected_rewards.shape):
        raise ValueError(f"bradley_terry_loss: chosen {tuple(chosen_rewards.shape)} and rejected "
                         f"{tuple(rejected_rewards.shape)} rewards must have the same shape")
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


@dataclass
class RewardOutput:
    loss: Tensor
    metrics: dict


def reward_forward(model: RewardModel, batch: dict) -> RewardOutput:
    """One reward-model step on a ``collate_pairs`` batch (chosen rows first): the
    Bradley–Terry loss, with accuracy and margin logged beside it."""
    r = model(batch["input_ids"], batch["attention_mask"])  # (2B,)
    B = r.shape[0] // 2
    rc, rr = r[:B], r[B:]  # (B,), (B,)
    loss = bradley_terry_loss(rc, rr)
    margin = rc.data - rr.data
    return RewardOutput(loss, {"accuracy": float((margin > 0).mean()), "margin": float(margin.mean()),
                               "reward_chosen": float(rc.data.mean()), "reward_rejected": float(rr.data.mean())})


def train_reward_model(rm: RewardModel, tokenizer, train_pairs, val_pairs, config: TrainConfig,
                       batch_size: int = 16, max_length: int = 256) -> Trainer:
    """Train ``rm`` on pairs with the Trainer (AdamW, warmup + cosine, clipping, metrics.jsonl)."""
    max_length = min(max_length, rm.args.max_seq_len)
    train_ds = PreferenceDataset(train_pairs, tokenizer, max_length)
    val_ds = PreferenceDataset(val_pairs, tokenizer, max_length)
    collate = functools.partial(collate_pairs, pad_id=tokenizer.pad_token_id)
    if len(train_ds) < batch_size:
        raise ValueError(f"train_reward_model: {len(train_ds)} training pairs is fewer than one batch of {batch_size}")
    train_loader = DataLoader(train_ds, batch_size, shuffle=True, seed=config.seed, drop_last=True, collate_fn=collate)
    val_loader = DataLoader(val_ds, min(batch_size, len(val_ds)), shuffle=False, drop_last=True, collate_fn=collate)
    trainer = Trainer(rm, None, train_loader, val_loader, config, forward_fn=reward_forward)
    trainer.train()
    return trainer


@no_grad()
def _rewards(rm: RewardModel, tokenizer, pairs, max_length: int, batch_size: int) -> tuple:
    ds = PreferenceDataset(pairs, tokenizer, min(max_length, rm.args.max_seq_len))
    rc, rr = [], []
    with rm.mode(training=False):
        for b0 in range(0, len(ds), batch_size):
            batch = collate_pairs([ds[i] for i in range(b0, min(b0 + batch_size, len(ds)))], tokenizer.pad_token_id)
            r = rm(batch["input_ids"], batch["attention_mask"]).data  # (2B,)
            rc.append(r[: len(r) // 2])
            rr.append(r[len(r) // 2:])
    return np.concatenate(rc), np.concatenate(rr)


def pairwise_accuracy(rm: RewardModel, tokenizer, pairs, max_length: int = 256, batch_size: int = 32) -> dict:
    """Held-out pairwise accuracy: the share of pairs with ``r(chosen) > r(rejected)`` (a tie
    counts half), overall and per mistake kind (``pair.meta["kind"]``)."""
    rc, rr = _rewards(rm, tokenizer, pairs, max_length, batch_size)
    win = (rc > rr) + 0.5 * (rc == rr)
    out = {"all": float(win.mean()), "n": len(pairs), "margin": float((rc - rr).mean())}
    kinds = [p.meta.get("kind") for p in pairs]
    for k in dict.fromkeys(kinds):
        if k is not None:
            sel = np.array([kk == k for kk in kinds])
            out[k] = float(win[sel].mean())
    return out


@no_grad()
def score_replies(rm: RewardModel, tokenizer, prompts, replies, max_length: int = 256, batch_size: int = 32) -> np.ndarray:
    """The reward of each ``(prompt messages, reply)``; (N,) float."""
    if len(prompts) != len(replies):
        raise ValueError(f"score_replies: {len(prompts)} prompts but {len(replies)} replies")
    seqs = [tokenize_reply(list(p), r, tokenizer, min(max_length, rm.args.max_seq_len))[0] for p, r in zip(prompts, replies)]
    out = []
    with rm.mode(training=False):
        for b0 in range(0, len(seqs), batch_size):
            chunk = seqs[b0: b0 + batch_size]
            T = max(len(s) for s in chunk)
            ids = np.full((len(chunk), T), tokenizer.pad_token_id, dtype=np.int64)  # (B, T)
            mask = np.zeros((len(chunk), T), dtype=np.int64)
            for r, s in enumerate(chunk):
                ids[r, : len(s)], mask[r, : len(s)] = s, 1
            out.append(rm(ids, mask).data)
    return np.concatenate(out) if out else np.zeros(0)


def save_reward_model(rm: RewardModel, directory) -> None:
    """A model directory for the backbone (``config.json`` + ``model.safetensors``, loadable by
    ``minillm.io.load_model``) plus ``score.safetensors`` for the scalar head."""
    import os

    from ..io import save_model
    from ..io.safetensors import save_safetensors

    save_model(rm.model, directory)
    save_safetensors({"score.weight": rm.score.weight}, os.path.join(os.fspath(directory), SCORE_WEIGHTS_NAME),
                     metadata={"format": "minillm reward model head"})


def load_reward_model(directory) -> RewardModel:
    """The ``RewardModel`` that ``save_reward_model`` wrote (``ValueError`` if the head is missing
    or does not fit the backbone)."""
    import os

    from ..io import load_model
    from ..io.safetensors import load_safetensors

    path = os.path.join(os.fspath(directory), SCORE_WEIGHTS_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: {directory} is not a reward model directory (save_reward_model writes one)")
    rm = RewardModel(load_model(directory))
    w = load_safetensors(path).get("score.weight")
    if w is None or w.shape != rm.score.weight.shape:
        raise ValueError(f"{path}: expected a 'score.weight' of shape {rm.score.weight.shape}, got "
                         f"{None if w is None else w.shape}")
    rm.score.weight.data[...] = w
    return rm
