"""Happy LLM 5.2.3 — the Unigram language-model tokenizer (SentencePiece's algorithm, used by T5).

BPE and WordPiece grow a vocabulary bottom-up by merging pairs. The Unigram LM (Kudo 2018) goes
the other way: start from a *large* set of candidate pieces and throw pieces away until the
vocabulary has the size you asked for. Each piece ``x`` has a probability ``p(x)``; a
segmentation ``x₁ … x_m`` of a word has probability ``∏ p(xᵢ)``, and

* **encoding** picks the most probable segmentation (Viterbi over the word's *lattice*, the
  graph of every vocabulary piece that occurs at every position);
* **training** fits ``p`` by EM and prunes by loss:

  1. *seed*: every character, plus the most frequent substrings (score = frequency × length);
  2. *E-step*: forward-backward over each word's lattice gives the expected number of times
     each piece is used, summed over all segmentations weighted by their probability;
  3. *M-step*: ``p(x) ∝ expected count`` (with SentencePiece's digamma smoothing; pieces
     expected less than 0.5 times are dropped);
  4. *prune*: for every piece, the loss in corpus likelihood if it were removed and its uses
     went to the best segmentation of it by the other pieces; keep the 75 % that would cost
     most, and go back to 2 until the vocabulary is 10 % above the target; keep the best.

* **subword regularisation** (``sample_encode``): instead of the best segmentation, draw one
  with probability ∝ ``P(segmentation)^alpha`` (forward filtering, backward sampling), a
  data augmentation that makes a model robust to how words are cut.

Words (SentencePiece's whitespace handling)
-------------------------------------------
A space becomes the meta character ``▁`` (U+2581) glued to the front of the next word, and
the text is cut before every ``▁``: ``"the cat"`` -> ``["the", "▁cat"]``. Unlike
SentencePiece's default we add no ``▁`` at the start of the text (Hugging Face's
``Metaspace(prepend_scheme="never")``), so ``decode(encode(s)) == s`` for every string, leading
spaces included. Training also cuts words where the script changes (letters, digits, CJK,
other symbols) so no piece mixes them, as SentencePiece does.

**Byte fallback.** A character no piece covers is written as its UTF-8 bytes, one piece each
(``<0xE7> <0x8C> <0xAB>`` for a rare 猫), so nothing is ever ``<unk>``. Two deliberate
differences from Hugging Face's ``tokenizers`` (which otherwise gives identical ids from the
saved ``tokenizer.json``, tested): text that literally contains ``▁`` or a byte-piece name such
as ``<0x41>`` is encoded by us with byte pieces, so it still decodes to itself; ``tokenizers``
reads the first as a space and the second as the byte ``A``.

Vocabulary layout: the special tokens first (default T5's ``<pad>`` = 0, ``</s>`` = 1,
``<unk>`` = 2), then the 256 byte pieces, then the learned pieces by decreasing score.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from typing import Iterable, Mapping, Sequence

import numpy as np

from .base import ListVocabTokenizer, training_texts
from .hf_json import file_skeleton, parse_added_tokens
from .wordpiece import is_cjk

__all__ = ["UnigramTokenizer", "T5_SPECIAL_TOKENS", "SPACE", "split_words", "digamma", "viterbi"]

SPACE = "\u2581"  # "▁", SentencePiece's visible space
T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
UNK_PENALTY = 10.0  # an unknown character costs 10 nats more than the rarest piece (SentencePiece, tokenizers)
_LITERAL_SPACE = "\udfff"  # stands for a "▁" typed in the text; a lone surrogate never occurs in valid input
_NEG_INF = float("-inf")


def _byte_piece(b: int) -> str:
    return f"<0x{b:02X}>"


def split_words(text: str) -> list[str]:
    """The pre-tokenizer: spaces -> ``▁`` glued to the next word; cut before each ``▁``.

    >>> split_words("the cat  sat")
    ['the', '▁cat', '▁', '▁sat']
    >>> split_words(" hi")
    ['▁hi']

    A literal ``▁`` in ``text`` is kept apart from the space marker (as an internal stand-in),
    so it comes back as itself after decoding.
    """
    if SPACE in text:
        text = text.replace(SPACE, _LITERAL_SPACE)
    parts = text.split(" ")
    words = [parts[0]] if parts[0] else []
    words += [SPACE + p for p in parts[1:]]
    return words


def _script(ch: str) -> int:
    """Training-time script class: pieces never cross a change of class (0 letters, 1 digits, 2 CJK,
    3 whitespace, 4 other symbols; each of 3 and 4 is a class of one character)."""
    if is_cjk(ch):
        return 2
    if ch.isdigit():
        return 1
    if ch.isalpha() or unicodedata.category(ch).startswith("M"):
        return 0
    return 3 if ch.isspace() else 4


def _chunks(word: str) -> list[str]:
    """Cut a word where the script changes (a leading ``▁`` joins the first run).

    >>> _chunks("▁zoo.")
    ['▁zoo', '.']
    >>> _chunks("彼得坐车，12岁")
    ['彼得坐车', '，', '12', '岁']
    """
    out, start, prev = [], 0, None
    i0 = 1 if word.startswith(SPACE) else 0
    for i in range(i0, len(word)):
        c = _script(word[i])
        if prev is not None and (c != prev or c >= 3):
            out.append(word[start:i])
            start = i
        prev = c
    if start < len(word):
        out.append(word[start:])
    return out


def digamma(x: float) -> float:
    """ψ(x) = d/dx log Γ(x) for x > 0 (the recurrence up to 7, then the asymptotic series), as in
    SentencePiece's trainer. ψ(1) = -γ (Euler's constant).

    >>> round(digamma(1.0), 8)
    -0.57721566
    """
    if not x > 0:
        raise ValueError(f"digamma: x must be > 0, got {x!r}")
    result = 0.0
    while x < 7:
        result -= 1 / x
        x += 1
    x -= 0.5
    xx = 1.0 / x
    xx2 = xx * xx
    xx4 = xx2 * xx2
    return result + math.log(x) + xx2 / 24 - 7 * xx4 / 960 + 31 * xx4 * xx2 / 8064 - 127 * xx4 * xx4 / 30720


def _logaddexp(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def viterbi(word: str, scores: Mapping[str, float], max_len: int, unk_score: float | None = None,
            exclude_whole: bool = False) -> list[tuple[str, bool]]:
    """The best segmentation of ``word``: ``[(piece, known), ...]`` (unknown characters are
    single-character pieces with ``known=False`` and score ``unk_score``).

    The dynamic programme is the one of Hugging Face's ``Unigram.encode``: positions left to
    right, pieces starting there shortest first, a later candidate replaces the best path into
    a position only if strictly better -- so ties go to the earliest start, and the ids agree
    with ``tokenizers`` exactly. ``exclude_whole=True`` forbids the piece spanning the whole
    word (pruning asks "how would we cut it without itself?"). ``unk_score=None``: a character
    no piece covers makes the word impossible (returns ``[]``).

    >>> viterbi("abc", {"a": -1.0, "b": -1.0, "c": -1.0, "ab": -1.5}, 2)
    [('ab', True), ('c', True)]
    """
    n = len(word)
    best = [_NEG_INF] * (n + 1)
    back: list = [None] * (n + 1)  # (start, known)
    best[0] = 0.0
    for s in range(n):
        here = best[s]
        if here == _NEG_INF:
            continue
        single = False
        for e in range(s + 1, min(n, s + max_len) + 1):
            sc = scores.get(word[s:e])
            if sc is None or (exclude_whole and s == 0 and e == n):
                continue
            if e == s + 1:
                single = True
            cand = here + sc
            if back[e] is None or cand > best[e]:
                best[e], back[e] = cand, (s, True)
        if not single and unk_score is not None:
            cand = here + unk_score
            if back[s + 1] is None or cand > best[s + 1]:
                best[s + 1], back[s + 1] = cand, (s, False)
    if back[n] is None:
        return []
    out, e = [], n
    while e > 0:
        s, known = back[e]
        out.append((word[s:e], known))
        e = s
    return out[::-1]


class UnigramTokenizer(ListVocabTokenizer):
    """Unigram LM tokenizer over SentencePiece-style words, with byte fallback.

    ``pieces``: ``[(piece, score), ...]`` the learned pieces (score = log-probability); they
    take the ids after the special tokens and (with ``byte_fallback``) the 256 byte pieces.
    Build one with ``UnigramTokenizer.train(texts, vocab_size)``.

    >>> tok = UnigramTokenizer([("▁cat", -1.0), ("c", -3.0), ("a", -3.0), ("t", -3.0), ("▁", -4.0)])
    >>> [tok.id_to_token(i) for i in tok.encode("a cat")]
    ['a', '▁cat']
    """

    def __init__(self, pieces: Sequence[tuple[str, float]] = (), special_tokens: Sequence[str] | Mapping[str, int] = T5_SPECIAL_TOKENS,
                 *, byte_fallback: bool = True, unk_token: str = "<unk>", **roles):
        specials = dict(special_tokens) if isinstance(special_tokens, Mapping) else {t: i for i, t in enumerate(special_tokens)}
        if unk_token not in specials:
            raise ValueError(f"UnigramTokenizer: unk_token={unk_token!r} is missing from the special tokens {list(specials)}")
        super().__init__(specials, unk_token=unk_token, **roles)
        self.byte_fallback = bool(byte_fallback)
        ordinary = ([(_byte_piece(b), 0.0) for b in range(256)] if self.byte_fallback else []) + list(pieces)
        n = len(ordinary) + len(self._special_tokens)
        free = [i for i in range(n) if i not in self._special_ids]
        if len(free) != len(ordinary):
            raise ValueError(f"special token ids {sorted(self._special_ids)} leave no contiguous room for {len(ordinary)} pieces")
        self._id_to_str = [""] * n
        self._scores = np.zeros(n, dtype=np.float64)
        for i, t in self._special_ids.items():
            self._id_to_str[i] = t
        self._vocab: dict[str, int] = {}
        self._byte_ids = np.zeros(256, dtype=np.int64)
        self._id_byte: dict[int, int] = {}
        for k, (i, item) in enumerate(zip(free, ordinary)):
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise ValueError(f"UnigramTokenizer: pieces must be (string, score) pairs, got {item!r}")
            t, sc = item
            if not isinstance(t, str) or not t:
                raise ValueError(f"UnigramTokenizer: a piece must be a non-empty string, got {t!r}")
            if isinstance(sc, bool) or not isinstance(sc, (int, float, np.floating)) or not math.isfinite(sc):
                raise ValueError(f"UnigramTokenizer: the score of piece {t!r} must be a finite number, got {sc!r}")
            if t in self._vocab or t in self._special_tokens:
                raise ValueError(f"UnigramTokenizer: piece {t!r} appears twice")
            self._vocab[t] = i
            self._id_to_str[i] = t
            self._scores[i] = float(sc)
            if self.byte_fallback and k < 256:
                self._byte_ids[k] = i
                self._id_byte[i] = k
        # What the lattice may use: learned pieces only (not specials, not byte pieces, see module doc).
        self._piece_scores = {t: float(self._scores[i]) for t, i in self._vocab.items() if i not in self._id_byte}
        self._max_len = max((len(t) for t in self._piece_scores), default=1)
        # Hugging Face's unknown-character score: the lowest score in the whole vocabulary list minus 10.
        self._unk_score = float(self._scores.min()) - UNK_PENALTY if n else -UNK_PENALTY
        self._cache: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ vocabulary
    # vocab_size, id_to_token, token_to_id, get_vocab: ListVocabTokenizer (base.py)

    def score(self, token: str) -> float:
        """The log-probability of a piece (0.0 for special tokens and byte pieces)."""
        i = self.token_to_id(token)
        if i is None:
            raise KeyError(f"{token!r} is not in the vocabulary")
        return float(self._scores[i])

    @property
    def pieces(self) -> list[tuple[str, float]]:
        """The learned pieces with their scores, in id order."""
        return [(self._id_to_str[i], float(self._scores[i])) for i in sorted(self._piece_ids())]

    def _piece_ids(self) -> list[int]:
        return [i for t, i in self._vocab.items() if i not in self._id_byte]

    # ------------------------------------------------------------------ encoding
    def _unknown_ids(self, text: str) -> list[int]:
        text = text.replace(_LITERAL_SPACE, SPACE)
        if not self.byte_fallback:
            return [self.unk_token_id]
        return [int(self._byte_ids[b]) for b in text.encode("utf-8")]

    def _ids_of(self, segmentation: list[tuple[str, bool]]) -> list[int]:
        ids, unknown = [], ""
        for piece, known in segmentation:
            if not known:  # consecutive unknown characters are fused (as tokenizers' fuse_unk), then bytes
                unknown += piece
                continue
            if unknown:
                ids += self._unknown_ids(unknown)
                unknown = ""
            ids.append(self._vocab[piece])
        if unknown:
            ids += self._unknown_ids(unknown)
        return ids

    def encode_word(self, word: str) -> list[int]:
        """The ids of one pre-tokenized word (its Viterbi segmentation)."""
        hit = self._cache.get(word)
        if hit is None:
            hit = self._ids_of(viterbi(word, self._piece_scores, self._max_len, self._unk_score))
            if len(self._cache) < 200_000:
                self._cache[word] = hit
        return hit

    @staticmethod
    def _check_text(text: str) -> None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"text contains a lone surrogate {e.object[e.start:e.end]!r}, which is not valid Unicode "
                             f"and cannot be encoded as UTF-8") from None

    def _encode_ordinary(self, text: str) -> list[int]:
        self._check_text(text)
        return [i for w in split_words(text) for i in self.encode_word(w)]

    def sample_encode(self, text: str, alpha: float = 0.1, rng: np.random.Generator | None = None) -> list[int]:
        """Subword regularisation: one segmentation per word drawn with probability ∝ P(seg)^alpha.

        ``alpha`` → ∞ approaches the Viterbi segmentation, ``alpha = 0`` is uniform over all
        segmentations. Special-token text is encoded as ordinary text.
        """
        if not isinstance(text, str):
            raise TypeError(f"sample_encode expects a str, got {type(text).__name__}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"sample_encode: alpha must be a finite number >= 0, got {alpha!r}")
        self._check_text(text)
        rng = np.random.default_rng() if rng is None else rng
        ids = []
        for w in split_words(text):
            ids += self._ids_of(self._sample_word(w, float(alpha), rng))
        return ids

    def _sample_word(self, word: str, alpha: float, rng: np.random.Generator) -> list[tuple[str, bool]]:
        n = len(word)
        into: list[list] = [[] for _ in range(n + 1)]  # into[e]: (start, log weight, known) of edges ending at e
        for s in range(n):
            single = False
            for e in range(s + 1, min(n, s + self._max_len) + 1):
                sc = self._piece_scores.get(word[s:e])
                if sc is not None:
                    into[e].append((s, alpha * sc, True))
                    single |= e == s + 1
            if not single:
                into[s + 1].append((s, alpha * self._unk_score, False))
        fwd = [_NEG_INF] * (n + 1)
        fwd[0] = 0.0
        for e in range(1, n + 1):
            acc = _NEG_INF
            for s, w, _ in into[e]:
                acc = _logaddexp(acc, fwd[s] + w)
            fwd[e] = acc
        out, e = [], n
        while e > 0:  # backward sampling: the last edge ∝ fwd[start] · weight
            edges = into[e]
            logits = np.array([fwd[s] + w for s, w, _ in edges])
            p = np.exp(logits - logits.max())
            s, _, known = edges[int(rng.choice(len(edges), p=p / p.sum()))]
            out.append((word[s:e], known))
            e = s
        return out[::-1]

    # ------------------------------------------------------------------ decoding
    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        out = bytearray()
        for i in ids:
            if i in self._special_ids:
                if not skip_special_tokens:
                    out += self._special_ids[i].encode("utf-8")
            elif i in self._id_byte:
                out.append(self._id_byte[i])
            else:
                out += self._id_to_str[i].replace(SPACE, " ").encode("utf-8")
        return out.decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, texts: Iterable[str] | str, vocab_size: int, special_tokens: Sequence[str] = T5_SPECIAL_TOKENS, *,
              byte_fallback: bool = True, max_piece_length: int = 16, character_coverage: float = 0.9995,
              seed_size: int | None = None, shrinking_factor: float = 0.75, num_sub_iterations: int = 2,
              show_progress: bool = False, **kwargs) -> "UnigramTokenizer":
        """Learn ``vocab_size`` ids (special tokens and byte pieces included) by EM and pruning
        (steps 1-4 of the module docstring). Returns the trained tokenizer; ``history`` on it
        records (vocabulary size, corpus log-likelihood per word) after each EM round."""
        from tqdm.auto import tqdm

        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"UnigramTokenizer.train: vocab_size must be an int, got {vocab_size!r}")
        if not isinstance(max_piece_length, int) or max_piece_length < 1:
            raise ValueError(f"UnigramTokenizer.train: max_piece_length must be an int >= 1, got {max_piece_length!r}")
        if not 0.0 < shrinking_factor < 1.0:
            raise ValueError(f"UnigramTokenizer.train: shrinking_factor must be in (0, 1), got {shrinking_factor!r}")
        if not 0.0 < character_coverage <= 1.0:
            raise ValueError(f"UnigramTokenizer.train: character_coverage must be in (0, 1], got {character_coverage!r}")
        if not isinstance(num_sub_iterations, int) or num_sub_iterations < 1:
            raise ValueError(f"UnigramTokenizer.train: num_sub_iterations must be an int >= 1, got {num_sub_iterations!r}")
        probe = cls((), special_tokens, byte_fallback=byte_fallback, **kwargs)
        room = vocab_size - probe.vocab_size
        if room < 1:
            raise ValueError(f"UnigramTokenizer.train: vocab_size={vocab_size} leaves no room for learned pieces after "
                             f"{len(probe._special_tokens)} special tokens" + (" and 256 byte pieces" if byte_fallback else ""))
        # -- words and their script chunks, with counts
        words: Counter = Counter()
        for text in training_texts(texts, "UnigramTokenizer.train"):
            cls._check_text(text)
            words.update(split_words(text))
        chunk_counts: Counter = Counter()
        for w, c in words.items():
            for ch in _chunks(w):
                chunk_counts[ch] += c
        if not chunk_counts:
            raise ValueError("UnigramTokenizer.train: the training texts are empty")

        # -- characters: the most frequent ones covering `character_coverage` of all characters
        chars: Counter = Counter()
        for ch, c in chunk_counts.items():
            for x in ch:
                chars[x] += c
        chars.pop(_LITERAL_SPACE, None)
        total, acc, kept = sum(chars.values()), 0, {}
        for x, c in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0])):
            if acc >= character_coverage * total and kept:
                break
            kept[x] = c
            acc += c
        if len(kept) > room:
            raise ValueError(f"UnigramTokenizer.train: vocab_size={vocab_size} has room for {room} pieces, fewer than the "
                             f"{len(kept)} characters that cover {character_coverage:.2%} of the text")
        # Chunks are cut at uncovered characters (those become byte pieces), so every chunk has a path.
        sentences: Counter = Counter()
        for ch, c in chunk_counts.items():
            part = ""
            for x in ch:
                if x in kept:
                    part += x
                else:
                    if part:
                        sentences[part] += c
                    part = ""
            if part:
                sentences[part] += c
        sent_list = sorted(sentences.items())

        # -- 1. seed: characters + frequent substrings (score = frequency × length)
        subs: Counter = Counter()
        for s, c in sent_list:
            n = len(s)
            for i in range(n):
                for j in range(i + 2, min(n, i + max_piece_length) + 1):
                    subs[s[i:j]] += c
        seed_size = seed_size or max(10 * room, 1000)
        seed = sorted(((f * len(p), p, f) for p, f in subs.items() if f >= 2), key=lambda x: (-x[0], x[1]))[:seed_size]
        freqs = dict(kept)
        freqs.update((p, f) for _, p, f in seed)
        logz = math.log(sum(freqs.values()))
        scores = {p: math.log(f) - logz for p, f in freqs.items()}
        required = set(kept)
        desired = room

        bar = tqdm(desc="unigram EM", disable=not show_progress, leave=False)
        history = []
        while True:
            for _ in range(num_sub_iterations):  # 2-3. EM
                expected, loglik = cls._e_step(sent_list, scores, max_piece_length)
                history.append((len(scores), loglik / sum(c for _, c in sent_list)))
                scores = cls._m_step(expected, required)
                bar.update(1)
            if len(scores) <= int(desired * 1.1) or len(scores) <= len(required):
                break
            scores = cls._prune(sent_list, scores, required, max_piece_length, desired, shrinking_factor)  # 4.
        bar.close()
        # -- final: every required character, then the best-scoring pieces, up to the room left
        others = sorted((p for p in scores if p not in required), key=lambda p: (-scores[p], p))
        final = {p: scores[p] for p in required}
        for p in others[: max(0, room - len(final))]:
            final[p] = scores[p]
        pieces = sorted(final.items(), key=lambda kv: (-kv[1], kv[0]))
        tok = cls(pieces, probe._special_tokens, byte_fallback=byte_fallback, **kwargs)
        tok.history = history
        return tok

    @staticmethod
    def _lattice(s: str, scores: Mapping[str, float], max_len: int) -> list[list[tuple[int, str, float]]]:
        """``into[e]``: the (start, piece, score) of every vocabulary piece that ends at position e."""
        n = len(s)
        into: list[list] = [[] for _ in range(n + 1)]
        for i in range(n):
            for j in range(i + 1, min(n, i + max_len) + 1):
                p = s[i:j]
                sc = scores.get(p)
                if sc is not None:
                    into[j].append((i, p, sc))
        return into

    @classmethod
    def _e_step(cls, sentences, scores, max_len) -> tuple[dict, float]:
        """Forward-backward over each lattice: the expected count of every piece, and the
        corpus log-likelihood Σ count · log P(chunk)."""
        expected: dict[str, float] = dict.fromkeys(scores, 0.0)
        loglik = 0.0
        exp = math.exp
        for s, count in sentences:
            n = len(s)
            into = cls._lattice(s, scores, max_len)
            alpha = [_NEG_INF] * (n + 1)
            alpha[0] = 0.0
            for e in range(1, n + 1):
                acc = _NEG_INF
                for i, _, sc in into[e]:
                    acc = _logaddexp(acc, alpha[i] + sc)
                alpha[e] = acc
            z = alpha[n]
            if z == _NEG_INF:  # cannot happen: every character of a chunk is a piece
                continue
            beta = [_NEG_INF] * (n + 1)
            beta[n] = 0.0
            for e in range(n, 0, -1):
                if beta[e] == _NEG_INF:
                    continue
                for i, p, sc in into[e]:
                    beta[i] = _logaddexp(beta[i], sc + beta[e])
                    expected[p] += count * exp(alpha[i] + sc + beta[e] - z)
            loglik += count * z
        return expected, loglik

    @staticmethod
    def _m_step(expected: dict, required: set) -> dict:
        """Scores from expected counts (SentencePiece's Bayesian update: ψ(count) - ψ(total)).
        Pieces expected < 0.5 times go, except characters (kept with a count of 0.5)."""
        kept = {p: (max(f, 0.5) if p in required else f) for p, f in expected.items() if f >= 0.5 or p in required}
        logsum = digamma(sum(kept.values()))
        return {p: digamma(f) - logsum for p, f in kept.items()}

    @classmethod
    def _prune(cls, sentences, scores, required, max_len, desired, shrinking_factor) -> dict:
        """Keep the pieces whose removal would cost the corpus most likelihood (SentencePiece's
        ``PruneSentencePieces``). The cost of removing x: its Viterbi uses move to the best
        segmentation of x by the other pieces; loss = share of words using x ×
        (log p(x) - Σ log p'(alternative pieces))."""
        freq: Counter = Counter()
        holders: Counter = Counter()  # count of the chunks whose best path uses the piece
        for s, c in sentences:
            seg = viterbi(s, scores, max_len)
            for p, _ in seg:
                freq[p] += c
            for p in {p for p, _ in seg}:
                holders[p] += c
        total = sum(freq.values())
        logsum = math.log(total)
        vsum = sum(c for _, c in sentences)
        losses = []
        for p in scores:
            if p in required:
                continue
            f = freq.get(p, 0)
            if f == 0:
                continue  # never on a best path: goes
            alt = [q for q, _ in viterbi(p, scores, max_len, exclude_whole=True)]
            if not alt:
                losses.append((float("inf"), p))
                continue
            logprob_sp = math.log(f) - logsum
            logsum_alt = math.log(total + f * (len(alt) - 1))  # after removal its f uses become len(alt) uses each
            logprob_alt = sum(math.log(freq.get(q, 0) + f) - logsum_alt for q in alt)
            losses.append((holders[p] / vsum * (logprob_sp - logprob_alt), p))
        losses.sort(key=lambda x: (-x[0], x[1]))
        keep = max(desired - len(required), int(shrinking_factor * (len(scores) - len(required))))
        out = {p: scores[p] for p in required}
        out.update((p, scores[p]) for _, p in losses[:keep])
        return out

    # ------------------------------------------------------------------ files
    def to_hf_json(self) -> dict:
        vocab = [[t, float(s)] for t, s in zip(self._id_to_str, self._scores)]
        decoders = [{"type": "Replace", "pattern": {"String": SPACE}, "content": " "}]
        if self.byte_fallback:
            decoders += [{"type": "ByteFallback"}, {"type": "Fuse"}]
        return file_skeleton(
            added_tokens=self._hf_added_tokens(),
            normalizer=None,
            pre_tokenizer={"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "never", "split": True},
            post_processor=None,
            decoder={"type": "Sequence", "decoders": decoders},
            model={"type": "Unigram", "unk_id": self.unk_token_id, "vocab": vocab, "byte_fallback": self.byte_fallback},
        )

    def config(self) -> dict:
        cfg = super().config()
        cfg["minillm"]["unigram"] = {"byte_fallback": self.byte_fallback}
        return cfg

    @classmethod
    def _from_hf(cls, data: dict, config: dict, source: str) -> "UnigramTokenizer":
        model = data.get("model")
        if not isinstance(model, dict) or model.get("type") != "Unigram" or not isinstance(model.get("vocab"), list):
            raise ValueError(f"{source}: a UnigramTokenizer needs a Unigram model with a vocab list")
        pre = data.get("pre_tokenizer")
        want = {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "never", "split": True}
        if not isinstance(pre, dict) or any(pre.get(k) != v for k, v in want.items()):
            raise ValueError(f"{source}: unsupported pre_tokenizer {str(pre)[:200]}; UnigramTokenizer reads {want}")
        if data.get("normalizer") is not None:
            raise ValueError(f"{source}: unsupported normalizer {str(data['normalizer'])[:200]} (UnigramTokenizer uses none)")
        vocab = model["vocab"]
        for k, item in enumerate(vocab):
            if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                    or isinstance(item[1], bool) or not isinstance(item[1], (int, float))):
                raise ValueError(f"{source}: model.vocab[{k}] must be [piece, score], got {str(item)[:100]}")
        byte_fallback = model.get("byte_fallback", False)
        if not isinstance(byte_fallback, bool):
            raise ValueError(f"{source}: model.byte_fallback must be true or false, got {byte_fallback!r}")
        unk_id = model.get("unk_id")
        if isinstance(unk_id, bool) or not isinstance(unk_id, int) or not 0 <= unk_id < len(vocab):
            raise ValueError(f"{source}: model.unk_id must be an id in [0, {len(vocab)}), got {unk_id!r}")
        specials = parse_added_tokens(data, source)
        for t, i in specials.items():
            if not (isinstance(i, int) and i < len(vocab) and vocab[i][0] == t):
                raise ValueError(f"{source}: added token {t!r} (id {i}) is not model.vocab[{i}]")
        unk = vocab[unk_id][0]
        specials.setdefault(unk, unk_id)
        rest = [(i, t, s) for i, (t, s) in enumerate(vocab) if t not in specials]
        if byte_fallback:
            bytes_ = [(t, s) for _, t, s in rest[:256]]
            if [t for t, _ in bytes_] != [_byte_piece(b) for b in range(256)] or any(s != 0.0 for _, s in bytes_):
                raise ValueError(f"{source}: with byte_fallback the 256 pieces <0x00>..<0xFF> (score 0) must follow the "
                                 "special tokens (the layout UnigramTokenizer writes)")
            rest = rest[256:]
        names = {}
        for role, default in (("eos_token", "</s>"), ("pad_token", "<pad>"), ("bos_token", "<s>")):
            name = config.get(role, default if default in specials else None)
            name = name.get("content") if isinstance(name, dict) else name
            names[role] = name if name in specials else None
        tok = cls([(t, float(s)) for _, t, s in rest], specials, byte_fallback=byte_fallback, unk_token=unk, **names)
        if [t for t in tok._id_to_str] != [t for t, _ in vocab]:
            raise ValueError(f"{source}: vocabulary ids are not laid out as specials, byte pieces, pieces")
        return tok

    def _listings(self) -> dict[str, str]:
        """``vocab.txt``: one ``piece<TAB>score`` per line, line number = id (SentencePiece's .vocab format)."""
        return {"unigram.vocab": "".join(f"{t}\t{s:.6f}\n" for t, s in zip(self._id_to_str, self._scores))}
