"""GLM's pretraining data (Happy LLM 3.3.3 (2)): autoregressive blank infilling.

Spans (Du et al. 2022, §2.1)
----------------------------
Span lengths are drawn from a Poisson distribution with λ = 3 (a 0 counts as 1) until at
least 15 % of the text's tokens are covered (``sample_spans``); the spans are then laid out at
random, never touching each other, so each one is a separate blank.

Part A and Part B (``blank_infilling``)
---------------------------------------
Each span is replaced by one ``[MASK]``: that is Part A, the corrupted text. The spans, in a
random order, follow as Part B, each opened by ``[START]``; the model predicts each span token
by token and closes it with ``[END]``::

    text      x1 x2 x3 x4 x5 x6            spans (x3) and (x5 x6)
    Part A    x1 x2 [M] x4 [M]             position 0 1 2 3 4        span position 0 0 0 0 0
    Part B    [S] x5 x6 [S] x3             position 4 4 4 2 2        span position 1 2 3 1 2
    labels    x5  x6 [E] x3 [E]            (Part A: -100, nothing to predict)

Every token of a span has its ``[MASK]``'s position (the first of GLM's 2-D positions) and its
place inside the span, counting ``[START]`` as 1 (the second). The attention mask
(``minillm.models.glm.glm_attention_mask``) needs only the length of Part A, ``sep``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

__all__ = ["sample_spans", "blank_infilling", "BlankInfillingDataset", "collate_glm", "world_blanks", "GLM_SPECIAL_TOKENS"]

#: The three tokens GLM's tokenizer adds: the blank in Part A, the opener and closer of a span in Part B.
GLM_SPECIAL_TOKENS = ("[MASK]", "[START]", "[END]")


def sample_spans(n: int, mask_ratio: float = 0.15, poisson_lambda: float = 3.0,
                 rng: Optional[np.random.Generator] = None) -> list[tuple[int, int]]:
    """Spans ``[(start, end), ...]`` (sorted, end exclusive, at least one token apart) over a text of
    ``n`` tokens: Poisson(λ) lengths (at least 1) drawn until they cover >= ceil(mask_ratio · n)
    tokens, shortened if needed so that every span stays separate and one token stays unmasked."""
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"sample_spans: n must be an int >= 2 (a text of two tokens or more), got {n!r}")
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"sample_spans: mask_ratio must be in (0, 1), got {mask_ratio!r}")
    if not poisson_lambda > 0:
        raise ValueError(f"sample_spans: poisson_lambda must be > 0, got {poisson_lambda!r}")
    rng = np.random.default_rng() if rng is None else rng
    target = max(1, math.ceil(n * mask_ratio))
    lengths: list[int] = []
    while sum(lengths) < target:
        lengths.append(max(1, int(rng.poisson(poisson_lambda))))
    # m spans need m - 1 separators between them and one unmasked token somewhere: shrink the last
    while lengths and sum(lengths) + len(lengths) > n:
        lengths[-1] -= 1
        if lengths[-1] == 0:
            lengths.pop()
    lengths = [lengths[i] for i in rng.permutation(len(lengths))]  # the shortened one anywhere
    m = len(lengths)
    free = n - sum(lengths)  # unmasked tokens; m - 1 of them separate the spans
    gaps = rng.multinomial(free - (m - 1), np.full(m + 1, 1.0 / (m + 1)))  # (m + 1,) extra unmasked per gap
    gaps[1:m] += 1
    spans, at = [], 0
    for k in range(m):
        at += int(gaps[k])
        spans.append((at, at + lengths[k]))
        at += lengths[k]
    return spans


def blank_infilling(tokens: Sequence[int], spans: Sequence[tuple[int, int]], mask_id: int, sop_id: int, eop_id: int,
                    rng: Optional[np.random.Generator] = None) -> dict:
    """One GLM training example (the layout of the module docstring).

    Returns ``{"input_ids": (T,), "position_ids": (2, T), "labels": (T,), "sep": int}`` (int64
    arrays) with T = n + 2·len(spans): Part A (``sep`` tokens) then Part B. The order of the
    spans in Part B is a permutation drawn from ``rng``.
    """
    tokens = list(tokens)
    n = len(tokens)
    prev_end = -1
    for s, e in spans:
        if not (0 <= s < e <= n) or s <= prev_end:
            raise ValueError(f"blank_infilling: spans must be sorted, non-empty, separate and inside [0, {n}), got {list(spans)}")
        prev_end = e
    if not spans:
        raise ValueError("blank_infilling: no spans to blank out")
    rng = np.random.default_rng() if rng is None else rng
    part_a, mask_pos, at = [], [], 0
    for s, e in spans:
        part_a += tokens[at:s]
        mask_pos.append(len(part_a))  # where this span's [MASK] lands in Part A
        part_a.append(mask_id)
        at = e
    part_a += tokens[at:]
    ids, pos, block, labels = list(part_a), list(range(len(part_a))), [0] * len(part_a), [-100] * len(part_a)
    for k in rng.permutation(len(spans)):  # Part B: the spans shuffled
        s, e = spans[k]
        span = tokens[s:e]
        ids += [sop_id] + span  # [START] x_s ... x_{e-1}
        labels += span + [eop_id]  # each input predicts the next span token, the last one [END]
        pos += [mask_pos[k]] * (len(span) + 1)
        block += list(range(1, len(span) + 2))
    return {"input_ids": np.array(ids, dtype=np.int64), "position_ids": np.array([pos, block], dtype=np.int64),
            "labels": np.array(labels, dtype=np.int64), "sep": len(part_a)}


class BlankInfillingDataset:
    """Item i: ``blank_infilling`` of token document i, with fresh spans per ``(seed, i)`` (so a
    run is reproducible). A document is cropped so that Part A + Part B fit in ``max_len``."""

    def __init__(self, token_docs: Sequence[Sequence[int]], mask_id: int, sop_id: int, eop_id: int, max_len: int = 128,
                 mask_ratio: float = 0.15, poisson_lambda: float = 3.0, seed: int = 0):
        if max_len < 4:
            raise ValueError(f"BlankInfillingDataset: max_len must be >= 4, got {max_len}")
        self.docs = [list(d) for d in token_docs if len(d) >= 2]
        if not self.docs:
            raise ValueError("BlankInfillingDataset: no document has 2 or more tokens")
        self.ids = (int(mask_id), int(sop_id), int(eop_id))
        self.max_len, self.mask_ratio, self.lam, self.seed = int(max_len), float(mask_ratio), float(poisson_lambda), int(seed)

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, int(i)])
        doc = self.docs[i][: int(self.max_len / (1 + 2 * self.mask_ratio))]  # worst case: all spans 1 token long, 2 extra tokens per blank
        while True:  # T = n + 2·spans; crop further in the rare case many short spans overflow
            spans = sample_spans(len(doc), self.mask_ratio, self.lam, rng)
            if len(doc) + 2 * len(spans) <= self.max_len or len(doc) <= 2:
                break
            doc = doc[: len(doc) - 2]
        return blank_infilling(doc, spans, *self.ids, rng=rng)


def collate_glm(batch: Sequence[dict], pad_id: int = 0) -> dict:
    """``blank_infilling`` examples -> right-padded arrays ``input_ids`` (B, T), ``position_ids``
    (B, 2, T), ``labels`` (B, T) (-100 on padding) and ``sep`` (B,).

    No padding mask is needed: padding comes after Part B, and a Part B query sees only keys
    before it (plus Part A), so no real token ever sees a padding key."""
    T = max(len(b["input_ids"]) for b in batch)
    B = len(batch)
    ids = np.full((B, T), pad_id, dtype=np.int64)
    pos = np.zeros((B, 2, T), dtype=np.int64)
    labels = np.full((B, T), -100, dtype=np.int64)
    for r, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[r, :n], pos[r, :, :n], labels[r, :n] = b["input_ids"], b["position_ids"], b["labels"]
    return {"input_ids": ids, "position_ids": pos, "labels": labels, "sep": np.array([b["sep"] for b in batch], dtype=np.int64)}


def _entity_pattern(lang: str):
    """The world's names, cities, places, objects, animals and colours in ``lang``, longest first
    (so "猫头鹰" wins over "猫" and "post office" over "office"), as one regex."""
    import regex

    from .world import ANIMALS, CITIES, COLOURS, NAMES, OBJECTS, PLACES

    col = 1 if lang == "zh" else 0
    words = sorted({row[col] for table in (NAMES, CITIES, PLACES, OBJECTS, ANIMALS, COLOURS) for row in table},
                   key=len, reverse=True)
    alt = "|".join(regex.escape(w) for w in words)
    return regex.compile(alt if lang == "zh" else rf"\b(?:{alt})\b")


def world_blanks(n: int, split: str = "val", seed: int = 0) -> list[dict]:
    """``n`` fill-in-the-blank items from the world's stories of ``split`` ("val": stories never
    seen in pretraining): one word of a story (a name, city, place, object, animal or colour)
    is the blank. Items: ``{"left", "answer", "right", "lang", "later"}`` with
    ``left + answer + right`` = the story; in English the space before the word belongs to the
    blank (" park"), as the byte-level BPE splits it. ``later`` is True when the answer is named
    again after the blank but not before it: only a model that reads the right-hand context can
    know it there.

    >>> world_blanks(1)[0]   # doctest: +SKIP
    {'left': 'One day, Tom went to the', 'answer': ' park', 'right': '. There, Tom met Anna. ...', ...}
    """
    import random

    from .world import WorldConfig, generate_stories

    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"world_blanks: n must be an int >= 0, got {n!r}")
    rng = random.Random(f"glm-blanks/{split}/{seed}")
    stories = generate_stories(4 * n + 8, seed=seed, split=split, config=WorldConfig(seed=seed, doc_mix={"story": 1.0}))
    items = []
    for text in stories:
        if len(items) == n:
            break
        lang = "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en"
        found = list(_entity_pattern(lang).finditer(text))
        if not found:
            continue
        m = rng.choice(found)
        s, e = m.span()
        if lang == "en" and s > 0 and text[s - 1] == " ":
            s -= 1  # " park": the leading space is part of the word's token
        left, answer, right = text[:s], text[s:e], text[e:]
        word = answer.strip()
        items.append({"left": left, "answer": answer, "right": right, "lang": lang,
                      "later": word in right and word not in left})
    return items
