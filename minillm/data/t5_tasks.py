"""T5's data (Happy LLM 3.2.1): span-corruption pretraining and text-to-text tasks with prefixes.

Span corruption (Raffel et al. 2020, §3.1.4)
--------------------------------------------
About 15 % of a sequence's tokens are dropped in spans of mean length 3. Each dropped span is
replaced in the input by one sentinel token (``<extra_id_0>``, ``<extra_id_1>``, ... in order);
the target lists each sentinel followed by the tokens it hides, and ends with one more
sentinel and EOS. The paper's example::

    original  Thank you for inviting me to your party last week .
    inputs    Thank you <extra_id_0> me to your party <extra_id_1> week . </s>
    targets   <extra_id_0> for inviting <extra_id_1> last <extra_id_2> </s>

``random_spans_noise_mask`` chooses *which* tokens, exactly as the reference implementation
does: the number of noise tokens is round(n · density) (at least 1, at most n - 1), the number
of spans round(noise / mean_span_length) (at least 1); noise and non-noise tokens are each cut
into that many non-empty runs at random, and the runs alternate, non-noise first.

Task prefixes (T5's "text-to-text" format)
------------------------------------------
Every world skill becomes "prefix: input" -> "output" (``world_tasks``)::

    question: Where did Tom go? context: One day, Tom went to the market. ...   ->  the market.
    translate English to Chinese: cat                                           ->  猫
    translate Chinese to English: 猫                                            ->  cat
    calculate: 7 + 5                                                            ->  12

built from ``minillm.data.world.generate_sft`` (the same held-out split of stories).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .world import WorldConfig, generate_sft

__all__ = [
    "sentinel_tokens", "random_spans_noise_mask", "span_corruption", "apply_noise_mask", "pack_documents", "world_tasks", "TASKS",
    "SpanCorruptionDataset", "Seq2SeqDataset", "collate_seq2seq",
]

TASKS = ("qa", "en2zh", "zh2en", "math")


def sentinel_tokens(n: int = 100) -> list[str]:
    """``["<extra_id_0>", ..., "<extra_id_{n-1}>"]``: the special tokens a T5 tokenizer needs."""
    return [f"<extra_id_{i}>" for i in range(n)]


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Cut ``num_items`` into ``num_segments`` non-empty runs at random: their lengths (sum = num_items)."""
    first = np.zeros(num_items, dtype=bool)
    first[1 + rng.choice(num_items - 1, num_segments - 1, replace=False)] = True  # where runs 2.. start
    segment_id = np.cumsum(first)  # (num_items,) run index of each item
    return np.bincount(segment_id, minlength=num_segments)


def random_spans_noise_mask(length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                            rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """A (length,) bool mask, True = noise (dropped), laid out as alternating runs
    non-noise, noise, non-noise, noise, ... with the counts described in the module docstring."""
    if not isinstance(length, (int, np.integer)) or length < 2:
        raise ValueError(f"random_spans_noise_mask: length must be an int >= 2, got {length!r}")
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"random_spans_noise_mask: noise_density must be in (0, 1), got {noise_density!r}")
    if not mean_noise_span_length >= 1.0:
        raise ValueError(f"random_spans_noise_mask: mean_noise_span_length must be >= 1, got {mean_noise_span_length!r}")
    rng = np.random.default_rng() if rng is None else rng
    num_noise = int(min(max(round(length * noise_density), 1), length - 1))
    num_spans = int(max(round(num_noise / mean_noise_span_length), 1))
    num_spans = min(num_spans, num_noise, length - num_noise)  # every run must be non-empty
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    keep_lengths = _random_segmentation(length - num_noise, num_spans, rng)
    runs = np.stack([keep_lengths, noise_lengths], axis=1).reshape(-1)  # keep, noise, keep, noise, ...
    is_noise = np.tile([False, True], num_spans)
    return np.repeat(is_noise, runs)  # (length,)


def apply_noise_mask(tokens: Sequence[int], mask: np.ndarray, sentinel_ids: Sequence[int],
                     eos_id: Optional[int]) -> tuple[list[int], list[int]]:
    """Turn a noise mask into (inputs, targets): each noise span becomes the next sentinel in the
    inputs; the targets are sentinel + hidden tokens per span, then a final sentinel (and EOS)."""
    tokens = list(tokens)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (len(tokens),):
        raise ValueError(f"apply_noise_mask: mask has shape {mask.shape}, tokens have length {len(tokens)}")
    starts = mask & ~np.concatenate([[False], mask[:-1]])  # first token of each noise span
    n_spans = int(starts.sum())
    if n_spans + 1 > len(sentinel_ids):
        raise ValueError(f"apply_noise_mask: {n_spans} spans need {n_spans + 1} sentinels, got {len(sentinel_ids)}")
    inputs, targets, span = [], [], -1
    for tok, noise, start in zip(tokens, mask, starts):
        if start:
            span += 1
            inputs.append(sentinel_ids[span])
            targets.append(sentinel_ids[span])
        if noise:
            targets.append(tok)
        else:
            inputs.append(tok)
    targets.append(sentinel_ids[n_spans])
    if eos_id is not None:
        inputs.append(eos_id)
        targets.append(eos_id)
    return inputs, targets


def span_corruption(tokens: Sequence[int], sentinel_ids: Sequence[int], eos_id: Optional[int], noise_density: float = 0.15,
                    mean_noise_span_length: float = 3.0, rng: Optional[np.random.Generator] = None) -> tuple[list[int], list[int]]:
    """One T5 pretraining example from ``tokens``: ``(inputs, targets)`` token-id lists."""
    mask = random_spans_noise_mask(len(tokens), noise_density, mean_noise_span_length, rng)
    return apply_noise_mask(tokens, mask, sentinel_ids, eos_id)


def pack_documents(token_docs: Sequence[Sequence[int]], length: int, eos_id: int) -> list[list[int]]:
    """Documents joined end to end (each followed by ``eos_id``) and cut into pieces of ``length``
    tokens (the last one may be shorter): the reference pipeline's ``reduce_concat_tokens`` +
    ``split_tokens``. Span corruption on packed pieces sees ``length`` tokens per example however
    short the documents are (the world's average ~48 tokens), so each step corrupts -- and
    teaches -- more tokens for the same padded batch size."""
    if int(length) < 2:
        raise ValueError(f"pack_documents: length must be >= 2, got {length!r}")
    stream = [t for d in token_docs for t in (*d, eos_id)]
    return [stream[i : i + length] for i in range(0, len(stream), length) if len(stream) - i >= 2]


def _qa_parts(user: str, lang: str) -> tuple[str, str]:
    story, q = user.rsplit("\n", 1)
    return story, (q.split("：", 1)[1] if lang == "zh" else q.split(": ", 1)[1])


def world_tasks(n: int, split: str = "train", seed: int = 0, config: Optional[WorldConfig] = None) -> list[dict]:
    """``n`` text-to-text examples ``{"task", "source", "target"}`` from the world's ``split``
    (tasks: ``TASKS``; the held-out split never shares a story with train)."""
    recs = generate_sft(n, seed=seed, split=split, skills=("qa", "translate", "math"), config=config)
    out = []
    for r in recs:
        user, ans, meta = r["messages"][-2]["content"], r["messages"][-1]["content"], r["meta"]
        if meta["skill"] == "qa":
            story, q = _qa_parts(user, meta["lang"])
            out.append({"task": "qa", "source": f"question: {q} context: {story}", "target": ans})
        elif meta["skill"] == "translate":
            if meta["qtype"] == "en2zh":
                word = user.split(": ", 1)[1] if user.startswith("Translate") else user.split(" 用中文怎么说", 1)[0]
                out.append({"task": "en2zh", "source": f"translate English to Chinese: {word}", "target": ans})
            else:
                word = user.split(": ", 1)[1] if user.startswith("Translate") else user.split(" 的英文是什么", 1)[0]
                out.append({"task": "zh2en", "source": f"translate Chinese to English: {word}", "target": ans})
        else:
            text = user.replace(" = ?", "").replace(" 等于几？", "").replace("What is ", "").rstrip("?")
            text = text.replace(" 加 ", " + ").replace(" 减 ", " - ").strip()
            out.append({"task": "math", "source": f"calculate: {text}", "target": ans})
    return out


class SpanCorruptionDataset:
    """Item i: ``(inputs, targets)`` id lists from span-corrupting document i (its first
    ``max_len`` tokens). The noise is fixed by ``(seed, i)``, so a run is reproducible."""

    def __init__(self, token_docs: Sequence[Sequence[int]], sentinel_ids: Sequence[int], eos_id: int, max_len: int = 128,
                 noise_density: float = 0.15, mean_noise_span_length: float = 3.0, seed: int = 0):
        self.docs = [list(d)[:max_len] for d in token_docs if len(d) >= 2]
        if not self.docs:
            raise ValueError("SpanCorruptionDataset: no document has 2 or more tokens")
        self.sentinel_ids, self.eos_id, self.seed = list(sentinel_ids), int(eos_id), int(seed)
        self.noise_density, self.mean_noise_span_length = float(noise_density), float(mean_noise_span_length)

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        rng = np.random.default_rng([self.seed, int(i)])
        return span_corruption(self.docs[i], self.sentinel_ids, self.eos_id, self.noise_density,
                               self.mean_noise_span_length, rng)


class Seq2SeqDataset:
    """Item i: ``(source ids, target ids + EOS)`` of text-to-text examples, cropped to ``max_len``."""

    def __init__(self, examples: Sequence[dict], tokenizer, eos_id: int, max_len: int = 256):
        self.items = []
        for ex in examples:
            src = tokenizer.encode(ex["source"])[: max_len - 1] + [eos_id]
            tgt = tokenizer.encode(ex["target"])[: max_len - 1] + [eos_id]
            self.items.append((src, tgt))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def collate_seq2seq(batch, pad_id: int) -> dict:
    """(source, target) id lists -> ``{"input_ids", "attention_mask", "labels"}`` arrays,
    right-padded; padded label positions are -100 (ignored by the loss)."""
    S = max(len(s) for s, _ in batch)
    T = max(len(t) for _, t in batch)
    input_ids = np.full((len(batch), S), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), S), dtype=np.int64)
    labels = np.full((len(batch), T), -100, dtype=np.int64)
    for b, (s, t) in enumerate(batch):
        input_ids[b, : len(s)], mask[b, : len(s)], labels[b, : len(t)] = s, 1, t
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
