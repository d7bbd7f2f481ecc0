"""Sampling replies from a chat model and scoring them (used for on-policy pairs, PPO rollouts
and the KL to the reference).

A rollout is the policy answering prompts with the KV-cached generator
(``minillm.generation.generate``): the prompt is the SFT chat template up to
``<|im_start|>assistant\\n`` and a reply ends at ``<|im_end|>`` (or at the token budget: a
reply that never stopped).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..autograd import no_grad
from ..generation import generate
from .dpo import sequence_logps

__all__ = ["Reply", "generate_replies", "reply_logps", "kl_to_reference"]


@dataclass
class Reply:
    """One sampled reply: its text, its token ids (``<|im_end|>`` included when the model wrote
    it), the prompt's ids, and whether the model stopped by itself."""

    text: str
    ids: list
    prompt_ids: list
    stopped: bool


def generate_replies(model, tokenizer, prompts: Sequence[list], n: int = 1, temperature: float = 1.0,
                     max_new_tokens: int = 32, seed: int = 0, batch_size: int = 32, top_k=None) -> list:
    """``n`` replies to each prompt (a list of messages), prompt-major: ``out[i]`` is the list of
    the i-th prompt's replies. ``temperature=0`` is greedy (then ``n`` must be 1)."""
    if n < 1 or (temperature == 0 and n > 1):
        raise ValueError(f"generate_replies: n must be >= 1 (and 1 when greedy), got n={n}, temperature={temperature}")
    im_end = tokenizer.token_to_id("<|im_end|>")
    if im_end is None:
        raise ValueError("generate_replies: the tokenizer has no <|im_end|> token (a chat model is needed)")
    budget = model.args.max_seq_len - max_new_tokens
    encoded = [tokenizer.encode_chat(list(p), add_generation_prompt=True)[-budget:] for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # similar lengths share a batch
    out = [[None] * n for _ in encoded]
    rows_per_batch = max(1, batch_size // n)
    with no_grad():
        for b0 in range(0, len(order), rows_per_batch):
            idx = order[b0: b0 + rows_per_batch]
            new = generate(model, [encoded[i] for i in idx], max_new_tokens, temperature=temperature, top_k=top_k,
                           eos_token_id=im_end, pad_token_id=tokenizer.pad_token_id, num_return_sequences=n,
                           seed=seed + b0)
            for j, ids in enumerate(new):
                i, k = idx[j // n], j % n
                stopped = len(ids) < max_new_tokens  # generate() drops the EOS it stopped at
                full = list(ids) + ([im_end] if stopped else [])
                out[i][k] = Reply(tokenizer.decode(list(ids), skip_special_tokens=True), full, encoded[i], stopped)
    return out


@no_grad()
def reply_logps(model, replies: Sequence[Reply], pad_id: int, batch_size: int = 32) -> np.ndarray:
    """Summed log-prob of each reply's tokens under ``model`` (prompt masked): (N,)."""
    out = np.zeros(len(replies))
    with model.mode(training=False):
        for b0 in range(0, len(replies), batch_size):
            chunk = replies[b0: b0 + batch_size]
            seqs = [r.prompt_ids + r.ids for r in chunk]
            T = max(len(s) for s in seqs)
            ids = np.full((len(seqs), T), pad_id, dtype=np.int64)  # (B, T) right-padded
            mask = np.zeros((len(seqs), T), dtype=np.int64)
            for j, s in enumerate(seqs):
                ids[j, : len(s)], mask[j, : len(s)] = s, 1
            lens = np.array([len(r.prompt_ids) for r in chunk])
            out[b0: b0 + len(chunk)] = sequence_logps(model, ids, mask, lens).data
    return out


def kl_to_reference(policy, reference, tokenizer, prompts: Sequence[list], max_new_tokens: int = 32,
                    seed: int = 0) -> dict:
    """KL(π ‖ π_ref) per reply, estimated on one sampled reply per prompt (y ~ π at temperature 1):
    the mean of log π(y|x) - log π_ref(y|x), in nats. Also returns the mean reply length."""
    replies = [r[0] for r in generate_replies(policy, tokenizer, prompts, n=1, temperature=1.0,
                                               max_new_tokens=max_new_tokens, seed=seed)]
    replies = [r for r in replies if r.ids]
    lp = reply_logps(policy, replies, tokenizer.pad_token_id)
    lr = reply_logps(reference, replies, tokenizer.pad_token_id)
    return {"kl": float(np.mean(lp - lr)), "n": len(replies), "mean_tokens": float(np.mean([len(r.ids) for r in replies]))}
