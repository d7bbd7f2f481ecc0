"""Happy LLM 5.2.3 — WordPiece, BERT's subword tokenizer.

Like BPE it builds a vocabulary of subwords bottom-up by merging pairs, but it picks the pair
with the highest **likelihood score** instead of the most frequent one::

    score(a, b) = freq(ab) / (freq(a) · freq(b))

so a merge wins when its parts occur together more than chance would predict ("##in" + "##g"
in English) rather than merely often ("e" + "##r").

* **Units**: a word's first piece is bare, every later piece carries the ``##`` prefix
  ("unaffable" -> "un", "##aff", "##able"), so decoding knows where words start.
* **Encoding** is greedy longest-match-first per word (``encode_word``): take the longest
  vocabulary entry that starts the word, then the longest ``##`` entry that continues it, ...
  If some position cannot be matched at all, the *whole word* becomes ``[UNK]`` (BERT's rule),
  and only then.
* **Pre-tokenizer** (``basic_tokenize``, BERT's ``BasicTokenizer``): clean control characters,
  put spaces around every CJK character (Chinese is cut one character per word), optionally
  lowercase and strip accents (NFD, drop combining marks), then split on whitespace and
  around every punctuation character.
* **Pairs**: ``encode_plus(a, b)`` gives ``[CLS] a [SEP] b [SEP]`` with ``token_type_ids`` 0 for
  the first segment (and its [CLS]/[SEP]) and 1 for the second, plus ``attention_mask`` and, on
  request, each token's character span (for QA answers and NER tags).
* **Files**: a Hugging Face ``tokenizer.json`` (BertNormalizer, BertPreTokenizer, WordPiece,
  the [CLS]/[SEP] template) that ``tokenizers.Tokenizer.from_file`` reads with the same ids,
  plus a ``vocab.txt`` (one token a line, line number = id), the format of BERT's checkpoints.

Not a round-trip: lowercasing, accent stripping and the lost spacing around punctuation cannot
be undone (``decode`` glues ``##`` pieces and joins words with spaces, as HF's decoder does).
That is WordPiece's design; use byte-level BPE where text must come back exactly.
"""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict
from typing import Iterable, Mapping, Sequence

from .base import ListVocabTokenizer, training_texts
from .bpe import merge
from .hf_json import file_skeleton, parse_added_tokens

__all__ = ["WordPieceTokenizer", "basic_tokenize", "BERT_SPECIAL_TOKENS", "is_cjk", "is_punctuation", "train_naive"]

#: BERT's special tokens; here they take ids 0-4.
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PREFIX = "##"
MAX_INPUT_CHARS_PER_WORD = 100  # longer "words" are [UNK] (BERT's default)


def is_cjk(ch: str) -> bool:
    """A CJK ideograph (BERT's ``_is_chinese_char`` ranges; not kana or hangul)."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def is_punctuation(ch: str) -> bool:
    """BERT's rule: every non-alphanumeric ASCII symbol ("$", "+", "^" ...) and Unicode "P*" characters."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf", "Cn", "Co", "Cs")


_KEEP, _DROP, _ALONE = 0, 1, 2
_CHAR_KIND: dict[str, int] = {}  # character -> its kind, filled as characters are met (a few thousand)


def _char_kind(ch: str) -> int:
    """_DROP: whitespace or a character BERT cleans away; _ALONE: CJK or punctuation, a word of its
    own; _KEEP: part of a word."""
    if ch == "\x00" or ch == "\ufffd" or _is_control(ch) or ch.isspace():
        return _DROP
    if is_cjk(ch) or is_punctuation(ch):
        return _ALONE
    return _KEEP


def basic_tokenize(text: str, lowercase: bool = True, strip_accents: bool | None = None) -> list[tuple[str, int, int]]:
    """BERT's pre-tokenizer: ``text`` -> [(word, start, end)], ``text[start:end]`` the word's source.

    ``strip_accents=None`` follows ``lowercase`` (as BERT's). The word is normalised (lowercased,
    accents removed); the offsets always point into the original text.

    >>> [w for w, _, _ in basic_tokenize("Héllo, 世界! don't")]
    ['hello', ',', '世', '界', '!', 'don', "'", 't']
    """
    strip = lowercase if strip_accents is None else strip_accents
    out: list[tuple[str, int, int]] = []
    word_start = None

    def flush(end: int) -> None:
        nonlocal word_start
        if word_start is not None:
            out.append((text[word_start:end], word_start, end))
            word_start = None

    kinds = _CHAR_KIND
    for i, ch in enumerate(text):
        kind = kinds.get(ch)
        if kind is None:
            kind = _char_kind(ch)
            if len(kinds) < 200_000:  # bounded: hostile text cannot grow it without limit
                kinds[ch] = kind
        if kind == _DROP:
            flush(i)  # cleaned away / whitespace: ends a word
        elif kind == _ALONE:
            flush(i)
            out.append((ch, i, i + 1))  # a word of its own
        elif word_start is None:
            word_start = i
    flush(len(text))
    words = []
    for w, s, e in out:
        if lowercase:
            w = w.lower()
        if strip and not w.isascii():  # ASCII has no accents to strip
            w = "".join(c for c in unicodedata.normalize("NFD", w) if unicodedata.category(c) != "Mn")
        if w:
            words.append((w, s, e))
    return words


class ClsSepTemplate:
    """What the tokenizers of BERT-style encoders share (BERT's WordPiece, RoBERTa's byte-level BPE);
    each supplies ``cls_token_id``, ``sep_token_id``, ``encode_with_offsets`` and its own
    ``encode_plus`` template around the segments this class cuts."""

    def encode(self, text: str, add_special_tokens: bool = False, allowed_special="none_raise") -> list[int]:
        """Text -> ids; ``add_special_tokens=True`` gives ``[CLS] text [SEP]`` (BERT's single-sequence
        form; RoBERTa's ``<s> text </s>``)."""
        ids = super().encode(text, add_special_tokens=False, allowed_special=allowed_special)
        return [self.cls_token_id, *ids, self.sep_token_id] if add_special_tokens else ids

    def _encode_segments(self, text: str, text_pair: str | None, max_length: int | None, n_special: int) -> tuple:
        """``((ids, offsets), (pair_ids, pair_offsets))`` of ``text`` and ``text_pair`` (empty lists
        without a pair), cut to fit ``max_length`` together with ``n_special`` special tokens:
        "longest_first", HF's default, drops the last token of the longer segment (of the first on
        a tie) until the whole fits. A ``max_length`` that cannot keep one token of each segment is
        refused."""
        a, oa = self.encode_with_offsets(text)
        b, ob = self.encode_with_offsets(text_pair) if text_pair is not None else ([], [])
        if max_length is not None:
            if max_length < n_special + (2 if text_pair is not None else 1):
                raise ValueError(f"encode_plus: max_length={max_length} leaves no room for the tokens of each segment")
            while len(a) + len(b) + n_special > max_length:
                if len(a) >= len(b):
                    a, oa = a[:-1], oa[:-1]
                else:
                    b, ob = b[:-1], ob[:-1]
        return (a, oa), (b, ob)


class WordPieceTokenizer(ClsSepTemplate, ListVocabTokenizer):
    """WordPiece over BERT's basic pre-tokenizer.

    ``vocab``: the ordinary tokens in id order (word-initial pieces bare, continuations with
    ``##``); they take the ids the special tokens leave free (default: [PAD] [UNK] [CLS] [SEP]
    [MASK] are ids 0-4). Build one with ``WordPieceTokenizer.train(texts, vocab_size)``.
    """

    def __init__(
        self,
        vocab: Sequence[str] = (),
        special_tokens: Sequence[str] | Mapping[str, int] = BERT_SPECIAL_TOKENS,
        *,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        unk_token: str = "[UNK]",
        pad_token: str | None = "[PAD]",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        mask_token: str | None = "[MASK]",
    ):
        specials = dict(special_tokens) if isinstance(special_tokens, Mapping) else {t: i for i, t in enumerate(special_tokens)}
        for role, name in (("unk_token", unk_token), ("cls_token", cls_token), ("sep_token", sep_token)):
            if name not in specials:
                raise ValueError(f"WordPieceTokenizer: {role}={name!r} is missing from the special tokens {list(specials)}")
        super().__init__(specials, unk_token=unk_token, bos_token=None, eos_token=None, pad_token=pad_token)
        self.cls_token, self.sep_token = cls_token, sep_token
        if mask_token is not None and mask_token not in specials:
            raise ValueError(f"WordPieceTokenizer: mask_token={mask_token!r} is missing from the special tokens {list(specials)}")
        self.mask_token = mask_token
        self.lowercase, self.strip_accents = bool(lowercase), strip_accents
        vocab = list(vocab)
        n = len(vocab) + len(self._special_tokens)
        free = [i for i in range(n) if i not in self._special_ids]
        if len(free) != len(vocab):
            raise ValueError(f"special token ids {sorted(self._special_ids)} leave no contiguous room for {len(vocab)} tokens")
        self._id_to_str = [""] * n
        for i, t in self._special_ids.items():
            self._id_to_str[i] = t
        self._vocab: dict[str, int] = {}
        for i, t in zip(free, vocab):
            if not isinstance(t, str) or not t or t == PREFIX:
                raise ValueError(f"WordPieceTokenizer: vocabulary entries must be non-empty strings other than {PREFIX!r}, got {t!r}")
            if t in self._vocab or t in self._special_tokens:
                raise ValueError(f"WordPieceTokenizer: vocabulary entry {t!r} appears twice")
            self._vocab[t] = i
            self._id_to_str[i] = t
        self._cache: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ roles
    @property
    def cls_token_id(self) -> int:
        return self._special_tokens[self.cls_token]

    @property
    def sep_token_id(self) -> int:
        return self._special_tokens[self.sep_token]

    @property
    def mask_token_id(self) -> int | None:
        return self._role_id(self.mask_token)

    # ------------------------------------------------------------------ vocabulary
    # vocab_size, id_to_token, token_to_id, get_vocab: ListVocabTokenizer (base.py)

    # ------------------------------------------------------------------ encoding
    def pre_tokenize(self, text: str) -> list[tuple[str, int, int]]:
        return basic_tokenize(text, self.lowercase, self.strip_accents)

    def encode_word(self, word: str) -> list[int]:
        """Greedy longest-match-first: the ids of one pre-tokenized word, or ``[unk]`` if uncoverable.

        >>> tok = WordPieceTokenizer(["un", "##aff", "##able", "a"])
        >>> [tok.id_to_token(i) for i in tok.encode_word("unaffable")]
        ['un', '##aff', '##able']
        >>> [tok.id_to_token(i) for i in tok.encode_word("unx")]
        ['[UNK]']
        """
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        unk = [self.unk_token_id]
        if len(word) > MAX_INPUT_CHARS_PER_WORD:
            return unk
        ids, start, vocab = [], 0, self._vocab
        while start < len(word):
            end, found = len(word), None
            while end > start:  # the longest piece first
                piece = word[start:end] if start == 0 else PREFIX + word[start:end]
                found = vocab.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                ids = unk  # one uncoverable position makes the whole word [UNK]
                break
            ids.append(found)
            start = end
        if len(self._cache) < 100_000:
            self._cache[word] = ids
        return ids

    def _encode_ordinary(self, text: str) -> list[int]:
        return [i for w, _, _ in self.pre_tokenize(text) for i in self.encode_word(w)]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and each token's character span in ``text`` (an [UNK] spans its whole word)."""
        ids, offsets = [], []
        for w, s, e in self.pre_tokenize(text):
            pieces = self.encode_word(w)
            if pieces == [self.unk_token_id] or len(w) != e - s:  # spans inside a word need 1:1 characters
                ids.extend(pieces)
                offsets.extend([(s, e)] * len(pieces))
                continue
            pos = s
            for i in pieces:
                n = len(self._id_to_str[i]) - (len(PREFIX) if pos > s else 0)
                ids.append(i)
                offsets.append((pos, pos + n))
                pos += n
        return ids, offsets

    def encode_plus(self, text: str, text_pair: str | None = None, max_length: int | None = None,
                    return_offsets_mapping: bool = False) -> dict:
        """``[CLS] text [SEP]`` or ``[CLS] text [SEP] text_pair [SEP]`` as HF's tokenizer call returns it:
        ``{"input_ids", "token_type_ids", "attention_mask"}`` (+ ``"offset_mapping"``: (start, end)
        per token, (0, 0) for specials). ``max_length`` truncates the longer segment first, token
        by token ("longest_first"), until the whole fits."""
        (a, oa), (b, ob) = self._encode_segments(text, text_pair, max_length, n_special=3 if text_pair is not None else 2)
        cls, sep = self.cls_token_id, self.sep_token_id
        ids = [cls, *a, sep]
        offsets = [(0, 0), *oa, (0, 0)]
        types = [0] * len(ids)
        if text_pair is not None:
            ids += [*b, sep]
            offsets += [*ob, (0, 0)]
            types += [1] * (len(b) + 1)
        out = {"input_ids": ids, "token_type_ids": types, "attention_mask": [1] * len(ids)}
        if return_offsets_mapping:
            out["offset_mapping"] = offsets
        return out

    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        out: list[str] = []
        for i in ids:
            if skip_special_tokens and i in self._special_ids:
                continue
            t = self._id_to_str[i]
            if t.startswith(PREFIX) and out:
                out[-1] += t[len(PREFIX):]
            else:
                out.append(t)
        text = " ".join(out)
        for a, b in _CLEANUP:  # HF's WordPiece decoder cleanup: no space before punctuation and clitics
            text = text.replace(a, b)
        return text

    def coverage(self, texts: Iterable[str]) -> dict:
        """Share of words encoded without [UNK], and subword tokens per word."""
        words = unk = tokens = 0
        for text in texts:
            for w, _, _ in self.pre_tokenize(text):
                ids = self.encode_word(w)
                words += 1
                tokens += len(ids)
                unk += ids == [self.unk_token_id]
        return {"words": words, "covered": 1 - unk / max(words, 1), "tokens_per_word": tokens / max(words, 1)}

    # ------------------------------------------------------------------ training
    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str,
        vocab_size: int,
        min_frequency: int = 1,
        special_tokens: Sequence[str] = BERT_SPECIAL_TOKENS,
        *,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        show_progress: bool = False,
        **kwargs,
    ) -> "WordPieceTokenizer":
        """Learn a vocabulary of ``vocab_size`` entries (special tokens included).

        1. Count the pre-tokenized words (words seen fewer than ``min_frequency`` times are dropped).
        2. Start from every character: word-initial ones bare, the others as ``##c``.
        3. Repeat: merge the adjacent pair (a, b) with the highest freq(ab) / (freq(a)·freq(b))
           (ties: the more frequent pair, then the alphabetically first) into ``a + b`` without
           ``b``'s ``##``, until the vocabulary is full or no pair is left.

        Incremental, so it trains on megabytes: pair and unit counts are updated only in the words
        that contain the merged pair (``where``), and the best pair comes from a heap of scores
        instead of a scan of every pair. A merge changes the count of the pairs around it and the
        unit counts of a, b and the new unit only, so only those pairs get a fresh heap entry;
        older entries are skipped when popped if their score is out of date ("lazy deletion").
        ``train_naive`` is the textbook version (recount everything after every merge); the tests
        check that both give the same vocabulary.
        """
        import heapq

        from tqdm.auto import tqdm

        probe, splits, freq, vocab, room = _training_state(cls, texts, vocab_size, min_frequency, special_tokens,
                                                           lowercase, strip_accents, kwargs)
        unit: Counter = Counter()
        pair: Counter = Counter()
        where = defaultdict(set)  # pair -> indices of the words containing it
        with_unit = defaultdict(set)  # unit -> pairs it is part of
        for k, (s, f) in enumerate(zip(splits, freq)):
            for u in s:
                unit[u] += f
            for p in zip(s, s[1:]):
                pair[p] += f
                where[p].add(k)
                with_unit[p[0]].add(p)
                with_unit[p[1]].add(p)

        def key(p):  # heapq pops the smallest: best score, then count, then the alphabetically first pair
            c = pair[p]
            return (-c / (unit[p[0]] * unit[p[1]]), -c, p[0], p[1])

        heap = [key(p) for p in pair]
        heapq.heapify(heap)
        bar = tqdm(total=room - len(vocab), desc="wordpiece merges", disable=not show_progress, leave=False)
        while len(vocab) < room and pair:
            while True:  # the smallest entry whose score is still current
                entry = heapq.heappop(heap)
                best = entry[2:]
                if pair.get(best, 0) > 0 and entry == key(best):
                    break
            a, b = best
            new = a + b[len(PREFIX):]
            touched = set()
            for k in sorted(where.pop(best, ())):
                s, f = splits[k], freq[k]
                for u in s:  # remove this word's old counts ...
                    unit[u] -= f
                for p in zip(s, s[1:]):
                    pair[p] -= f
                    touched.add(p)
                    if p != best:
                        where[p].discard(k)
                merged = merge(s, (a, b), new)  # BPE's merge step, on ## units
                splits[k] = merged
                for u in merged:  # ... and add its new ones
                    unit[u] += f
                for p in zip(merged, merged[1:]):
                    pair[p] += f
                    where[p].add(k)
                    touched.add(p)
                    with_unit[p[0]].add(p)
                    with_unit[p[1]].add(p)
            for p in touched:
                if pair[p] <= 0:
                    del pair[p]
                    with_unit[p[0]].discard(p)
                    with_unit[p[1]].discard(p)
            # every pair whose score moved: its own count changed, or the count of a, b or new did
            for p in touched.union(*(with_unit[u] for u in (a, b, new))):
                if p in pair:
                    heapq.heappush(heap, key(p))
            if new not in vocab:
                vocab[new] = None
                bar.update(1)
        bar.close()
        return cls(list(vocab), probe._special_tokens, lowercase=lowercase, strip_accents=strip_accents, **kwargs)

    # ------------------------------------------------------------------ files
    def to_hf_json(self) -> dict:
        cls_, sep = self.cls_token, self.sep_token
        strip = self.lowercase if self.strip_accents is None else self.strip_accents
        post = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": cls_, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": sep, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": cls_, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": sep, "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": sep, "type_id": 1}}],
            "special_tokens": {t: {"id": t, "ids": [self._special_tokens[t]], "tokens": [t]} for t in (cls_, sep)},
        }
        return file_skeleton(
            added_tokens=self._hf_added_tokens(),
            normalizer={"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                        "strip_accents": strip, "lowercase": self.lowercase},
            pre_tokenizer={"type": "BertPreTokenizer"},
            post_processor=post,
            decoder={"type": "WordPiece", "prefix": PREFIX, "cleanup": True},
            model={"type": "WordPiece", "unk_token": self.unk_token, "continuing_subword_prefix": PREFIX,
                   "max_input_chars_per_word": MAX_INPUT_CHARS_PER_WORD, "vocab": self.get_vocab()},
        )

    def config(self) -> dict:
        cfg = super().config()
        cfg.update(tokenizer_class="BertTokenizerFast", cls_token=self.cls_token, sep_token=self.sep_token,
                   mask_token=self.mask_token, do_lower_case=self.lowercase)
        cfg["minillm"]["wordpiece"] = {"lowercase": self.lowercase, "strip_accents": self.strip_accents}
        return cfg

    @classmethod
    def _from_hf(cls, data: dict, config: dict, source: str) -> "WordPieceTokenizer":
        model = data.get("model")
        if not isinstance(model, dict) or model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
            raise ValueError(f"{source}: a WordPieceTokenizer needs a WordPiece model with a vocab")
        if model.get("continuing_subword_prefix", PREFIX) != PREFIX:
            raise ValueError(f"{source}: continuing_subword_prefix {model['continuing_subword_prefix']!r} is not supported (only '##')")
        specials = parse_added_tokens(data, source)
        unk = model.get("unk_token", "[UNK]")
        if unk not in model["vocab"]:
            raise ValueError(f"{source}: the vocabulary has no unk_token {unk!r}; WordPiece needs it for uncoverable words")
        specials.setdefault(unk, model["vocab"][unk])
        norm = data.get("normalizer") or {}
        lowercase = bool(norm.get("lowercase", True))
        strip = norm.get("strip_accents")
        mini = ((config.get("minillm") or {}).get("wordpiece") or {}) if isinstance(config.get("minillm"), dict) else {}
        items = sorted(((i, t) for t, i in model["vocab"].items() if t not in specials), key=lambda x: x[0])
        names = {"unk_token": unk}
        for role, default in (("cls_token", "[CLS]"), ("sep_token", "[SEP]"), ("pad_token", "[PAD]"), ("mask_token", "[MASK]")):
            name = config.get(role, default)
            name = name.get("content") if isinstance(name, dict) else name
            if role in ("pad_token", "mask_token") and name not in specials:
                name = None
            names[role] = name
        tok = cls([t for _, t in items], specials, lowercase=mini.get("lowercase", lowercase),
                  strip_accents=mini.get("strip_accents", strip), **names)
        if tok.get_vocab() != {**model["vocab"], **specials}:
            raise ValueError(f"{source}: vocabulary ids are not contiguous from 0")
        return tok

    @classmethod
    def from_vocab_file(cls, path, lowercase: bool = True, strip_accents: bool | None = None) -> "WordPieceTokenizer":
        """Read BERT's ``vocab.txt`` (one token a line; line number = id). The bracketed tokens
        ``[PAD] [UNK] [CLS] [SEP] [MASK]`` that occur become special tokens; ``[UNK]``, ``[CLS]``
        and ``[SEP]`` must occur (``ValueError`` naming the missing one)."""
        with open(path, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
        specials = {t: i for i, t in enumerate(lines) if t in BERT_SPECIAL_TOKENS}
        for need in ("[UNK]", "[CLS]", "[SEP]"):
            if need not in specials:
                raise ValueError(f"{path}: vocab file has no {need} token (WordPiece needs [UNK] for uncoverable words, "
                                 "[CLS]/[SEP] for BERT's inputs)")
        return cls([t for t in lines if t not in specials], specials, lowercase=lowercase, strip_accents=strip_accents,
                   pad_token="[PAD]" if "[PAD]" in specials else None,
                   mask_token="[MASK]" if "[MASK]" in specials else None)

    def _listings(self) -> dict[str, str]:
        return {"vocab.txt": "\n".join(self._id_to_str) + "\n"}


def _training_state(cls, texts, vocab_size, min_frequency, special_tokens, lowercase, strip_accents, kwargs):
    """What both trainers start from: (probe tokenizer, each word's units, word counts, the
    alphabet as an ordered dict, room for ordinary tokens)."""
    probe = cls((), special_tokens, lowercase=lowercase, strip_accents=strip_accents, **kwargs)
    chunks: Counter = Counter()
    for text in training_texts(texts, "WordPieceTokenizer.train"):
        chunks.update(text.split())  # whitespace ends every word, so pre-tokenize each distinct chunk once
    counts: Counter = Counter()
    for chunk, c in chunks.items():
        for w, _, _ in probe.pre_tokenize(chunk):
            counts[w] += c
    words = [(w, c) for w, c in sorted(counts.items()) if c >= min_frequency and len(w) <= MAX_INPUT_CHARS_PER_WORD]
    splits = [[w[0]] + [PREFIX + ch for ch in w[1:]] for w, _ in words]
    freq = [c for _, c in words]
    vocab: dict[str, None] = {}
    for s in splits:  # alphabet, in first-seen order of the sorted words
        for u in s:
            vocab.setdefault(u, None)
    room = vocab_size - len(probe._special_tokens)
    if room < len(vocab):
        raise ValueError(f"WordPieceTokenizer.train: vocab_size={vocab_size} is smaller than the "
                         f"{len(probe._special_tokens)} special tokens + {len(vocab)} characters of the alphabet")
    return probe, splits, freq, vocab, room


def train_naive(
    texts: Iterable[str] | str,
    vocab_size: int,
    min_frequency: int = 1,
    special_tokens: Sequence[str] = BERT_SPECIAL_TOKENS,
    *,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    **kwargs,
) -> WordPieceTokenizer:
    """The textbook WordPiece trainer: after every merge, recount every unit and every pair of the
    whole corpus and scan them all for the best score. Same result as ``WordPieceTokenizer.train``
    (same tie-breaking), but O(merges × corpus): for learning and as the tests' reference."""
    probe, splits, freq, vocab, room = _training_state(WordPieceTokenizer, texts, vocab_size, min_frequency,
                                                       special_tokens, lowercase, strip_accents, kwargs)
    while len(vocab) < room:
        unit: Counter = Counter()
        pair: Counter = Counter()
        for s, f in zip(splits, freq):  # the whole corpus, every time
            for u in s:
                unit[u] += f
            for p in zip(s, s[1:]):
                pair[p] += f
        if not pair:
            break
        a, b = max(pair, key=lambda p: (pair[p] / (unit[p[0]] * unit[p[1]]), pair[p], _neg(p)))
        new = a + b[len(PREFIX):]
        splits = [merge(s, (a, b), new) for s in splits]
        vocab.setdefault(new, None)
    return WordPieceTokenizer(list(vocab), probe._special_tokens, lowercase=lowercase, strip_accents=strip_accents,
                              **kwargs)


_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _neg(p: tuple) -> tuple:
    """Sort key that makes ``max`` prefer the alphabetically *first* pair on ties."""
    return tuple(tuple(-ord(c) for c in s) + (1,) for s in p)
