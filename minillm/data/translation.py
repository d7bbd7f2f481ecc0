"""English -> Chinese sentence pairs from the built-in world, for the chapter-2 Transformer.

The world generator (``world.py``) writes *bilingual* documents: the same story in English and
in Chinese, one language per line, each event one sentence. Splitting both lines into
sentences gives aligned pairs such as

    "In the morning, Tom walked to the park."  ->  "早上，汤姆走路去了公园。"

``translation_pairs`` builds the training pairs from train-split stories and a **held-out set
of unseen sentences**: pairs from val-split stories whose English sentence never occurs in the
training pairs (stories are split by the world, sentences are additionally de-duplicated
across the split here, so the held-out score measures generalisation to new combinations
of names, places, objects and colours, not recall).

``TranslationDataset`` + ``collate_translation`` turn pairs into padded batches for
``Transformer.forward(src, tgt, targets, src_mask, tgt_mask)``:

    input_ids         = English ids + [EOS]              (src)      attention_mask: 1 real / 0 padding
    decoder_input_ids = [BOS] + Chinese ids              (tgt, teacher forcing)   decoder_attention_mask
    labels            = Chinese ids + [EOS]              (targets: tgt shifted left; -100 on padding)

(the batch keys are Hugging Face's seq2seq names, so ``Trainer`` counts ``input_ids`` as tokens).
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from .world import WorldConfig, generate_stories

__all__ = ["split_sentences", "sentence_pairs", "translation_pairs", "TranslationDataset", "collate_translation"]

_CJK = re.compile(r"[\u4e00-\u9fff]")
_EN_SENT = re.compile(r"(?<=[.!?])\s+")
_ZH_SENT = re.compile(r"(?<=[。！？])")


def split_sentences(text: str, lang: str) -> list[str]:
    """'A. B.' -> ['A.', 'B.'] (English); '甲。乙。' -> ['甲。', '乙。'] (Chinese)."""
    if lang not in ("en", "zh"):
        raise ValueError(f"split_sentences: lang must be 'en' or 'zh', got {lang!r}")
    parts = (_EN_SENT if lang == "en" else _ZH_SENT).split(text.strip())
    return [p.strip() for p in parts if p.strip()]


def sentence_pairs(n_stories: int, seed: int = 0, split: str = "train") -> list[tuple[str, str]]:
    """(english, chinese) sentence pairs of ``n_stories`` bilingual world stories, in order (with repeats)."""
    docs = generate_stories(n_stories, seed=seed, split=split, config=WorldConfig(seed=seed, doc_mix={"bilingual": 1.0}))
    pairs = []
    for doc in docs:
        first, second = doc.split("\n")
        en, zh = (second, first) if _CJK.search(first) else (first, second)
        en_s, zh_s = split_sentences(en, "en"), split_sentences(zh, "zh")
        if len(en_s) != len(zh_s):  # every event is one sentence in both languages
            raise ValueError(f"sentence_pairs: {len(en_s)} English but {len(zh_s)} Chinese sentences in story {doc!r}")
        pairs.extend(zip(en_s, zh_s))
    return pairs


def _unique(pairs):
    seen, out = set(), []
    for p in pairs:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def translation_pairs(n_train_stories: int = 6000, n_heldout: int = 500, seed: int = 0) -> dict:
    """{"train": unique pairs from ``n_train_stories`` train-split stories,
    "heldout": ``n_heldout`` unique pairs from val-split stories whose English sentence is not in "train"}.

    Deterministic for ``seed``. Raises ``ValueError`` if the val stories cannot supply
    ``n_heldout`` unseen sentences.
    """
    train = _unique(sentence_pairs(n_train_stories, seed, "train"))
    seen_en = {en for en, _ in train}
    heldout: list = []
    n_val = max(50, n_heldout)
    for _ in range(6):  # ask for more val stories until enough unseen sentences turn up
        heldout = [p for p in _unique(sentence_pairs(n_val, seed, "val")) if p[0] not in seen_en]
        if len(heldout) >= n_heldout:
            break
        n_val *= 2
    if len(heldout) < n_heldout:
        raise ValueError(f"translation_pairs: only {len(heldout)} unseen held-out sentences for n_heldout={n_heldout}")
    return {"train": train, "heldout": heldout[:n_heldout]}


class TranslationDataset:
    """Tokenised pairs: item i = (src ids + [eos], [bos] + tgt ids, tgt ids + [eos]) as int64 arrays.

    ``src_tokenizer`` / ``tgt_tokenizer``: any ``minillm.tokenizers.Tokenizer``; ``bos_id`` /
    ``eos_id`` default to the target tokenizer's ``<s>`` / ``</s>``. Pairs longer than
    ``max_len`` tokens on either side (after adding BOS/EOS) raise ``ValueError`` naming the pair.
    """

    def __init__(self, pairs: Sequence[tuple[str, str]], src_tokenizer, tgt_tokenizer, max_len: int,
                 bos_id: int | None = None, eos_id: int | None = None):
        self.bos_id = tgt_tokenizer.bos_token_id if bos_id is None else bos_id
        self.eos_id = tgt_tokenizer.eos_token_id if eos_id is None else eos_id
        if self.bos_id is None or self.eos_id is None:
            raise ValueError("TranslationDataset: the target tokenizer has no <s>/</s>; pass bos_id and eos_id")
        src_eos = src_tokenizer.eos_token_id if src_tokenizer.eos_token_id is not None else self.eos_id
        self.pairs = list(pairs)
        self.items = []
        for i, (en, zh) in enumerate(self.pairs):
            s = np.array(src_tokenizer.encode(en) + [src_eos], dtype=np.int64)
            t = np.array(tgt_tokenizer.encode(zh), dtype=np.int64)
            if len(s) > max_len or len(t) + 1 > max_len:
                raise ValueError(f"TranslationDataset: pair {i} ({en!r}) has {len(s)} source / {len(t) + 1} target "
                                 f"tokens, more than max_len={max_len}")
            self.items.append((s, np.concatenate([[self.bos_id], t]), np.concatenate([t, [self.eos_id]])))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def collate_translation(items, pad_id: int) -> dict:
    """Pad a list of dataset items into one batch (right padding), all int64:

    {"input_ids" (B, S), "attention_mask" (B, S) 1/0, "decoder_input_ids" (B, T),
    "decoder_attention_mask" (B, T) 1/0, "labels" (B, T) with -100 on padding}.
    """
    B = len(items)
    S = max(len(s) for s, _, _ in items)
    T = max(len(t) for _, t, _ in items)
    batch = {
        "input_ids": np.full((B, S), pad_id, np.int64), "attention_mask": np.zeros((B, S), np.int64),
        "decoder_input_ids": np.full((B, T), pad_id, np.int64), "decoder_attention_mask": np.zeros((B, T), np.int64),
        "labels": np.full((B, T), -100, np.int64),
    }
    for i, (s, t, y) in enumerate(items):
        batch["input_ids"][i, : len(s)], batch["attention_mask"][i, : len(s)] = s, 1
        batch["decoder_input_ids"][i, : len(t)], batch["decoder_attention_mask"][i, : len(t)] = t, 1
        batch["labels"][i, : len(y)] = y
    return batch
