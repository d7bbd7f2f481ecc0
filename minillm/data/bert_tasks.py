"""Data for BERT-style models (Happy LLM 3.1) and the NLP tasks of chapter 1.3, from the built-in world.

Pretraining objectives
----------------------
* ``mask_tokens``: MLM masking. Each ordinary token is chosen with probability ``mlm_probability``
  (15%), never a special token or padding; of the chosen, 80% become ``[MASK]``, 10% a random
  ordinary token, 10% stay unchanged (so the model cannot rely on seeing ``[MASK]``, which never
  occurs at fine-tuning time). ``labels`` hold the original id at chosen positions and -100
  everywhere else. ``whole_word`` chooses *words* (a token and its ``##`` continuations) instead.
* ``DataCollatorForLanguageModeling``: pads a list of examples into a batch and masks it. It
  draws a new mask on every call: RoBERTa's **dynamic masking** (BERT fixed its masks once).
* ``make_nsp_pairs`` (BERT): segment A then, 50/50, its real next segment (label 0 = IsNext) or a
  segment of another document (label 1 = NotNext). ``make_sop_pairs`` (ALBERT): two consecutive
  segments in order (label 0) or swapped (label 1).

Fine-tuning datasets (1.3), all derived from ``minillm.data.world``'s public API
-------------------------------------------------------------------------------
* ``question_kind_data`` (1.3.4 text classification): a reading question -> its kind
  ("where", "who_met", "what_got", ...), from the ``meta`` of ``generate_sft(skills=("qa",))``.
  ``language_data``: a story -> "en" / "zh".
* ``ner_data`` (1.3.5 NER): stories with the character spans of people (PER), places and cities
  (LOC) and objects (OBJ). The world writes every story from its lexicon, so an entity is exactly
  an occurrence of a lexicon entry (longest match first, whole words in English); ``tokenize_ner``
  turns the spans into BIO tags per WordPiece token (any tokenizer with offsets).
* ``heldout_entities``: a fixed quarter of the names, places, cities and objects that labelled
  *training* data never contain (``entities="seen"``) and test data always do
  (``entities="unseen"``). Without it NER on a 24-name world is a closed-list lookup that a
  model trained from zero learns as fast as a pretrained one; with it, tagging a name the labelled
  data never showed needs what pretraining learned about that word from unlabelled text (the
  pretraining corpus is the whole world, held-out names included, as in real pretraining).
* ``pos_data`` (1.3.3 POS tagging): English stories with a Penn Treebank tag per word (the book's
  tag set: NNP, VBD, DT, NN, IN, ...). Every story is rendered from templates whose words have
  one role each, so ``POS_OF`` (template words + the lexicon's kinds) tags every word exactly;
  ``tokenize_pos`` puts the tag on each word's first token, -100 on its other pieces.
* ``qa_data`` (1.3.9 extractive QA): (question, story, answer) where the answer is a span of the
  story (the reference answer without its final punctuation, or without its article when only
  that occurs); ``tokenize_qa`` gives ``[CLS] question [SEP] story [SEP]`` and the answer's
  start/end token indices.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import world as _world

__all__ = [
    "mask_tokens", "DataCollatorForLanguageModeling", "split_sentences", "make_nsp_pairs", "make_sop_pairs",
    "encode_pairs", "question_kind_data", "language_data", "ner_data", "NER_LABELS", "tokenize_ner", "qa_data",
    "tokenize_qa", "pad_batch", "heldout_entities", "find_entities", "pos_data", "pos_tags", "POS_TAGS", "POS_OF",
    "tokenize_pos",
]

IGNORE_INDEX = -100


# =============================================================================== MLM masking
def mask_tokens(input_ids: np.ndarray, special_mask: np.ndarray, mask_token_id: int, random_ids: np.ndarray,
                rng: np.random.Generator, mlm_probability: float = 0.15, word_starts: np.ndarray | None = None):
    """BERT's masking of a (B, T) batch -> (masked input_ids, labels), both (B, T) int64.

    special_mask: (B, T) bool, True where a token must never be masked ([CLS], [SEP], padding).
    random_ids: the ids a "random" replacement is drawn from (the ordinary vocabulary).
    word_starts: (B, T) bool for whole-word masking, True where a word starts (a token that is
        not a ``##`` continuation); the whole word is chosen or not. None = token by token.
    """
    ids = np.asarray(input_ids)
    special = np.asarray(special_mask, dtype=bool)
    if ids.shape != special.shape or ids.ndim != 2:
        raise ValueError(f"mask_tokens: input_ids {ids.shape} and special_mask {special.shape} must be the same (B, T)")
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mask_tokens: mlm_probability must be in (0, 1), got {mlm_probability!r}")
    if word_starts is None:
        chosen = (rng.random(ids.shape) < mlm_probability) & ~special  # (B, T)
    else:
        starts = np.asarray(word_starts, dtype=bool) | special  # a special token also ends the previous word
        if starts.shape != ids.shape:
            raise ValueError(f"mask_tokens: word_starts {starts.shape} must have the shape of input_ids {ids.shape}")
        pick = rng.random(ids.shape) < mlm_probability  # one draw per word, read at its first token
        chosen = np.take_along_axis(np.where(starts, pick, False), _word_first(starts), axis=1) & ~special
    labels = np.where(chosen, ids, IGNORE_INDEX).astype(np.int64)
    out = ids.astype(np.int64, copy=True)
    u = rng.random(ids.shape)
    out[chosen & (u < 0.8)] = mask_token_id  # 80%: [MASK]
    rand = chosen & (u >= 0.8) & (u < 0.9)  # 10%: a random ordinary token
    out[rand] = rng.choice(np.asarray(random_ids, dtype=np.int64), size=int(rand.sum()))
    return out, labels  # the other 10% keep their token (but are still predicted)


def _word_first(starts: np.ndarray) -> np.ndarray:
    """(B, T) index of the first token of the word each token belongs to."""
    T = starts.shape[1]
    idx = np.where(starts, np.arange(T)[None, :], 0)
    return np.maximum.accumulate(idx, axis=1)


def pad_batch(rows: Sequence[Sequence[int]], pad_value: int) -> np.ndarray:
    """Right-pad lists to (B, max_len) int64."""
    T = max(len(r) for r in rows)
    out = np.full((len(rows), T), pad_value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


@dataclass
class DataCollatorForLanguageModeling:
    """examples (dicts with ``input_ids`` and optional ``token_type_ids`` / ``next_sentence_label`` /
    ``sentence_order_label``) -> a padded, freshly masked batch of NumPy arrays::

        {"input_ids", "attention_mask", "token_type_ids", "labels"[, "next_sentence_label"]}

    ``special_ids``: ids never masked (the tokenizer's special tokens). ``vocab_size``: random
    replacements are drawn from the other ids below it. ``continuation_ids``: ids of ``##``
    pieces, needed for ``whole_word_mask``. Every call draws a new mask (dynamic masking).
    """

    pad_token_id: int
    mask_token_id: int
    vocab_size: int
    special_ids: Sequence[int]
    mlm_probability: float = 0.15
    whole_word_mask: bool = False
    continuation_ids: Sequence[int] = ()
    seed: int = 0

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        special = set(int(i) for i in self.special_ids) | {int(self.pad_token_id), int(self.mask_token_id)}
        self._special = np.array(sorted(special), dtype=np.int64)
        self._random_ids = np.array([i for i in range(self.vocab_size) if i not in special], dtype=np.int64)
        self._cont = np.array(sorted(set(int(i) for i in self.continuation_ids)), dtype=np.int64)
        if self.whole_word_mask and not len(self._cont):
            raise ValueError("DataCollatorForLanguageModeling: whole_word_mask needs continuation_ids (the ## pieces)")

    @classmethod
    def from_tokenizer(cls, tok, **kw) -> "DataCollatorForLanguageModeling":
        """For a ``WordPieceTokenizer`` ([MASK], [PAD], ``##`` pieces) or a ``BPETokenizer`` with a mask token."""
        mask = getattr(tok, "mask_token_id", None)
        if mask is None:
            mask = tok.token_to_id("<mask>")
        if mask is None:
            raise ValueError(f"{type(tok).__name__} has no mask token ([MASK] or <mask>)")
        cont = [i for t, i in tok.get_vocab().items() if t.startswith("##")]
        return cls(pad_token_id=tok.pad_token_id, mask_token_id=mask, vocab_size=tok.vocab_size,
                   special_ids=tok.all_special_ids, continuation_ids=cont, **kw)

    def __call__(self, examples: Sequence[dict]) -> dict:
        if not examples:
            raise ValueError("DataCollatorForLanguageModeling: empty list of examples")
        ids = pad_batch([e["input_ids"] for e in examples], self.pad_token_id)  # (B, T)
        lengths = np.array([len(e["input_ids"]) for e in examples])
        attention = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)  # (B, T)
        types = pad_batch([e.get("token_type_ids") or [0] * len(e["input_ids"]) for e in examples], 0)
        special = np.isin(ids, self._special) | (attention == 0)
        starts = ~np.isin(ids, self._cont) if self.whole_word_mask else None
        masked, labels = mask_tokens(ids, special, self.mask_token_id, self._random_ids, self.rng,
                                     self.mlm_probability, starts)
        batch = {"input_ids": masked, "attention_mask": attention, "token_type_ids": types, "labels": labels}
        for key in ("next_sentence_label", "sentence_order_label"):
            if key in examples[0]:
                batch[key] = np.array([e[key] for e in examples], dtype=np.int64)
        return batch


# =============================================================================== NSP / SOP pairs
_SENT = re.compile(r"[^.!?。！？\n]+[.!?。！？]?")


def split_sentences(text: str) -> list[str]:
    """Sentences of a world document (split after . ! ? and their Chinese forms, and at newlines)."""
    return [s.strip() for s in _SENT.findall(text) if s.strip()]


def _segments(doc: list[str], rng) -> tuple[str, str]:
    """Two consecutive segments of a document: A = sentences [0, k), B = [k, m)."""
    start = int(rng.integers(0, len(doc) - 1))
    k = int(rng.integers(start + 1, len(doc)))
    end = int(rng.integers(k + 1, len(doc) + 1))
    sep = "" if any(_world_zh(s) for s in doc) else " "
    return sep.join(doc[start:k]), sep.join(doc[k:end])


def _world_zh(s: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in s)


def make_nsp_pairs(documents: Sequence[str], n: int, seed: int = 0) -> list[tuple[str, str, int]]:
    """``n`` (A, B, label) for next-sentence prediction: label 0 (IsNext, HF's convention) = B is the
    text that follows A in its document; 1 (NotNext) = B comes from another, random document."""
    rng = np.random.default_rng(seed)
    docs = [split_sentences(d) for d in documents]
    docs = [d for d in docs if len(d) >= 2]
    if len(docs) < 2:
        raise ValueError("make_nsp_pairs: need at least 2 documents of 2+ sentences")
    out = []
    for _ in range(n):
        i = int(rng.integers(len(docs)))
        a, b = _segments(docs[i], rng)
        label = int(rng.random() < 0.5)
        if label:  # NotNext: a segment of a different document
            j = int(rng.integers(len(docs) - 1))
            j += j >= i
            b = _segments(docs[j], rng)[1]
        out.append((a, b, label))
    return out


def make_sop_pairs(documents: Sequence[str], n: int, seed: int = 0) -> list[tuple[str, str, int]]:
    """``n`` (A, B, label) for ALBERT's sentence-order prediction: two consecutive segments of one
    document, in order (label 0) or swapped (label 1)."""
    rng = np.random.default_rng(seed)
    docs = [d for d in (split_sentences(x) for x in documents) if len(d) >= 2]
    if not docs:
        raise ValueError("make_sop_pairs: need at least 1 document of 2+ sentences")
    out = []
    for _ in range(n):
        a, b = _segments(docs[int(rng.integers(len(docs)))], rng)
        label = int(rng.random() < 0.5)
        out.append((b, a, 1) if label else (a, b, 0))
    return out


def encode_pairs(tok, pairs: Sequence[tuple[str, str, int]], max_length: int, label_key: str = "next_sentence_label") -> list[dict]:
    """(A, B, label) -> ``[CLS] A [SEP] B [SEP]`` examples (truncated to ``max_length``) with the label."""
    out = []
    for a, b, label in pairs:
        enc = tok.encode_plus(a, b, max_length=max_length)
        out.append({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"], label_key: label})
    return out


# =============================================================================== 1.3.4 classification
def _qa_records(n: int, split: str, seed: int) -> list[dict]:
    out = []
    for r in _world.generate_sft(n, seed=seed, split=split, skills=("qa",)):
        user, answer = r["messages"][-2]["content"], r["messages"][-1]["content"]
        story, _, q = user.rpartition("\n")
        q = q.split("：", 1)[1] if q.startswith("问题：") else q.split(": ", 1)[1]
        out.append({"story": story, "question": q, "answer": answer, "qtype": r["meta"]["qtype"], "lang": r["meta"]["lang"]})
    return out


#: The kinds of reading questions the world asks (``world.story_questions``).
QUESTION_KINDS = ("where", "who_met", "what_got", "colour", "animal", "give_to", "home", "pet", "fav")


def question_kind_data(n: int, split: str = "train", seed: int = 0) -> tuple[list[dict], list[str]]:
    """(records ``{"text": question, "label": kind index}``, label names): 1.3.4 text classification."""
    recs = _qa_records(n, split, seed)
    return [{"text": r["question"], "label": QUESTION_KINDS.index(r["qtype"])} for r in recs], list(QUESTION_KINDS)


def language_data(n: int, split: str = "train", seed: int = 0) -> tuple[list[dict], list[str]]:
    """(records ``{"text": story, "label": 0 en / 1 zh}``, ["en", "zh"])."""
    recs = _qa_records(n, split, seed)
    return [{"text": r["story"], "label": int(r["lang"] == "zh")} for r in recs], ["en", "zh"]


# =============================================================================== 1.3.5 NER
NER_TYPES = ("PER", "LOC", "OBJ")
NER_LABELS = ("O",) + tuple(f"{p}-{t}" for t in NER_TYPES for p in ("B", "I"))


def _entity_patterns():
    en, zh = [], []
    for e, z, _ in _world.NAMES:
        en.append((e, "PER")); zh.append((z, "PER"))
    for e, z, _ in _world.PLACES:
        en.append((e, "LOC")); zh.append((z, "LOC"))
    for e, z in _world.CITIES:
        en.append((e, "LOC")); zh.append((z, "LOC"))
    for e, z, _ in _world.OBJECTS:
        en.append((e, "OBJ")); zh.append((z, "OBJ"))
    kind = {**dict(en), **dict(zh)}
    longest = lambda xs: sorted({s for s, _ in xs}, key=lambda s: (-len(s), s))  # noqa: E731
    pat_en = re.compile(r"\b(?:" + "|".join(re.escape(s) for s in longest(en)) + r")\b")
    pat_zh = re.compile("|".join(re.escape(s) for s in longest(zh)))
    return pat_en, pat_zh, kind


_PATTERNS = None


def find_entities(text: str) -> list[tuple[int, int, str]]:
    """Character spans (start, end, type) of the world's people, places and objects in ``text``."""
    global _PATTERNS
    if _PATTERNS is None:
        _PATTERNS = _entity_patterns()
    pat_en, pat_zh, kind = _PATTERNS
    spans = [(m.start(), m.end(), kind[m.group()]) for m in pat_en.finditer(text)]
    spans += [(m.start(), m.end(), kind[m.group()]) for m in pat_zh.finditer(text)]
    return sorted(spans)


def heldout_entities(seed: int = 0, fraction: float = 0.25) -> frozenset:
    """The surface forms (English and Chinese) of the entities held out of labelled training data:
    ``round(fraction * n)`` of the names, places, cities and objects, fixed by ``seed``
    (6 of the 24 names, 5 of 20 places, 3 of 12 cities, 5 of 20 objects at 0.25)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"heldout_entities: fraction must be in (0, 1), got {fraction!r}")
    rng = random.Random(f"minillm-bert-tasks/{seed}/heldout-entities")
    out = set()
    for table in (_world.NAMES, _world.PLACES, _world.CITIES, _world.OBJECTS):
        k = max(1, round(fraction * len(table)))
        for i in rng.sample(range(len(table)), k):
            out.update(table[i][:2])  # English form and the Chinese form used in stories
            if table is _world.PLACES:
                out.add(table[i][2])
    return frozenset(out)


_ENTITY_FILTERS = ("all", "seen", "unseen")


def _filtered_stories(n: int, split: str, seed: int, entities: str, heldout_fraction: float, langs=("en", "zh")):
    """``n`` world stories, keeping (``entities``) all of them, those without any held-out entity
    ("seen") or those with at least one ("unseen"); -> [(text, spans, held-out set)]."""
    if entities not in _ENTITY_FILTERS:
        raise ValueError(f"entities must be one of {_ENTITY_FILTERS}, got {entities!r}")
    held = heldout_entities(seed, heldout_fraction) if entities != "all" else frozenset()
    cfg = _world.WorldConfig(seed=seed, doc_mix={"story": 1.0}, langs=langs)
    m = max(16, n)
    while True:
        out = []
        for t in _world.generate_stories(m, split=split, config=cfg):  # a prefix of any longer call
            spans = find_entities(t)
            has = any(t[s:e] in held for s, e, _ in spans)
            if entities == "all" or has == (entities == "unseen"):
                out.append((t, spans, held))
                if len(out) == n:
                    return out
        m *= 4


def ner_data(n: int, split: str = "train", seed: int = 0, entities: str = "all", heldout_fraction: float = 0.25) -> list[dict]:
    """``n`` world stories ``{"text", "entities": [(start, end, type)], "unseen": [(start, end, type)]}``
    (English and Chinese). ``entities``: "all" stories, only those whose entities are all outside
    ``heldout_entities(seed, heldout_fraction)`` ("seen": labelled training data), or only those
    with at least one held-out entity ("unseen": the test of transfer). ``unseen`` lists the
    held-out entities of the story (empty for "all")."""
    return [{"text": t, "entities": spans, "unseen": [x for x in spans if t[x[0]:x[1]] in held]}
            for t, spans, held in _filtered_stories(n, split, seed, entities, heldout_fraction)]


def _token_labels(enc: dict, tag_of) -> list[int]:
    """Per token of ``enc`` (an ``encode_plus`` result with offsets): ``tag_of(start, end)`` or
    -100 on the special tokens (offset (0, 0))."""
    n = len(enc["input_ids"])
    return [IGNORE_INDEX if k == 0 or k == n - 1 else tag_of(s, e) for k, (s, e) in enumerate(enc["offset_mapping"])]


def tokenize_ner(tok, records: Sequence[dict], max_length: int) -> list[dict]:
    """-> ``{"input_ids", "labels", "unseen"}``: ``[CLS] tokens [SEP]`` with a BIO label id
    (``NER_LABELS``) per token: B- on an entity's first token, I- on its later tokens, O
    elsewhere, -100 on [CLS]/[SEP]. ``unseen`` (per token) is True inside a held-out entity."""
    out = []
    for r in records:
        enc = tok.encode_plus(r["text"], max_length=max_length, return_offsets_mapping=True)

        def tag(s, e, r=r):
            if e <= s:
                return 0  # an empty span (a lone space piece) is outside every entity
            for es, ee, t in r["entities"]:
                if s >= es and e <= ee:
                    return NER_LABELS.index(("B-" if s == es else "I-") + t)
            return 0  # "O"

        held = r.get("unseen", ())
        unseen = [any(s >= es and e <= ee for es, ee, _ in held) and e > s for s, e in enc["offset_mapping"]]
        out.append({"input_ids": enc["input_ids"], "labels": _token_labels(enc, tag), "unseen": unseen})
    return out


# =============================================================================== 1.3.3 POS tagging
#: Penn Treebank tags of the words of the world's English templates (the book's 1.3.3 tag set).
_TEMPLATE_POS = {
    "'s": "POS", ",": ",", ".": ".", "a": "DT", "an": "DT", "the": "DT", "The": "DT",
    "After": "IN", "At": "IN", "In": "IN", "in": "IN", "On": "IN", "of": "IN", "on": "IN", "under": "IN", "to": "TO",
    "It": "PRP", "he": "PRP", "she": "PRP", "his": "PRP$", "her": "PRP$",
    "One": "CD", "Sunday": "NNP", "Yesterday": "NN", "Then": "RB", "There": "RB", "there": "RB", "home": "RB",
    "happily": "RB", "went": "VBD", "walked": "VBD", "took": "VBD", "met": "VBD", "saw": "VBD", "bought": "VBD",
    "found": "VBD", "gave": "VBD", "had": "VBD", "was": "VBD", "lives": "VBZ", "has": "VBZ", "is": "VBZ",
    "raining": "VBG", "afternoon": "NN", "bus": "NN", "colour": "NN", "day": "NN", "evening": "NN", "friend": "NN",
    "ground": "NN", "lunch": "NN", "morning": "NN", "pet": "NN", "sky": "NN", "tree": "NN", "wind": "NN",
    "clouds": "NNS", "cold": "JJ", "favourite": "JJ", "full": "JJ", "good": "JJ", "sunny": "JJ",
}


def _pos_lexicon() -> dict:
    pos = {}
    for e, _, _ in _world.NAMES:
        pos[e] = "NNP"
    for e, _ in _world.CITIES:
        pos[e] = "NNP"
    for table in (_world.PLACES, _world.OBJECTS, _world.ANIMALS):
        for row in table:
            for w in row[0].split():  # "post office", "toy car": two nouns
                pos[w] = "NN"
    for e, _ in _world.COLOURS:
        pos[e] = "JJ"
    clash = {w for w in _TEMPLATE_POS if w in pos and pos[w] != _TEMPLATE_POS[w]}
    assert not clash, f"POS lexicon: words with two tags {sorted(clash)}"
    return {**pos, **_TEMPLATE_POS}


#: word -> Penn Treebank tag, for every word the world's English stories use.
POS_OF = _pos_lexicon()
POS_TAGS = tuple(sorted(set(POS_OF.values())))
_WORD = re.compile(r"'s|[A-Za-z]+|[^\sA-Za-z]")


def pos_tags(text: str) -> list[tuple[int, int, str]]:
    """(start, end, tag) of every word of an English world story. A word the world never writes
    raises ``ValueError`` naming it (the tags are exact, never guessed).

    >>> [t for _, _, t in pos_tags("Tom went to the park.")]
    ['NNP', 'VBD', 'TO', 'DT', 'NN', '.']
    """
    out = []
    for m in _WORD.finditer(text):
        tag = POS_OF.get(m.group())
        if tag is None:
            raise ValueError(f"pos_tags: {m.group()!r} at {m.start()} is not a word of the world's English stories")
        out.append((m.start(), m.end(), tag))
    return out


def pos_data(n: int, split: str = "train", seed: int = 0, entities: str = "all", heldout_fraction: float = 0.25) -> list[dict]:
    """``n`` English world stories ``{"text", "words": [(start, end, tag)], "unseen": [bool per word]}``;
    ``entities`` filters stories as in ``ner_data``, and ``unseen`` marks the words of held-out
    entities (a word the labelled training data never contain: the "unknown word" accuracy)."""
    out = []
    for t, spans, held in _filtered_stories(n, split, seed, entities, heldout_fraction, langs=("en",)):
        words = pos_tags(t)
        inside = [(s, e) for s, e, _ in spans if t[s:e] in held]
        out.append({"text": t, "words": words,
                    "unseen": [any(s >= es and e <= ee for es, ee in inside) for s, e, _ in words]})
    return out


def tokenize_pos(tok, records: Sequence[dict], max_length: int) -> list[dict]:
    """-> ``{"input_ids", "labels", "unseen"}``: the tag id (``POS_TAGS``) on the first token of each
    word, -100 on its later pieces and on [CLS]/[SEP] (one prediction per word, as HF's token
    classification examples do). ``unseen`` (per token) marks the first token of a held-out word."""
    out = []
    for r in records:
        enc = tok.encode_plus(r["text"], max_length=max_length, return_offsets_mapping=True)
        first = {s: (POS_TAGS.index(tag), u) for (s, _, tag), u in zip(r["words"], r["unseen"])}
        starts, labels, unseen = set(), [], []
        for k, (s, e) in enumerate(enc["offset_mapping"]):
            hit = None
            if e > s and 0 < k < len(enc["input_ids"]) - 1 and s not in starts:  # not a special, not a later piece
                hit = first.get(s)
                starts.add(s)
            labels.append(IGNORE_INDEX if hit is None else hit[0])
            unseen.append(bool(hit and hit[1]))
        out.append({"input_ids": enc["input_ids"], "labels": labels, "unseen": unseen})
    return out


# =============================================================================== 1.3.9 extractive QA
def _answer_span(story: str, answer: str) -> tuple[int, str] | None:
    core = answer.rstrip(".。")
    cands = [(core, 0)]
    for art in ("the ", "a ", "an "):
        if core.startswith(art):
            cands.append((core[len(art):], 0))
    if core.startswith("一") and len(core) > 2:  # "一块蛋糕" answers "...一块粉色的蛋糕": the object after "的"
        cands += [("的" + core[2:], 1), (core[2:], 0)]
    for c, skip in cands:
        i = story.find(c)
        if i >= 0:
            return i + skip, c[skip:]
    return None


def qa_data(n: int, split: str = "train", seed: int = 0) -> list[dict]:
    """``n`` reading-comprehension records ``{"question", "context", "answer", "answer_start"}`` whose
    answer is a span of the context (``context[answer_start:][:len(answer)] == answer``)."""
    out = []
    for r in _qa_records(n, split, seed):
        span = _answer_span(r["story"], r["answer"])
        if span is None:  # every world answer occurs in its story; keep the guard for safety
            continue
        out.append({"question": r["question"], "context": r["story"], "answer": span[1], "answer_start": span[0],
                    "qtype": r["qtype"], "lang": r["lang"]})
    return out


def tokenize_qa(tok, records: Sequence[dict], max_length: int) -> list[dict]:
    """-> ``{"input_ids", "token_type_ids", "start_positions", "end_positions", "offset_mapping",
    "context_mask"}``: ``[CLS] question [SEP] context [SEP]`` and the token indices of the answer's
    first and last token. Records whose answer is cut off by ``max_length`` are dropped."""
    out = []
    for r in records:
        enc = tok.encode_plus(r["question"], r["context"], max_length=max_length, return_offsets_mapping=True)
        s0, e0 = r["answer_start"], r["answer_start"] + len(r["answer"])
        if "sequence_ids" in enc:  # RoBERTa: no segment embedding, the tokenizer says which segment
            ctx = [q == 1 for q in enc["sequence_ids"]]
        else:
            ctx = [t == 1 and k < len(enc["input_ids"]) - 1 for k, t in enumerate(enc["token_type_ids"])]
        inside = [k for k, (s, e) in enumerate(enc["offset_mapping"]) if ctx[k] and s < e0 and e > s0]  # overlap the answer
        if not inside or enc["offset_mapping"][inside[-1]][1] < e0:  # no token, or the answer's end was truncated
            continue
        start, end = inside[0], inside[-1]
        out.append({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"], "start_positions": start,
                    "end_positions": end, "offset_mapping": enc["offset_mapping"], "context_mask": ctx,
                    "context": r["context"], "answer": r["answer"]})
    return out
