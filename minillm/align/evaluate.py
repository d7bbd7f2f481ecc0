"""Held-out correctness of a chat model, greedy and sampled, judged by the world's answers.

Exact match of the *greedy* reply is what ``pipeline.evaluate_sft`` reports. It scores the
mode of the model's distribution only. A chat model is used by *sampling* it (temperature
0.7–1.0), and the on-policy pairs of DPO and the rollouts of PPO are sampled too, so what
preference training changes first is the rest of the distribution: how often a sample is
wrong when the argmax is already right. ``correctness`` measures both::

    greedy = correctness(model, tok, records)                            # temperature 0, 1 reply
    sampled = correctness(model, tok, records, temperature=1.0, samples=8)
    d, se = paired_difference(after["per_prompt"], before["per_prompt"])  # the gain and its error

Every reply is labelled by ``label_reply`` (correct, or which mistake: wrong entity,
arithmetic, never stops, wrong language, other), so the mistakes are counted by the failure
modes the preference pairs were made of. The standard error is over *prompts* (the mean of a
prompt's samples is one observation), because samples of one prompt are not independent.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..eval.metrics import paired_difference  # re-exported: preference results use it most
from .preference import MISTAKES, _check_record, label_reply
from .rollout import generate_replies

__all__ = ["correctness", "paired_difference"]


def correctness(model, tokenizer, records: Sequence[dict], temperature: float = 0.0, samples: int = 1,
                max_new_tokens: int = 24, seed: int = 0, batch_size: int = 32) -> dict:
    """The share of correct replies to SFT ``records`` of the world (``{"messages": [..., user,
    assistant], "meta": {"skill"}}``; the assistant message is the reference answer).

    ``temperature=0`` is greedy (``samples`` must be 1); otherwise ``samples`` replies per prompt
    at that temperature (seeded: the same ``seed`` draws the same random numbers for every model).
    Returns ``{"acc", "se", "n", "samples", "temperature", "per_prompt": (N,) array of each
    prompt's share of correct replies, "kinds": {label: share of all replies} (``"correct"`` and
    each of ``MISTAKES``), "skills": {skill: acc}}``.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"correctness: samples must be an int >= 1, got {samples!r}")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature < 0:
        raise ValueError(f"correctness: temperature must be a number >= 0, got {temperature!r}")
    if temperature == 0 and samples != 1:
        raise ValueError(f"correctness: greedy decoding (temperature 0) gives one reply, got samples={samples}")
    records = list(records)
    if not records:
        raise ValueError("correctness: no records")
    for i, rec in enumerate(records):
        _check_record(rec, i, "correctness")
    prompts = [r["messages"][:-1] for r in records]
    replies = generate_replies(model, tokenizer, prompts, n=samples, temperature=temperature,
                               max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size)
    labels = [[label_reply(r.text, rec["messages"][-1]["content"], rec["messages"][-2]["content"], r.stopped)
               for r in reps] for rec, reps in zip(records, replies)]
    right = np.array([[lab == "correct" for lab in row] for row in labels], dtype=np.float64)  # (N, samples)
    per_prompt = right.mean(axis=1)  # (N,)
    flat = [lab for row in labels for lab in row]
    skills = [(r.get("meta") or {}).get("skill") for r in records]
    n = len(records)
    return {
        "acc": float(per_prompt.mean()),
        "se": float(per_prompt.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        "n": n, "samples": samples, "temperature": float(temperature), "per_prompt": per_prompt,
        "kinds": {k: flat.count(k) / len(flat) for k in ("correct",) + MISTAKES},
        "skills": {s: float(per_prompt[[x == s for x in skills]].mean()) for s in sorted(set(skills) - {None})},
    }

