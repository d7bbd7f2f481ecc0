"""Corpus BLEU (Papineni et al., 2002), computed the way ``sacrebleu`` does, so numbers are comparable.

    BLEU = BP · exp( (1/4) · Σ_{n=1..4} log p_n )

* p_n, the **modified n-gram precision** over the whole corpus: every hypothesis n-gram counts
  as correct at most as often as it occurs in one reference (the maximum over the references
  of that sentence), summed over sentences, divided by the number of hypothesis n-grams.
* BP, the **brevity penalty**: c = total hypothesis length, r = total of each sentence's
  reference length closest to its hypothesis (ties: the shorter); BP = 1 if c >= r else
  exp(1 - r / c). Precision alone would reward short, safe outputs.
* Scores are reported in 0..100. Corpus BLEU is *not* the mean of sentence BLEUs: counts are
  pooled first, then the precisions are taken.

Worked example (``tests/test_eval_bleu.py`` checks it by hand): hypothesis "the the the the",
reference "the cat is here": 4 unigrams, "the" occurs once in the reference, so p_1 = 1/4;
no bigram matches.

Tokenisation before counting, as sacrebleu's ``tokenize=``:

* ``"13a"`` (default, mteval-v13a, WMT's standard): punctuation split off words;
* ``"zh"``: every Chinese character (and CJK punctuation) is its own token, the rest as 13a;
* ``"char"``: every non-space character is a token; ``"none"``: split on whitespace only.

Smoothing (``smooth_method``), for n-gram orders with no match, as sacrebleu: ``"exp"``
(default; the k-th such order gets precision 1 / (2^k · total_n)), ``"floor"`` (0.1 / total_n),
``"add-k"`` (add 1 to matches and totals of orders n >= 2), ``"none"`` (log 0 -> BLEU 0).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

__all__ = ["corpus_bleu", "sentence_bleu", "BLEUScore", "tokenize_13a", "tokenize_zh", "TOKENIZERS"]

MAX_NGRAM_ORDER = 4

# --------------------------------------------------------------------------- tokenizers
_RE_13A = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
]


def _post_tokenize(line: str) -> str:
    for pattern, repl in _RE_13A:
        line = pattern.sub(repl, line)
    return " ".join(line.split())


def tokenize_13a(line: str) -> str:
    """mteval-v13a tokenisation: 'Tom went home.' -> 'Tom went home .'"""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    return _post_tokenize(f" {line} ")


# sacrebleu's table of "Chinese" code-point ranges, compared as strings. Two entries are
# written there as 5-hex-digit escapes that Python reads as two characters ("\u2000" + "0"),
# which makes U+2001..U+2A6D (general punctuation such as “ ” …) count as Chinese too; we keep
# the table exactly as it is so that scores match sacrebleu's "zh" tokenizer.
_ZH_RANGES = [
    ("\u3400", "\u4db5"), ("\u4e00", "\u9fa5"), ("\u9fa6", "\u9fbb"), ("\uf900", "\ufa2d"), ("\ufa30", "\ufa6a"),
    ("\ufa70", "\ufad9"), ("\u20000", "\u2a6d6"), ("\u2f800", "\u2fa1d"), ("\uff00", "\uffef"), ("\u2e80", "\u2eff"),
    ("\u3000", "\u303f"), ("\u31c0", "\u31ef"), ("\u2f00", "\u2fdf"), ("\u2ff0", "\u2fff"), ("\u3100", "\u312f"),
    ("\u31a0", "\u31bf"), ("\ufe10", "\ufe1f"), ("\ufe30", "\ufe4f"), ("\u2600", "\u26ff"), ("\u2700", "\u27bf"),
    ("\u3200", "\u32ff"), ("\u3300", "\u33ff"),
]


def _is_chinese_char(ch: str) -> bool:
    return any(start <= ch <= end for start, end in _ZH_RANGES)


def tokenize_zh(line: str) -> str:
    """Chinese characters split apart, the rest as 13a: '汤姆去了公园。' -> '汤 姆 去 了 公 园 。'"""
    return _post_tokenize("".join(f" {ch} " if _is_chinese_char(ch) else ch for ch in line.strip()))


def _tokenize_char(line: str) -> str:
    return " ".join(ch for ch in line if not ch.isspace())


TOKENIZERS = {"13a": tokenize_13a, "zh": tokenize_zh, "char": _tokenize_char, "none": lambda line: line}
SMOOTH_METHODS = {"none": None, "floor": 0.1, "add-k": 1, "exp": None}


# --------------------------------------------------------------------------- statistics
def _ngrams(tokens: list, max_order: int) -> Counter:
    """Every n-gram of 1 <= n <= max_order, as tuples: ['a', 'b'] -> {('a',): 1, ('b',): 1, ('a', 'b'): 1}."""
    return Counter(tuple(tokens[i : i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1))


def _closest_ref_len(hyp_len: int, ref_lens: Sequence[int]) -> int:
    """The reference length nearest the hypothesis length; ties go to the shorter reference."""
    return min(ref_lens, key=lambda r: (abs(hyp_len - r), r))


def _my_log(x: float) -> float:
    return -9999999999.0 if x == 0.0 else math.log(x)  # sacrebleu's floored log


@dataclass
class BLEUScore:
    """``score`` in 0..100, plus the sufficient statistics it came from."""

    score: float
    counts: list  # matched n-grams per order (after clipping), summed over the corpus
    totals: list  # hypothesis n-grams per order
    precisions: list  # p_n in percent (after smoothing)
    bp: float  # brevity penalty
    sys_len: int  # hypothesis tokens
    ref_len: int  # effective reference tokens
    tokenize: str = field(default="13a")

    @property
    def ratio(self) -> float:
        return self.sys_len / self.ref_len if self.ref_len else 0.0

    def __str__(self):
        p = "/".join(f"{x:.1f}" for x in self.precisions)
        return (f"BLEU = {self.score:.2f} {p} (BP = {self.bp:.3f} ratio = {self.ratio:.3f} "
                f"hyp_len = {self.sys_len} ref_len = {self.ref_len})")


def _score(correct, total, sys_len, ref_len, smooth_method, smooth_value, max_order, effective_order, tokenize):
    correct, total = list(correct), list(total)
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    precisions = [0.0] * max_order
    if not any(correct):  # nothing matches at all
        return BLEUScore(0.0, correct, total, precisions, bp, sys_len, ref_len, tokenize)
    smooth_mteval, eff_order = 1.0, max_order
    for n in range(1, max_order + 1):
        if smooth_method == "add-k" and n > 1:
            correct[n - 1] += smooth_value
            total[n - 1] += smooth_value
        if total[n - 1] == 0:  # hypotheses too short to have n-grams of this order
            break
        if effective_order:
            eff_order = n
        if correct[n - 1] == 0:
            if smooth_method == "exp":
                smooth_mteval *= 2
                precisions[n - 1] = 100.0 / (smooth_mteval * total[n - 1])
            elif smooth_method == "floor":
                precisions[n - 1] = 100.0 * smooth_value / total[n - 1]
        else:
            precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1]
    score = bp * math.exp(sum(_my_log(p) for p in precisions[:eff_order]) / eff_order)
    return BLEUScore(score, correct, total, precisions, bp, sys_len, ref_len, tokenize)


def _reference_streams(references, n_hyp: int) -> list:
    """Accept one reference per hypothesis (a list of str) or sacrebleu's list of reference streams."""
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise TypeError(f"corpus_bleu: references must be a list of strings or a list of reference streams, got {type(references).__name__}")
    if all(isinstance(r, str) for r in references):
        references = [references]
    for k, stream in enumerate(references):
        if isinstance(stream, str) or not all(isinstance(r, str) for r in stream):
            raise TypeError(f"corpus_bleu: reference stream {k} must be a list of strings")
        if len(stream) != n_hyp:
            raise ValueError(f"corpus_bleu: reference stream {k} has {len(stream)} sentences but there are {n_hyp} hypotheses")
    return references


def corpus_bleu(hypotheses: Sequence[str], references, tokenize: str = "13a", smooth_method: str = "exp",
                smooth_value: float | None = None, max_ngram_order: int = MAX_NGRAM_ORDER, lowercase: bool = False,
                effective_order: bool = False) -> BLEUScore:
    """Corpus BLEU of ``hypotheses`` against ``references``.

    references: one string per hypothesis, or (as sacrebleu) a list of reference streams,
    each a list with one string per hypothesis (several references per sentence).
    Returns a ``BLEUScore``; ``.score`` is in 0..100.

    >>> corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]).score
    100.0
    """
    if isinstance(hypotheses, str) or not all(isinstance(h, str) for h in hypotheses):
        raise TypeError("corpus_bleu: hypotheses must be a list of strings")
    if tokenize not in TOKENIZERS:
        raise ValueError(f"corpus_bleu: tokenize must be one of {sorted(TOKENIZERS)}, got {tokenize!r}")
    if smooth_method not in SMOOTH_METHODS:
        raise ValueError(f"corpus_bleu: smooth_method must be one of {sorted(SMOOTH_METHODS)}, got {smooth_method!r}")
    if not isinstance(max_ngram_order, int) or max_ngram_order < 1:
        raise ValueError(f"corpus_bleu: max_ngram_order must be an int >= 1, got {max_ngram_order!r}")
    streams = _reference_streams(references, len(hypotheses))
    smooth_value = SMOOTH_METHODS[smooth_method] if smooth_value is None else smooth_value
    tok = TOKENIZERS[tokenize]

    def prep(s):
        return tok(s.lower() if lowercase else s).split()

    correct, total = [0] * max_ngram_order, [0] * max_ngram_order
    sys_len = ref_len = 0
    for i, hyp in enumerate(hypotheses):
        h = prep(hyp)
        refs = [prep(stream[i]) for stream in streams]
        ref_max = Counter()
        for r in refs:
            ref_max |= _ngrams(r, max_ngram_order)  # | keeps the maximum count of each n-gram
        sys_len += len(h)
        ref_len += _closest_ref_len(len(h), [len(r) for r in refs])
        for gram, count in _ngrams(h, max_ngram_order).items():
            n = len(gram)
            total[n - 1] += count
            correct[n - 1] += min(count, ref_max[gram])  # clipped: no credit beyond the reference's count
    return _score(correct, total, sys_len, ref_len, smooth_method, smooth_value, max_ngram_order, effective_order, tokenize)


def sentence_bleu(hypothesis: str, references, tokenize: str = "13a", smooth_method: str = "exp", **kwargs) -> BLEUScore:
    """BLEU of one sentence (``references``: a string or a list of strings), with effective order
    as sacrebleu's ``sentence_bleu``: n-gram orders the sentence is too short for are left out."""
    refs = [references] if isinstance(references, str) else list(references)
    return corpus_bleu([hypothesis], [[r] for r in refs], tokenize=tokenize, smooth_method=smooth_method,
                       effective_order=True, **kwargs)
