"""Exact-match scoring of short answers (Happy LLM 7.1 evaluation; used after SFT in 6.2).

A short-answer task (reading QA, translation of one word, arithmetic) is scored by comparing
the model's reply with the reference after a light normalisation, so "The market." and
"the market" count as the same answer, and so do "市场。" and "市场":

==========================  ==========================================================
``normalize_answer(text)``  NFKC, casefold, collapse whitespace, drop trailing punctuation
``exact_match(pred, ref)``  ``normalize_answer(pred) == normalize_answer(ref)``
``exact_match_accuracy``    the share of exact matches, overall and per group (e.g. skill)
``score_sft``               the same for SFT records: the reference is each record's last
                            assistant reply, the group its ``meta["skill"]``
==========================  ==========================================================

A worked example::

    >>> exact_match_accuracy(["the market", "12", "猫"], ["The market.", "13", "猫。"], groups=["qa", "math", "translate"])
    {'all': 0.6666666666666666, 'qa': 1.0, 'math': 0.0, 'translate': 1.0, 'n': 3}

The SFT records come from ``minillm.data`` (``generate_sft(split="val")`` or a user's
``.jsonl``); this module only reads them, so evaluation sits above the data layer.
"""
from __future__ import annotations

import unicodedata

import numpy as np
from typing import Optional, Sequence

__all__ = ["normalize_answer", "exact_match", "exact_match_accuracy", "score_sft"]


def normalize_answer(text: str) -> str:
    """Normalisation used by ``exact_match``.

    1. Unicode NFKC (full-width "？" -> "?", full-width digits -> ASCII);
    2. lowercase (``str.casefold``);
    3. collapse runs of whitespace to one space and strip both ends;
    4. remove trailing punctuation (any Unicode "P*" character, so both "." and
       "。"), then strip again.

    >>> normalize_answer("  The Market. ")
    'the market'
    >>> normalize_answer("市场。")
    '市场'
    >>> normalize_answer("１２ ！")
    '12'
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_answer: expected a str, got {type(text).__name__}")
    s = unicodedata.normalize("NFKC", text).casefold()
    s = " ".join(s.split())
    while s and unicodedata.category(s[-1]).startswith("P"):
        s = s[:-1].rstrip()
    return s


def exact_match(pred: str, ref: str) -> bool:
    """True if ``pred`` equals ``ref`` after ``normalize_answer`` on both.

    >>> exact_match("the market", "The market.")
    True
    >>> exact_match("市场。", "市场")
    True
    >>> exact_match("the park.", "the market.")
    False
    """
    return normalize_answer(pred) == normalize_answer(ref)


def exact_match_accuracy(
    predictions: Sequence[str], references: Sequence[str], groups: Optional[Sequence[Optional[str]]] = None
) -> dict:
    """The share of ``predictions`` that ``exact_match`` their ``references``.

    Returns ``{"all": acc, "<group>": acc, ..., "n": count}``; a group of ``None`` counts
    under "all" only. Groups appear in the order they are first seen. With no predictions
    every accuracy is 0.0 (there is nothing to be right about).

    >>> exact_match_accuracy(["12", "13"], ["12", "12"])
    {'all': 0.5, 'n': 2}
    """
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"exact_match_accuracy: {len(predictions)} predictions but {len(references)} references")
    groups = [None] * len(predictions) if groups is None else list(groups)
    if len(groups) != len(predictions):
        raise ValueError(f"exact_match_accuracy: {len(predictions)} predictions but {len(groups)} groups")
    hits: dict = {"all": (0, 0)}  # group -> (count, correct)
    for pred, ref, group in zip(predictions, references, groups):
        ok = exact_match(pred, ref)
        for key in ("all", group):
            if key is not None:
                n, k = hits.get(key, (0, 0))
                hits[key] = (n + 1, k + ok)
    out = {key: (k / n if n else 0.0) for key, (n, k) in hits.items()}
    out["n"] = len(predictions)
    return out


def score_sft(records: Sequence[dict], predictions: Sequence[str]) -> dict:
    """Exact-match accuracy of ``predictions`` against the SFT ``records``' last assistant reply.

    Each record is ``{"messages": [...], "meta": {"skill": ...}}`` (the shape of
    ``minillm.data.generate_sft``); records without ``meta`` count under "all" only.
    Returns ``{"all": acc, "<skill>": acc, ..., "n": count}``.

    >>> recs = [{"messages": [{"role": "user", "content": "What is 7 + 5?"},
    ...                       {"role": "assistant", "content": "12"}], "meta": {"skill": "math"}}]
    >>> score_sft(recs, ["12."])
    {'all': 1.0, 'math': 1.0, 'n': 1}
    """
    records, predictions = list(records), list(predictions)
    if len(records) != len(predictions):
        raise ValueError(f"score_sft: {len(records)} records but {len(predictions)} predictions")
    references = []
    for i, rec in enumerate(records):
        replies = [m["content"] for m in rec.get("messages", []) if m.get("role") == "assistant"]
        if not replies:
            raise ValueError(f"score_sft: record {i} has no assistant message to compare with")
        references.append(replies[-1])
    groups = [(rec.get("meta") or {}).get("skill") for rec in records]
    return exact_match_accuracy(predictions, references, groups)


def paired_difference(after, before) -> tuple:
    """``(mean, standard error)`` of ``after - before`` over the same examples: per-example scores
    of two models on one test set (0/1 exact matches, or ``align.correctness(...)["per_prompt"]``).
    The paired error is much smaller than the two separate errors when most examples do not change.

    >>> paired_difference([1, 1, 0, 1], [1, 0, 0, 1])
    (0.25, 0.25)
    """
    a, b = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or len(a) < 2:
        raise ValueError(f"paired_difference: after {a.shape} and before {b.shape} must be the same (N,) shape, N >= 2")
    d = a - b
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
