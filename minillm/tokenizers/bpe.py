"""Happy LLM 5.2.3–5.2.4 — byte-level BPE (Byte Pair Encoding).

BPE starts from the 256 byte values (so every string can be encoded: there is
no "unknown" text) and repeatedly *merges* the most frequent adjacent pair of
tokens into a new token, until the vocabulary has the wanted size.  Encoding
replays the merges in the order they were learned.

The classic example: ``aaabdaaabac``

==========  ===========================  ==============================
merge       sequence                     why
==========  ===========================  ==============================
(start)     a a a b d a a a b a c        counts: (a,a)=4 (a,b)=2 ...
a a -> Z    Z a b d Z a b a c            (a,a) is the most frequent pair
a b -> Y    Z Y d Z Y a c                (Z,a)=(a,b)=2: ties go to the smaller pair
Z Y -> X    X d X a c                    (Z,Y)=2
==========  ===========================  ==============================

The readable algorithm is ``get_stats`` + ``merge`` + ``train_naive`` below
(minbpe style): it recounts every pair of the whole corpus after each merge,
so it needs O(merges x corpus) time.  ``BPETokenizer.train`` learns exactly the
same merges (the tests check it) much faster:

1. **pre-tokenize** the text with a regex (GPT-4's by default) into chunks such
   as ``" the"``, ``"ing"``, ``"2024"``; merges never cross a chunk boundary;
2. **deduplicate**: count each distinct chunk ("word") once with its frequency;
3. count pairs once, and keep an index *pair -> words that contain it*;
4. for each merge, touch only the words that contain the merged pair and
   update the counts of the pairs around each occurrence (``_kernels.py``);
5. pick the next pair with a priority queue with lazy updates: counts only go
   down, so a popped entry whose count is out of date is pushed back with its
   real count, and the first up-to-date entry is the true maximum.

Ties are broken by the smaller pair of ids, so training is reproducible.

Encoding caches the ids of each chunk: natural text repeats its words, so most
chunks are looked up, not merged.  Misses are merged by a Numba kernel (a
min-heap over merge ranks, as in Hugging Face ``tokenizers``).

Normalization (``normalization="NFKC"``) folds look-alike characters (full-width
``ＡＢＣ`` -> ``ABC``, ``①`` -> ``1``, ligatures) before splitting, which makes
the vocabulary a little more efficient, but ``decode(encode(s))`` then returns
the *normalized* text instead of ``s``.  It is off by default so that the round
trip is exact.
"""

from __future__ import annotations

import heapq
import unicodedata
from collections import Counter
from typing import Iterable, Mapping, Sequence

import numpy as np
import regex

from . import _fast_encode as FE
from . import _kernels as K
from .base import _AUTO, DEFAULT_SPECIAL_TOKENS, Tokenizer, training_texts
from .hf_json import (
    NORMALIZATIONS,
    bos_post_processor,
    byte_level_pre_tokenizer,
    bytes_to_unicode,
    check_vocab_ids,
    file_skeleton,
    normalizer_json,
    parse_added_tokens,
    parse_byte_level_pattern,
    parse_normalizer,
    token_bytes,
    token_string,
)

__all__ = [
    "BPETokenizer",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "get_stats",
    "merge",
    "train_naive",
    "encode_naive",
]

#: GPT-2's pre-tokenization regex: contractions, letters, numbers, other symbols, spaces.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

#: GPT-4's (cl100k) regex: case-insensitive contractions, numbers in groups of
#: at most 3 digits, and newlines kept apart from other whitespace.
GPT4_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)


#: GPT-4's regex with every digit on its own (LLaMA's ``split_digits``): a number is then one
#: token per digit, which a tiny model copies far more easily than arbitrary multi-digit merges
#: (the agent of 7.3 copies numbers from the question into a tool call and back).
DIGITS_PATTERN = GPT4_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")

#: Patterns written by this project, known to run in linear time: used without a time limit.
KNOWN_PATTERNS = frozenset({GPT2_PATTERN, GPT4_PATTERN, DIGITS_PATTERN})

#: Texts a backtracking-prone pattern is tried on when it is loaded from a file.
_PROBES = ("a" * 28 + "!", " " * 28 + "!", "1" * 28 + "!", "aA1 .\n" * 6 + "\x00", "汤姆" * 14 + "!")


def regex_timeout(n_chars: int) -> float:
    """Seconds a file's pattern may take on ``n_chars`` characters: far more than any linear pattern needs."""
    return 2.0 + n_chars * 2e-6


def check_pattern_cost(pattern: str, source: str, limit: float = 0.25) -> None:
    """Refuse a pre-tokenizer pattern from a file that backtracks catastrophically on short probes
    (``(a|a)+$`` takes minutes on 40 characters); other patterns still run with ``regex_timeout``."""
    if pattern in KNOWN_PATTERNS:
        return
    try:
        compiled = regex.compile(pattern)
    except (regex.error, TypeError) as e:
        raise ValueError(f"{source}: invalid pre_tokenizer pattern {pattern!r}: {e}") from None
    for probe in _PROBES:
        try:
            compiled.findall(probe, timeout=limit)
        except TimeoutError:
            raise ValueError(
                f"{source}: the pre_tokenizer pattern {pattern!r} needs more than {limit}s on the {len(probe)}-character "
                f"text {probe[:12]!r}...: it backtracks catastrophically; refused"
            ) from None


# --------------------------------------------------------------------------- #
# The readable algorithm (minbpe style)
# --------------------------------------------------------------------------- #
def get_stats(ids: Sequence[int], counts: dict | None = None) -> dict[tuple[int, int], int]:
    """Count adjacent pairs.

    >>> get_stats([1, 2, 3, 1, 2])
    {(1, 2): 2, (2, 3): 1, (3, 1): 1}

    Pass ``counts`` to add to an existing dict (used to count many chunks).
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: Sequence[int], pair: tuple[int, int], idx: int) -> list[int]:
    """Replace every occurrence of ``pair`` by ``idx``, left to right.

    >>> merge([1, 2, 3, 1, 2], (1, 2), 4)
    [4, 3, 4]
    >>> merge([5, 5, 5], (5, 5), 6)   # overlapping: the left pair wins
    [6, 5]
    """
    out = []
    i = 0
    while i < len(ids):
        if i < len(ids) - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _n_texts(texts) -> int | None:
    """How many training texts there are, for the progress bar (None for a stream without a length)."""
    return 1 if isinstance(texts, str) else len(texts) if hasattr(texts, "__len__") else None


def train_naive(
    text: str | Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    special_tokens: Sequence[str] | Mapping[str, int] = DEFAULT_SPECIAL_TOKENS,
    *,
    pattern: str | None = None,
    normalization: str | None = None,
) -> "BPETokenizer":
    """The textbook trainer: recount every pair of the corpus after every merge.

    Same result as ``BPETokenizer.train`` (same tie-breaking: highest count,
    then the smaller pair), but O(merges x corpus): use it to learn and as the
    benchmark's baseline, not on real corpora.
    """
    tok = BPETokenizer(special_tokens=special_tokens, pattern=GPT4_PATTERN if pattern is None else pattern,
                       normalization=normalization)
    texts = list(training_texts(text, "train_naive"))
    chunks = [[int(tok._byte_ids[b]) for b in c.encode("utf-8")] for t in texts for c in tok._training_chunks(t)]
    id_to_bytes = list(tok._id_to_bytes)
    bytes_to_id = {b: i for i, b in enumerate(id_to_bytes) if b is not None}
    special_bytes = {s.encode("utf-8") for s in tok._special_tokens}
    merges: list[tuple[int, int, int]] = []
    done: set[tuple[int, int]] = set()
    banned: set[tuple[int, int]] = set()
    while len(id_to_bytes) < vocab_size:
        stats: dict[tuple[int, int], int] = {}
        for c in chunks:  # the whole corpus, every time
            get_stats(c, stats)
        candidates = [(n, p) for p, n in stats.items() if p not in done and p not in banned]
        if not candidates:
            break
        # Highest count first; among equal counts the smaller pair (a, b).
        n, pair = min(candidates, key=lambda np_: (-np_[0], np_[1]))
        if n < min_frequency:
            break
        new = id_to_bytes[pair[0]] + id_to_bytes[pair[1]]
        if new in special_bytes:  # never learn a token that spells a special token
            banned.add(pair)
            continue
        idx = bytes_to_id.get(new)
        if idx is None:  # a string reached by a second merge path keeps its first id
            idx = len(id_to_bytes)
            id_to_bytes.append(new)
            bytes_to_id[new] = idx
        merges.append((pair[0], pair[1], idx))
        done.add(pair)
        chunks = [merge(c, pair, idx) for c in chunks]
    return BPETokenizer(merges, special_tokens=tok._special_tokens, pattern=tok.pattern, normalization=normalization,
                        byte_ids=tok._byte_ids.tolist())


def encode_naive(tokenizer: "BPETokenizer", text: str) -> list[int]:
    """The textbook encoder: per chunk, merge the lowest-rank pair until none is left.

    Gives the same ids as ``tokenizer.encode_ordinary(text)`` (the fast path uses
    a heap and a cache instead of rescanning).
    """
    ranks = tokenizer._ranks
    out: list[int] = []
    for chunk in tokenizer._pretokenize(text):
        ids = [int(tokenizer._byte_ids[b]) for b in chunk.encode("utf-8")]
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, float("inf")))
            if pair not in ranks:
                break  # nothing left to merge
            ids = merge(ids, pair, tokenizer._merge_new[ranks[pair]])
        out.extend(ids)
    return out


# --------------------------------------------------------------------------- #
# The tokenizer
# --------------------------------------------------------------------------- #
class BPETokenizer(Tokenizer):
    """Byte-level BPE with regex pre-tokenization and special tokens.

    >>> tok = BPETokenizer.train(["aaabdaaabac"], vocab_size=6 + 256 + 3, show_progress=False)
    >>> [(tok.id_to_bytes(a), tok.id_to_bytes(b)) for a, b in tok.merges]
    [(b'a', b'a'), (b'a', b'b'), (b'aa', b'ab')]
    >>> tok.encode("aaabdaaabac")
    [264, 106, 264, 103, 105]
    >>> tok.decode(tok.encode("aaabdaaabac"))
    'aaabdaaabac'

    Layout of the default vocabulary: ids 0-5 are the special tokens
    ``<unk> <s> </s> <|im_start|> <|im_end|> <pad>``, ids 6-261 the bytes 0-255,
    and the merges follow in the order they were learned.

    Parameters
    ----------
    merges: ``(a, b)`` pairs, or ``(a, b, new_id)`` triples, in rank order.
        Pairs get consecutive new ids after the bytes.
    special_tokens: names (ids 0, 1, ...) or a ``{name: id}`` mapping.
    pattern: the pre-tokenization regex (``regex`` module syntax); gaps between
        matches become chunks of their own, so no text is ever dropped.
    normalization: ``None`` (exact round trip) or ``"NFC" | "NFD" | "NFKC" | "NFKD"``.
    byte_ids: the id of each byte value (default: right after the special tokens).
    cache_size: how many distinct chunks the encode cache keeps.
    """

    def __init__(
        self,
        merges: Sequence[Sequence[int]] = (),
        special_tokens: Sequence[str] | Mapping[str, int] = DEFAULT_SPECIAL_TOKENS,
        *,
        pattern: str = GPT4_PATTERN,
        normalization: str | None = None,
        byte_ids: Sequence[int] | None = None,
        cache_size: int = 100_000,
        unk_token: str | None = _AUTO,
        bos_token: str | None = _AUTO,
        eos_token: str | None = _AUTO,
        pad_token: str | None = _AUTO,
        default_system: str | None = None,
    ):
        super().__init__(special_tokens, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token,
                         pad_token=pad_token, default_system=default_system)
        if normalization is not None and normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be None or one of {NORMALIZATIONS}, got {normalization!r}")
        self.normalization = normalization
        self.pattern = pattern
        try:
            self._pat = regex.compile(pattern)
        except (regex.error, TypeError) as e:
            raise ValueError(f"invalid pre-tokenization pattern {pattern!r}: {e}") from None
        # our own patterns are known to be linear; any other one (a file's) runs with a time limit
        self._guarded = pattern not in KNOWN_PATTERNS
        self.cache_size = int(cache_size)

        # ---- ids: special tokens, then the 256 bytes, then one id per merge ----
        n_special = max(self._special_ids, default=-1) + 1
        if byte_ids is None:
            byte_ids = range(n_special, n_special + 256)
        byte_ids = [int(i) for i in byte_ids]
        if len(byte_ids) != 256 or len(set(byte_ids)) != 256:
            raise ValueError("byte_ids must give 256 distinct ids, one per byte value")
        table: dict[int, bytes | None] = {i: None for i in self._special_ids}
        for b, i in enumerate(byte_ids):
            if i < 0 or i in table:
                raise ValueError(f"byte {b} has id {i}, which is negative or already used")
            table[i] = bytes([b])
        triples: list[tuple[int, int, int]] = []
        for rank, m in enumerate(merges):
            m = tuple(int(x) for x in m)
            if len(m) == 2:
                m = (m[0], m[1], max(table) + 1)
            if len(m) != 3:
                raise ValueError(f"merge {rank} must be (a, b) or (a, b, new_id), got {m}")
            a, b, new = m
            for x in (a, b):
                if table.get(x) is None:
                    raise ValueError(f"merge {rank} {m} uses id {x}, which is not a byte or an earlier merge")
            data = table[a] + table[b]
            if new in table and table[new] != data:
                raise ValueError(f"merge {rank} {m}: id {new} already means {table[new]!r}, not {data!r}")
            table[new] = data
            triples.append((a, b, new))
        n = max(table) + 1
        missing = [i for i in range(n) if i not in table]
        if missing:
            raise ValueError(f"token ids must be contiguous; missing ids {missing[:10]}")
        self._id_to_bytes: list[bytes | None] = [table[i] for i in range(n)]
        self._bytes_to_id = {b: i for i, b in enumerate(self._id_to_bytes) if b is not None}
        self._byte_ids = np.array(byte_ids, dtype=np.int64)
        self._merges = triples
        self._ranks: dict[tuple[int, int], int] = {}
        for r, (a, b, _) in enumerate(triples):
            self._ranks.setdefault((a, b), r)
        self._merge_new = np.array([t[2] for t in triples], dtype=np.int64)
        left = np.array([t[0] for t in triples], dtype=np.int64)
        right = np.array([t[1] for t in triples], dtype=np.int64)
        self._table = K.build_merge_table(left, right, self._merge_new)
        # decode tables: id -> bytes, with special tokens spelled out or skipped
        self._decode_bytes = [
            b if b is not None else self._special_ids[i].encode("utf-8") for i, b in enumerate(self._id_to_bytes)
        ]
        self._decode_bytes_skip = [b if b is not None else b"" for b in self._id_to_bytes]
        self._cache: dict[str, tuple[int, ...]] = {}  # the readable path's chunk cache
        # The compiled whole-text encoder (``_fast_encode``) knows this project's patterns only.
        self._fast_mode = {GPT4_PATTERN: FE.MODE_GPT4, DIGITS_PATTERN: FE.MODE_DIGITS}.get(pattern)
        self._fast_cache: FE.EncodeCache | None = None  # its chunk cache, made on first use

    # ------------------------------------------------------------------ #
    # Vocabulary
    # ------------------------------------------------------------------ #
    @property
    def vocab_size(self) -> int:
        return len(self._id_to_bytes)

    @property
    def merges(self) -> dict[tuple[int, int], int]:
        """``{(a, b): new_id}`` in the order the merges were learned (minbpe's ``merges``)."""
        return {(a, b): new for a, b, new in self._merges}

    @property
    def vocab(self) -> dict[int, bytes]:
        """``{id: bytes}`` for every id (special tokens spelled as their UTF-8 text)."""
        return dict(enumerate(self._decode_bytes))

    def id_to_bytes(self, token_id: int) -> bytes:
        """The raw bytes of a token (a special token gives its UTF-8 text)."""
        self._check_id(token_id, "id_to_bytes")
        return self._decode_bytes[token_id]

    def id_to_token(self, token_id: int) -> str:
        """The token's string as in ``tokenizer.json``: byte-level (``" the"`` is ``"Ġthe"``)."""
        self._check_id(token_id, "id_to_token")
        data = self._id_to_bytes[token_id]
        return self._special_ids[token_id] if data is None else token_string(data)

    def token_to_id(self, token: str) -> int | None:
        """Inverse of ``id_to_token`` (special tokens by their text); ``None`` if absent."""
        if token in self._special_tokens:
            return self._special_tokens[token]
        try:
            data = token_bytes(token)
        except ValueError:
            return None
        return self._bytes_to_id.get(data)

    def get_vocab(self) -> dict[str, int]:
        """``{token string: id}`` as in ``tokenizer.json``."""
        return {self.id_to_token(i): i for i in range(self.vocab_size)}

    # ------------------------------------------------------------------ #
    # Pre-tokenization
    # ------------------------------------------------------------------ #
    def _normalize(self, text: str) -> str:
        return unicodedata.normalize(self.normalization, text) if self.normalization else text

    def _pretokenize(self, text: str) -> list[str]:
        """Normalize and cut ordinary text into chunks; the chunks always concatenate back to the text.

        >>> BPETokenizer()._pretokenize("Hello world's 12345!!\\n")
        ['Hello', ' world', "'s", ' ', '123', '45', '!!\\n']
        """
        text = self._normalize(text)
        timeout = regex_timeout(len(text)) if self._guarded else None
        try:
            if self._pat.groups == 0:
                chunks = self._pat.findall(text, timeout=timeout)
                if sum(map(len, chunks)) == len(text):
                    return chunks
            # The pattern skips some characters (or has groups): keep the gaps as chunks too,
            # as Hugging Face's Split(behavior="Isolated") does.
            chunks, pos = [], 0
            for m in self._pat.finditer(text, timeout=timeout):
                if m.start() > pos:
                    chunks.append(text[pos : m.start()])
                if m.end() > m.start():
                    chunks.append(m.group())
                pos = m.end()
        except TimeoutError:
            raise ValueError(
                f"the pre-tokenization pattern {self.pattern!r} took more than {timeout:.1f}s on a text of {len(text)} "
                "characters (catastrophic backtracking); use a tokenizer with a linear pattern such as GPT4_PATTERN"
            ) from None
        if pos < len(text):
            chunks.append(text[pos:])
        return chunks

    # ------------------------------------------------------------------ #
    # Encoding / decoding
    # ------------------------------------------------------------------ #
    def _encode_chunks(self, chunks: list[str]) -> list[tuple[int, ...]]:
        """BPE-merge a list of chunks in one kernel call."""
        try:
            data = [c.encode("utf-8") for c in chunks]
        except UnicodeEncodeError as e:
            raise ValueError(f"text contains a lone surrogate {e.object[e.start:e.end]!r}, which is not valid Unicode "
                             f"and cannot be encoded as UTF-8") from None
        offsets = np.zeros(len(data) + 1, dtype=np.int64)
        np.cumsum([len(d) for d in data], out=offsets[1:])
        sym = self._byte_ids[np.frombuffer(b"".join(data), dtype=np.uint8)]
        keys, ranks, mask = self._table
        out, out_off = K.kernel(K.bpe_encode_chunks)(sym, offsets, keys, ranks, mask, self._merge_new)
        flat, off = out.tolist(), out_off.tolist()
        return [tuple(flat[off[i] : off[i + 1]]) for i in range(len(chunks))]

    def _encode_ordinary(self, text: str) -> list[int]:
        if self._fast_mode is not None and K.use_numba():
            return self._encode_ordinary_compiled(text)
        return self._encode_ordinary_readable(text)

    def _encode_ordinary_compiled(self, text: str) -> list[int]:
        """The same ids as ``_encode_ordinary_readable`` (tested), in one compiled call:
        scanner, cache and merges all in ``_fast_encode.encode_text``."""
        text = self._normalize(text)
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"text contains a lone surrogate {e.object[e.start:e.end]!r}, which is not valid Unicode "
                             f"and cannot be encoded as UTF-8") from None
        if self._fast_cache is None:  # first use: the cache, and the kernel's arguments once for all calls
            self._fast_cache = FE.EncodeCache(self.cache_size)
            self._fast_args = (FE.char_table(), self._fast_mode, self._byte_ids, *self._table, self._merge_new,
                               FE.EncodeCache.max_chunk, *self._fast_cache.arrays())
        return FE.encode_text(np.frombuffer(data, np.uint8), *self._fast_args).tolist()

    def _encode_ordinary_readable(self, text: str) -> list[int]:
        """Pre-tokenize with ``regex``, look each chunk up in a dict, merge the misses."""
        chunks = self._pretokenize(text)
        cache = self._cache
        misses = dict.fromkeys(c for c in chunks if c not in cache)
        if misses:
            if len(cache) + len(misses) > self.cache_size:
                cache.clear()  # simple bound on memory; natural text refills it quickly
                misses = dict.fromkeys(chunks)
            cache.update(zip(misses, self._encode_chunks(list(misses))))
        out: list[int] = []
        for ids in map(cache.__getitem__, chunks):
            out.extend(ids)
        return out

    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        table = self._decode_bytes_skip if skip_special_tokens else self._decode_bytes
        # Bytes first, text last: a character may span several tokens.
        return b"".join(map(table.__getitem__, ids)).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ #
    # Training
    # ------------------------------------------------------------------ #
    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str,
        vocab_size: int,
        min_frequency: int = 2,
        special_tokens: Sequence[str] | Mapping[str, int] = DEFAULT_SPECIAL_TOKENS,
        *,
        pattern: str = GPT4_PATTERN,
        normalization: str | None = None,
        show_progress: bool = True,
        **kwargs,
    ) -> "BPETokenizer":
        """Learn merges from ``texts`` until the vocabulary has ``vocab_size`` ids.

        ``vocab_size`` counts everything: special tokens + 256 bytes + merges.
        Training stops early when the most frequent pair occurs fewer than
        ``min_frequency`` times.  Special-token strings inside the texts are cut
        out before counting.  ``texts`` may be any iterable (a generator that
        streams a large file is fine: only the distinct chunks are kept).
        """
        tok = cls(special_tokens=special_tokens, pattern=pattern, normalization=normalization, **kwargs)
        if not isinstance(vocab_size, (int, np.integer)) or vocab_size < tok.vocab_size:
            raise ValueError(f"vocab_size={vocab_size!r} is too small: the special tokens and 256 bytes already "
                             f"need {tok.vocab_size}")
        if not isinstance(min_frequency, (int, np.integer)) or min_frequency < 1:
            raise ValueError(f"min_frequency must be an integer >= 1, got {min_frequency!r}")

        # 1-3. pre-tokenize, count distinct chunks ("words"), flat arrays of those that can merge (>= 2 bytes)
        if K.use_numba() and tok._fast_mode is not None:
            ids, starts, lens, freqs = tok._word_arrays_compiled(texts, show_progress)
        else:
            ids, starts, lens, freqs = tok._word_arrays(texts, show_progress)

        # 4-5. merge loop: compiled (the state stays in arrays), or the readable twin
        merge_loop = _merge_loop_compiled if K.use_numba() else _merge_loop_readable
        merges = merge_loop(tok, ids, starts, lens, freqs, vocab_size, min_frequency, show_progress)
        return cls(merges, special_tokens=tok._special_tokens, pattern=pattern, normalization=normalization,
                   byte_ids=tok._byte_ids.tolist(), **kwargs)

    def _word_arrays(self, texts, show_progress: bool):
        """Distinct chunks of ``texts`` with a ``Counter``: their byte ids laid end to end
        (``ids[starts[w]:starts[w] + lens[w]]``) and counts ``freqs``, for chunks of >= 2 bytes."""
        tok = self
        word_counts = tok._count_words(texts, show_progress)
        words = [w.encode("utf-8") for w in word_counts]
        keep = [i for i, w in enumerate(words) if len(w) >= 2]
        freq_list = list(word_counts.values())
        lens = np.array([len(words[i]) for i in keep], dtype=np.int64)
        starts = np.zeros(len(keep), dtype=np.int64)
        if len(keep) > 1:
            np.cumsum(lens[:-1], out=starts[1:])
        ids = tok._byte_ids[np.frombuffer(b"".join(words[i] for i in keep), dtype=np.uint8)].copy()
        freqs = np.array([freq_list[i] for i in keep], dtype=np.int64)
        return ids, starts, lens, freqs

    def _word_arrays_compiled(self, texts, show_progress: bool):
        """``_word_arrays`` without Python strings per chunk: the compiled scanner
        (``_fast_encode.count_chunks``) counts the chunks in a hash table over their bytes.
        Same words and counts (in the same first-seen order)."""
        from tqdm.auto import tqdm

        counts = FE.ChunkCounts()
        table = FE.char_table()
        specials = self._special_regex(frozenset(self._special_tokens)) if self._special_tokens else None
        for i, text in enumerate(tqdm(training_texts(texts, "BPETokenizer.train"), total=_n_texts(texts),
                                      desc="counting words", unit=" texts", disable=not show_progress, leave=False)):
            for piece in (specials.split(text) if specials is not None else (text,)):  # special tokens cut out
                try:
                    data = self._normalize(piece).encode("utf-8")
                except UnicodeEncodeError as e:
                    raise ValueError(f"training text {i} contains a lone surrogate {e.object[e.start:e.end]!r}, which is "
                                     f"not valid Unicode and cannot be encoded as UTF-8") from None
                counts.add(np.frombuffer(data, np.uint8), table, self._fast_mode)
        meta = counts.meta[: counts.state[0]]
        keep = meta[:, 2] >= 2
        ids = self._byte_ids[counts.data[: counts.state[1]]]  # every word's bytes; one-byte words are skipped below
        return ids, meta[keep, 1].copy(), meta[keep, 2].copy(), meta[keep, 3].copy()

    def _count_words(self, texts: Iterable[str] | str, show_progress: bool = False) -> Counter:
        """Pre-tokenize every text and count the distinct chunks (special tokens cut out)."""
        from tqdm.auto import tqdm

        counts: Counter = Counter()
        for text in tqdm(training_texts(texts, "BPETokenizer.train"), total=_n_texts(texts), desc="counting words",
                         unit=" texts", disable=not show_progress, leave=False):
            counts.update(self._training_chunks(text))
        return counts

    def _training_chunks(self, text: str) -> list[str]:
        """Chunks of a training text, with special-token strings cut out (they are never merged)."""
        if not self._special_tokens:
            return self._pretokenize(text)
        chunks: list[str] = []
        for piece in self._special_regex(frozenset(self._special_tokens)).split(text):
            chunks.extend(self._pretokenize(piece))
        return chunks

    # ------------------------------------------------------------------ #
    # Files
    # ------------------------------------------------------------------ #
    def _hf_token(self, i: int) -> str:
        data = self._id_to_bytes[i]
        return self._special_ids[i] if data is None else token_string(data)

    def to_hf_json(self) -> dict:
        """This tokenizer as a Hugging Face ``tokenizer.json`` dict."""
        vocab: dict[str, int] = {}
        for i in range(self.vocab_size):
            t = self._hf_token(i)
            if t in vocab:
                raise ValueError(f"tokens {vocab[t]} and {i} are both spelled {t!r}; tokenizer.json needs unique strings")
            vocab[t] = i
        model = {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,  # byte-level: nothing is ever unknown
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [[self._hf_token(a), self._hf_token(b)] for a, b, _ in self._merges],
        }
        return file_skeleton(
            added_tokens=self._hf_added_tokens(),
            normalizer=normalizer_json(self.normalization),
            pre_tokenizer=byte_level_pre_tokenizer(self.pattern),
            post_processor=bos_post_processor(self.bos_token, self.bos_token_id),
            decoder={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            model=model,
        )

    @classmethod
    def _from_hf(cls, data: dict, config: dict, source: str) -> "BPETokenizer":
        model = data.get("model")
        if not isinstance(model, dict) or model.get("type") != "BPE":
            raise ValueError(f"{source}: model.type must be 'BPE' for a BPETokenizer")
        for field in ("continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(field):
                raise ValueError(f"{source}: model.{field}={model[field]!r} is not supported (byte-level BPE only)")
        if model.get("ignore_merges"):
            raise ValueError(f"{source}: model.ignore_merges=true is not supported")
        vocab = model.get("vocab")
        merges_json = model.get("merges")
        if not isinstance(vocab, dict) or not isinstance(merges_json, list):
            raise ValueError(f"{source}: model must have a 'vocab' object and a 'merges' list")
        specials = parse_added_tokens(data, source)
        check_vocab_ids(vocab, specials, source)  # before any table is sized by an id
        pattern = parse_byte_level_pattern(data.get("pre_tokenizer"), GPT2_PATTERN, source)
        if not isinstance(pattern, str):
            raise ValueError(f"{source}: the pre_tokenizer's Regex must be a string, got {pattern!r}")
        check_pattern_cost(pattern, source)
        normalization = parse_normalizer(data.get("normalizer"), source)
        special_ids = set(specials.values())
        byte_table = bytes_to_unicode()
        try:
            byte_ids = [vocab[byte_table[b]] for b in range(256)]
        except KeyError as e:
            raise ValueError(f"{source}: the vocabulary lacks the byte token {e.args[0]!r}; not a byte-level BPE") from None
        for tok, i in vocab.items():
            if i not in special_ids:
                token_bytes(tok, source)  # raises if not byte-level
        merges = []
        for r, m in enumerate(merges_json):
            if isinstance(m, str):
                parts = m.split(" ")
            elif isinstance(m, list):
                parts = m
            else:
                parts = []
            if len(parts) != 2 or not all(isinstance(p, str) for p in parts):
                raise ValueError(f"{source}: merge {r} is malformed: {m!r}")
            a, b = parts
            for t in (a, b, a + b):
                if t not in vocab:
                    raise ValueError(f"{source}: merge {r} {m!r} refers to {t!r}, which is not in the vocabulary")
            merges.append((vocab[a], vocab[b], vocab[a + b]))
        tok = cls(merges, special_tokens=specials, pattern=pattern, normalization=normalization, byte_ids=byte_ids,
                  unk_token=_AUTO, bos_token=_AUTO, eos_token=_AUTO, pad_token=_AUTO)
        if tok.vocab_size != len(vocab):
            raise ValueError(f"{source}: vocabulary has {len(vocab)} entries but merges and bytes define {tok.vocab_size}")
        tok._roles_from_config(config)
        return tok

    def _listings(self) -> dict[str, str]:
        merges = ["#version: 0.2"]  # GPT-2 / Hugging Face merges.txt format, in rank order
        merges += [f"{self._hf_token(a)} {self._hf_token(b)}" for a, b, _ in self._merges]
        vocab = ["# id\ttoken (byte-level, as in tokenizer.json)\ttext (Python repr of the decoded bytes)"]
        for i in range(self.vocab_size):
            text = self._decode_bytes[i].decode("utf-8", errors="backslashreplace")
            vocab.append(f"{i}\t{self._hf_token(i)}\t{text!r}")
        return {"merges.txt": "\n".join(merges) + "\n", "vocab.txt": "\n".join(vocab) + "\n"}


# --------------------------------------------------------------------------- #
# Training's merge loop (steps 3-5 of the module docstring), two ways
# --------------------------------------------------------------------------- #
class _NewIds:
    """Ids of merged strings while training: a string reached by a second merge path keeps
    its first id, and a merge that would spell a special token is refused."""

    def __init__(self, tok: BPETokenizer, vocab_size: int, show_progress: bool):
        from tqdm.auto import tqdm

        self.id_to_bytes = list(tok._id_to_bytes)
        self.bytes_to_id = dict(tok._bytes_to_id)
        self.special_bytes = {s.encode("utf-8") for s in tok._special_tokens}
        self.vocab_size = vocab_size
        self.bar = tqdm(total=vocab_size - len(self.id_to_bytes), desc="BPE merges", disable=not show_progress,
                        leave=False)

    def full(self) -> bool:
        return len(self.id_to_bytes) >= self.vocab_size

    def new_id(self, a: int, b: int) -> int | None:
        """The id of ``a`` merged with ``b``, or None when the result spells a special token."""
        data = self.id_to_bytes[a] + self.id_to_bytes[b]
        if data in self.special_bytes:
            return None
        new_id = self.bytes_to_id.get(data)
        if new_id is None:
            new_id = len(self.id_to_bytes)
            self.id_to_bytes.append(data)
            self.bytes_to_id[data] = new_id
            self.bar.update(1)
        return new_id


def _merge_loop_readable(tok, ids, starts, lens, freqs, vocab_size, min_frequency, show_progress):
    """Counts in a dict, the pair -> words index as arrays, ``heapq`` for the next pair; the
    kernels hand each merge's count changes back to Python. Same merges as ``_merge_loop_compiled``."""
    keys, totals, offsets, owners = K.kernel(K.initial_pair_stats)(ids, starts, lens, freqs)
    counts: dict[int, int] = dict(zip(keys.tolist(), totals.tolist()))
    off = offsets.tolist()
    where: dict[int, np.ndarray] = {k: owners[off[i] : off[i + 1]] for i, k in enumerate(keys.tolist())}
    heap = [(-c, k) for k, c in counts.items() if c >= min_frequency]
    heapq.heapify(heap)  # (-count, key): the largest count, then the smallest pair, pops first
    new_ids = _NewIds(tok, vocab_size, show_progress)
    merges: list[tuple[int, int, int]] = []
    done: set[int] = set()
    banned: set[int] = set()
    merge_words = K.kernel(K.merge_pair_in_words)
    while not new_ids.full() and heap:
        neg, key = heapq.heappop(heap)
        count = counts.get(key, 0)
        if count != -neg:  # stale entry: counts changed since it was pushed
            if count >= min_frequency:
                heapq.heappush(heap, (-count, key))
            continue
        if key in done or key in banned:
            continue
        a, b = key >> 32, key & 0xFFFFFFFF
        new_id = new_ids.new_id(a, b)
        if new_id is None:
            banned.add(key)
            continue
        merges.append((a, b, new_id))
        done.add(key)
        changed, deltas, new_keys, new_off, new_words = merge_words(ids, starts, lens, freqs, where.pop(key), a, b, new_id)
        for k, d in zip(changed.tolist(), deltas.tolist()):
            if d:
                c = counts.get(k, 0) + d
                if c:
                    counts[k] = c
                else:
                    del counts[k]
        new_off = new_off.tolist()
        for i, k in enumerate(new_keys.tolist()):
            ws = new_words[new_off[i] : new_off[i + 1]]
            old = where.get(k)
            where[k] = ws if old is None else np.union1d(old, ws)
            c = counts.get(k, 0)
            if c >= min_frequency:
                heapq.heappush(heap, (-c, k))
    new_ids.bar.close()
    return merges


def _merge_loop_compiled(tok, ids, starts, lens, freqs, vocab_size, min_frequency, show_progress):
    """The same loop with counts, index and heap in arrays that ``K.train_init`` /
    ``K.train_step`` update in place: Python only names the new ids (one call per merge)."""
    # The index holds every pair occurrence of the distinct words at first and gains entries with
    # every merge (~4x by the end on natural text): np.zeros only maps pages, touched when used.
    total = int(np.maximum(lens - 1, 0).sum())
    n_pairs = max(1 << 12, total // 8)  # distinct pairs: ~1/10 of the occurrences on natural text
    state = _TrainState(n_pairs, 4 * total + 1024, n_pairs)
    while K.train_init(ids, starts, lens, freqs, *state.arrays(), min_frequency) == -2:
        state.grow()
    new_ids = _NewIds(tok, vocab_size, show_progress)
    merges: list[tuple[int, int, int]] = []
    merge_key = ban_key = new_id = -1
    while True:
        key = K.train_step(ids, starts, lens, freqs, *state.arrays(), min_frequency, merge_key, new_id, ban_key)
        if key == -2:  # an array is full: grow it and repeat the same step
            state.grow()
            continue
        merge_key = ban_key = new_id = -1
        if key < 0 or new_ids.full():
            break
        a, b = key >> 32, key & 0xFFFFFFFF
        nid = new_ids.new_id(a, b)
        if nid is None:
            ban_key = key
            continue
        merges.append((a, b, nid))
        merge_key, new_id = key, nid
        if new_ids.full():
            break  # the last merge need not be applied to the words
    new_ids.bar.close()
    return merges


class _TrainState:
    """The arrays of the compiled merge loop (layout in ``_kernels``), grown when a kernel
    reports it needs more room."""

    def __init__(self, n_pairs: int, n_where: int, n_heap: int):
        self.slots = np.zeros(_pow2(2 * n_pairs), np.int64)
        self.pairs = np.zeros((n_pairs, 6), np.int64)
        self.where = np.zeros((n_where, 2), np.int64)
        self.heap = np.zeros((n_heap, 2), np.int64)
        self.meta = np.zeros(8, np.int64)

    def arrays(self):
        return self.slots, self.pairs, self.where, self.heap, self.meta

    def grow(self) -> None:
        """Grow each array the refused call found too small (to at least twice its size)."""

        def grown(a, need):
            if need <= len(a):
                return a
            out = np.zeros((max(need, 2 * len(a)),) + a.shape[1:], a.dtype)
            out[: len(a)] = a
            return out

        need_pairs, need_where, need_heap = self.meta[5:8].tolist()
        self.where, self.heap = grown(self.where, need_where), grown(self.heap, need_heap)
        pairs = grown(self.pairs, need_pairs)
        if pairs is not self.pairs or 2 * need_pairs > len(self.slots):
            self.pairs = pairs
            self.slots = np.zeros(_pow2(2 * max(len(pairs), need_pairs)), np.int64)
            K.rehash_pairs(self.slots, self.pairs, self.meta)


def _pow2(n: int) -> int:
    return 1 << max(4, int(n - 1).bit_length())
