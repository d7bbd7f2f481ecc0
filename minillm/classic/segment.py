"""Happy LLM 1.3.1 — Chinese word segmentation: maximum matching, a unigram LM, an HMM.

Chinese is written without spaces, so "汤姆去了公园" must be cut into words
("汤姆 / 去 / 了 / 公园") before a word-level model can use it. Three classic answers:

* **Maximum matching** over a dictionary (``fmm``, ``bmm``, ``bimm``): scan left to right
  (forward) or right to left (backward), each time taking the longest dictionary word
  that fits; bidirectional MM runs both and keeps the one with fewer words (then fewer
  single characters; ties go to the backward result, which is right more often).
* **A unigram language model** (``UnigramSegmenter``), as in jieba: build the DAG of every
  dictionary word in the sentence, then Viterbi (dynamic programming from the right)
  picks the path with the highest product of word probabilities P(w) = count(w) / N.
* **An HMM** (``HMMSegmenter``) tags each character B (begin), M (middle), E (end) or
  S (single-character word); start, transition and emission probabilities are counted
  from segmented text and Viterbi finds the best tag sequence. It needs no dictionary,
  so it can find words it has never seen (OOV). jieba uses it only on runs of single
  characters that the dictionary path left over; ``UnigramSegmenter(hmm=...)`` does the same.

Scoring (``score``) is the SIGHAN bakeoff's: a word counts as correct when its
(start, end) character span is in the gold segmentation; precision, recall and F1 over
all words, and recall restricted to words not in the dictionary (OOV recall).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "fmm", "bmm", "bimm", "Dictionary", "UnigramSegmenter", "HMMSegmenter", "spans", "score", "bmes_tags",
]


def _check_text(text, fn: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{fn}: text must be a str, got {type(text).__name__}")
    return text


class Dictionary:
    """Word counts: the dictionary of maximum matching and the unigram LM's P(w).

    >>> d = Dictionary({"汤姆": 3, "去": 2, "了": 2, "公园": 1})
    >>> d.max_len, "公园" in d, round(d.logp("去"), 4)
    (2, True, -1.3863)
    """

    def __init__(self, counts: Dict[str, int]):
        counts = dict(counts)
        bad = [w for w, c in counts.items() if not isinstance(w, str) or not w or c <= 0]
        if bad:
            raise ValueError(f"Dictionary: words must be non-empty strings with counts > 0, bad entries: {bad[:5]!r}")
        if not counts:
            raise ValueError("Dictionary: needs at least one word")
        self.counts = counts
        self.total = sum(counts.values())
        self.max_len = max(len(w) for w in counts)
        self._log_total = math.log(self.total)

    @classmethod
    def from_segmented(cls, sentences: Iterable[Sequence[str]]) -> "Dictionary":
        """Count the words of gold-segmented sentences (lists of words)."""
        c: Counter = Counter()
        for words in sentences:
            c.update(words)
        return cls(c)

    def __contains__(self, word: str) -> bool:
        return word in self.counts

    def __len__(self) -> int:
        return len(self.counts)

    def logp(self, word: str) -> float:
        """log P(word) = log(count / total); -inf for a word not in the dictionary."""
        c = self.counts.get(word)
        return math.log(c) - self._log_total if c else -math.inf


# ----------------------------------------------------------------------------- maximum matching


def fmm(text: str, dictionary) -> List[str]:
    """Forward maximum matching: from the left, always take the longest dictionary word.

    A character that starts no dictionary word becomes a word of its own.

    >>> fmm("研究生命起源", {"研究", "研究生", "生命", "起源"})
    ['研究生', '命', '起源']
    """
    _check_text(text, "fmm")
    max_len = max((len(w) for w in dictionary), default=1)
    out, i = [], 0
    while i < len(text):
        for j in range(min(len(text), i + max_len), i, -1):  # longest first
            if text[i:j] in dictionary or j == i + 1:
                out.append(text[i:j])
                i = j
                break
    return out


def bmm(text: str, dictionary) -> List[str]:
    """Backward maximum matching: from the right, always take the longest dictionary word.

    >>> bmm("研究生命起源", {"研究", "研究生", "生命", "起源"})
    ['研究', '生命', '起源']
    """
    _check_text(text, "bmm")
    max_len = max((len(w) for w in dictionary), default=1)
    out, j = [], len(text)
    while j > 0:
        for i in range(max(0, j - max_len), j):  # longest first
            if text[i:j] in dictionary or i == j - 1:
                out.append(text[i:j])
                j = i
                break
    return out[::-1]


def bimm(text: str, dictionary) -> List[str]:
    """Bidirectional MM: the FMM or BMM result with fewer words, then fewer single characters.

    Ties (equal counts) go to BMM, which is right more often for Chinese.

    >>> bimm("研究生命起源", {"研究", "研究生", "生命", "起源"})
    ['研究', '生命', '起源']
    """
    f, b = fmm(text, dictionary), bmm(text, dictionary)
    if len(f) != len(b):
        return f if len(f) < len(b) else b
    singles = lambda ws: sum(len(w) == 1 for w in ws)  # noqa: E731
    return f if singles(f) < singles(b) else b


# ----------------------------------------------------------------------------- HMM (B/M/E/S)

STATES = "BMES"
_ALLOWED = {  # which tag may follow which: a word ends (E/S) before the next begins (B/S)
    "B": "ME", "M": "ME", "E": "BS", "S": "BS",
}


def bmes_tags(words: Sequence[str]) -> str:
    """One B/M/E/S tag per character of the segmented sentence.

    >>> bmes_tags(["汤姆", "去", "了", "图书馆"])
    'BESSBME'
    """
    return "".join("S" if len(w) == 1 else "B" + "M" * (len(w) - 2) + "E" for w in words)


class HMMSegmenter:
    """A character HMM over the tags B/M/E/S, trained by counting and decoded by Viterbi.

    log probabilities: ``start[s]``, ``trans[s, s2]`` and ``emit[s][char]``; emission of a
    character never seen with a tag gets add-one smoothing (``log(1 / (count(s) + V + 1))``),
    so unseen characters are still segmented, by the transitions alone.
    """

    def __init__(self, start: np.ndarray, trans: np.ndarray, emit: List[Dict[str, float]], unseen: np.ndarray):
        self.start, self.trans, self.emit, self.unseen = start, trans, emit, unseen

    @classmethod
    def train(cls, sentences: Iterable[Sequence[str]]) -> "HMMSegmenter":
        """Count tag starts, tag bigrams and (tag, character) pairs in gold-segmented sentences."""
        start = np.zeros(4)
        trans = np.zeros((4, 4))
        emit = [Counter() for _ in range(4)]
        n_sent = 0
        for words in sentences:
            text, tags = "".join(words), bmes_tags(words)
            if not text:
                continue
            n_sent += 1
            ids = [STATES.index(t) for t in tags]
            start[ids[0]] += 1
            for a, b in zip(ids, ids[1:]):
                trans[a, b] += 1
            for ch, s in zip(text, ids):
                emit[s][ch] += 1
        if n_sent == 0:
            raise ValueError("HMMSegmenter.train: no non-empty sentences")
        vocab = len(set().union(*emit))
        with np.errstate(divide="ignore"):  # impossible starts/transitions stay -inf
            log_start = np.log(start / start.sum())
            log_trans = np.log(trans / np.maximum(trans.sum(1, keepdims=True), 1))
        for a in range(4):  # structurally impossible transitions are -inf even if counts said otherwise
            for b in range(4):
                if STATES[b] not in _ALLOWED[STATES[a]]:
                    log_trans[a, b] = -np.inf
        log_emit, unseen = [], np.zeros(4)
        for s in range(4):
            denom = sum(emit[s].values()) + vocab + 1
            log_emit.append({ch: math.log((c + 1) / denom) for ch, c in emit[s].items()})
            unseen[s] = math.log(1 / denom)
        return cls(log_start, log_trans, log_emit, unseen)

    def tag(self, text: str) -> str:
        """The most likely B/M/E/S tag sequence (Viterbi). The last tag is E or S."""
        _check_text(text, "HMMSegmenter.tag")
        n = len(text)
        if n == 0:
            return ""
        e = np.array([[self.emit[s].get(ch, self.unseen[s]) for s in range(4)] for ch in text])  # (n, 4)
        delta = self.start + e[0]
        back = np.zeros((n, 4), dtype=np.int64)
        for t in range(1, n):
            scores = delta[:, None] + self.trans  # (4 previous, 4 next)
            back[t] = scores.argmax(0)
            delta = scores.max(0) + e[t]
        last = 2 if delta[2] >= delta[3] else 3  # a sentence ends with E or S
        tags = [last]
        for t in range(n - 1, 0, -1):
            tags.append(int(back[t, tags[-1]]))
        return "".join(STATES[s] for s in reversed(tags))

    def cut(self, text: str) -> List[str]:
        """Segment ``text`` by its Viterbi tags: a word ends after every E or S."""
        out, word = [], ""
        for ch, t in zip(text, self.tag(text)):
            word += ch
            if t in "ES":
                out.append(word)
                word = ""
        if word:
            out.append(word)
        return out


# ----------------------------------------------------------------------------- unigram LM (jieba)


class UnigramSegmenter:
    """jieba's dictionary segmenter: DAG of dictionary words + Viterbi over log P(w).

    ``hmm``: an ``HMMSegmenter`` for runs of single characters left between dictionary
    words (where OOV words hide), as ``jieba.cut(..., HMM=True)`` does.

    >>> seg = UnigramSegmenter(Dictionary({"研究": 5, "研究生": 1, "生命": 5, "命": 1, "起源": 5}))
    >>> seg.cut("研究生命起源")
    ['研究', '生命', '起源']
    """

    def __init__(self, dictionary: Dictionary, hmm: Optional[HMMSegmenter] = None):
        if not isinstance(dictionary, Dictionary):
            raise TypeError(f"UnigramSegmenter: dictionary must be a Dictionary, got {type(dictionary).__name__}")
        self.dictionary, self.hmm = dictionary, hmm
        # an unknown single character costs as much as the rarest possible word: count 1 of N
        self._unk = -dictionary._log_total

    def dag(self, text: str) -> Dict[int, List[int]]:
        """For each start index i, the end indices j such that text[i:j] is a word (always i+1)."""
        d = self.dictionary
        out = {}
        for i in range(len(text)):
            ends = [j for j in range(i + 2, min(len(text), i + d.max_len) + 1) if text[i:j] in d]
            out[i] = [i + 1] + ends
        return out

    def _best_path(self, text: str) -> List[str]:
        n, dag = len(text), self.dag(text)
        best: List[Tuple[float, int]] = [(0.0, n)] * (n + 1)  # best[i] = (log P of text[i:], end of first word)
        for i in range(n - 1, -1, -1):
            cands = []
            for j in dag[i]:
                lp = self.dictionary.logp(text[i:j])
                cands.append(((lp if lp > -math.inf else self._unk) + best[j][0], j))
            best[i] = max(cands)
        out, i = [], 0
        while i < n:
            j = best[i][1]
            out.append(text[i:j])
            i = j
        return out

    def cut(self, text: str) -> List[str]:
        """Segment ``text``. With an HMM, as jieba's ``__cut_DAG``: consecutive single-character
        words are collected; a run of 2+ that is not itself a dictionary word is re-cut by the HMM."""
        _check_text(text, "UnigramSegmenter.cut")
        words = self._best_path(text)
        if self.hmm is None:
            return words
        out, run = [], ""

        def flush():
            nonlocal run
            if len(run) > 1 and run not in self.dictionary:
                out.extend(self.hmm.cut(run))  # where new words hide
            else:
                out.extend(run)  # one character, or a known word cut into characters by the path
            run = ""

        for w in words:
            if len(w) == 1:
                run += w
            else:
                flush()
                out.append(w)
        flush()
        return out

    __call__ = cut


# ----------------------------------------------------------------------------- SIGHAN scoring


def spans(words: Sequence[str]) -> List[Tuple[int, int]]:
    """Character (start, end) spans of a segmented sentence.

    >>> spans(["汤姆", "去", "了"])
    [(0, 2), (2, 3), (3, 4)]
    """
    out, i = [], 0
    for w in words:
        out.append((i, i + len(w)))
        i += len(w)
    return out


def score(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], dictionary=None) -> dict:
    """SIGHAN word-level precision, recall, F1, and (with a dictionary) OOV and IV recall.

    A predicted word is correct when the same character span is a gold word. Each
    sentence's gold and predicted words must join to the same text.

    >>> s = score([["汤姆", "去", "了", "公园"]], [["汤姆", "去了", "公园"]], dictionary={"汤姆", "去", "了"})
    >>> s["precision"], s["recall"], round(s["f1"], 4), s["oov_recall"]
    (0.6666666666666666, 0.5, 0.5714, 1.0)
    """
    if len(gold) != len(pred):
        raise ValueError(f"score: {len(gold)} gold sentences but {len(pred)} predicted")
    n_gold = n_pred = n_ok = n_oov = n_oov_ok = n_iv = n_iv_ok = 0
    for k, (g, p) in enumerate(zip(gold, pred)):
        if "".join(g) != "".join(p):
            raise ValueError(f"score: sentence {k} differs: gold {''.join(g)!r} vs predicted {''.join(p)!r}")
        ps = set(spans(p))
        n_gold, n_pred = n_gold + len(g), n_pred + len(p)
        for w, sp in zip(g, spans(g)):
            hit = sp in ps
            n_ok += hit
            if dictionary is not None:
                if w in dictionary:
                    n_iv, n_iv_ok = n_iv + 1, n_iv_ok + hit
                else:
                    n_oov, n_oov_ok = n_oov + 1, n_oov_ok + hit
    precision = n_ok / n_pred if n_pred else 0.0
    recall = n_ok / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out = {"precision": precision, "recall": recall, "f1": f1, "n_gold": n_gold, "n_pred": n_pred}
    if dictionary is not None:
        out["oov_recall"] = n_oov_ok / n_oov if n_oov else float("nan")
        out["iv_recall"] = n_iv_ok / n_iv if n_iv else float("nan")
        out["n_oov"] = n_oov
    return out
