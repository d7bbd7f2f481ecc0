"""Text metrics of the leaderboards (Happy LLM 7.1), written out so each line can be read.

==================  =====================================================================
``squad_normalize`` SQuAD v1.1's answer normalisation: lowercase, drop punctuation and the
                    articles a/an/the, collapse whitespace
``token_f1``        SQuAD's token-overlap F1 (max over the references); Chinese text is split
                    into characters first, as CMRC 2018's evaluation does
``rouge_l``         ROUGE-L: F-measure of the longest common subsequence of tokens, with
                    ``rouge-score``'s tokenisation (lowercase, ``[a-z0-9]+`` tokens)
``pass_at_k``       the unbiased pass@k estimator of the Codex paper (HumanEval)
``final_number``    the last number in a text: GSM8K's "flexible extract" answer
``number_match``    True if two texts' final numbers are equal
==================  =====================================================================

Exact match uses the project's own ``normalize_answer`` (see ``harness``/``tasks``); BLEU is
plugged in by name (``tasks.register_metric``).

>>> round(token_f1("the big red ball", ["a red ball"]), 3)   # 2 shared tokens of 3 and 2
0.8
>>> rouge_l("police killed the gunman", "police kill the gunman")["fmeasure"]
0.75
>>> round(pass_at_k(n=10, c=3, k=1), 3)                      # = c / n for k = 1
0.3
>>> final_number("3 + 4 = 7, so the answer is 7.")
'7'
"""
from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from fractions import Fraction
from typing import Callable, Sequence

__all__ = [
    "squad_normalize", "squad_tokens", "token_f1", "rouge_tokenize", "lcs_length", "rouge_l", "pass_at_k",
    "final_number", "number_match",
]

_ASCII_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _is_cjk(ch: str) -> bool:
    """True for a CJK ideograph (the Unicode blocks Chinese text uses)."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0xF900 <= cp <= 0xFAFF)


def squad_normalize(text: str) -> str:
    """SQuAD v1.1's ``normalize_answer``: lowercase, remove ASCII punctuation, remove the
    articles a/an/the, collapse whitespace (in that order, as the official script).

    >>> squad_normalize("The  Market!")
    'market'
    """
    if not isinstance(text, str):
        raise TypeError(f"squad_normalize expects a str, got {type(text).__name__}")
    s = text.lower()
    s = "".join(ch for ch in s if ch not in _ASCII_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def squad_tokens(text: str) -> list:
    """Tokens for F1: SQuAD's normalisation, split on whitespace; then (beyond SQuAD, for
    Chinese, as CMRC 2018's evaluation) every CJK character becomes its own token and
    non-ASCII punctuation ("。", "，", "？") is dropped. ASCII text gets exactly SQuAD's tokens.

    >>> squad_tokens("一只猫。")
    ['一', '只', '猫']
    """
    out = []
    for tok in squad_normalize(text).split():
        buf = ""
        for ch in tok:
            if ord(ch) > 127 and unicodedata.category(ch).startswith("P"):
                ch = " "  # punctuation outside ASCII separates tokens
            if ch == " " or _is_cjk(ch):
                if buf:
                    out.append(buf)
                buf = ""
                if ch != " ":
                    out.append(ch)
            else:
                buf += ch
        if buf:
            out.append(buf)
    return out


def _f1_one(pred_tokens: list, ref_tokens: list) -> float:
    common = Counter(pred_tokens) & Counter(ref_tokens)  # multiset intersection
    num_same = sum(common.values())
    if num_same == 0:  # SQuAD v1.1: no overlap (including two empty answers) scores 0
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """SQuAD's F1: harmonic mean of token precision and recall, maximised over ``references``.

    >>> token_f1("cat", ["a cat", "the dog"])
    1.0
    """
    refs = _as_references(references, "token_f1")
    pred = squad_tokens(prediction)
    return max(_f1_one(pred, squad_tokens(r)) for r in refs)


def _as_references(references, fn: str) -> list:
    if isinstance(references, str):
        return [references]
    refs = list(references)
    if not refs:
        raise ValueError(f"{fn}: needs at least one reference, got none")
    for r in refs:
        if not isinstance(r, str):
            raise TypeError(f"{fn}: references must be str, got {type(r).__name__} ({r!r})")
    return refs


def rouge_tokenize(text: str, cjk: bool = False) -> list:
    """``rouge-score``'s default tokeniser (no stemming): lowercase, every run of characters
    outside ``[a-z0-9]`` is a separator. So it drops Chinese entirely; ``cjk=True`` keeps each
    CJK character as a token (our extension for Chinese references).

    >>> rouge_tokenize("The cat's hat, 2nd!")
    ['the', 'cat', 's', 'hat', '2nd']
    """
    s = text.lower()
    if cjk:
        s = "".join(f" {ch} " if _is_cjk(ch) else ch for ch in s)
        return [t for t in re.split(r"[^a-z0-9\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+", s) if t]
    return [t for t in re.split(r"[^a-z0-9]+", s) if t]


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a)·len(b))).

    >>> lcs_length("ABCBDAB", "BDCABA")
    4
    """
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str, tokenizer: Callable[[str], list] | None = None) -> dict:
    """ROUGE-L of one prediction against one reference, as ``rouge_score.rouge_scorer``:
    precision = LCS / len(prediction), recall = LCS / len(reference), F = 2PR / (P + R).

    Returns ``{"precision", "recall", "fmeasure"}`` (all 0 when either side has no tokens).
    """
    if not isinstance(prediction, str) or not isinstance(reference, str):
        raise TypeError(f"rouge_l expects two str, got {type(prediction).__name__} and {type(reference).__name__}")
    tok = tokenizer or rouge_tokenize
    p, r = tok(prediction), tok(reference)
    if not p or not r:
        return {"precision": 0.0, "recall": 0.0, "fmeasure": 0.0}
    lcs = lcs_length(p, r)
    precision, recall = lcs / len(p), lcs / len(r)
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "fmeasure": f}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` passed (Chen et al. 2021, HumanEval):

        pass@k = 1 - C(n-c, k) / C(n, k)

    the chance that at least one of k samples drawn without replacement from the n passes.
    Computed as a product, 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms huge binomials.

    >>> pass_at_k(5, 0, 1), pass_at_k(5, 5, 1), pass_at_k(4, 1, 4)
    (0.0, 1.0, 1.0)
    """
    for name, v in (("n", n), ("c", c), ("k", k)):
        if not isinstance(v, (int,)) or isinstance(v, bool):
            raise TypeError(f"pass_at_k: {name} must be an int, got {type(v).__name__} ({v!r})")
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs n >= 1, 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset contains a passing sample
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The last number in ``text`` with thousands separators removed (GSM8K's "flexible
    extract"), or None if there is none. Full-width digits count (NFKC).

    >>> final_number("She has 1,200 apples. #### 1,200"), final_number("no idea")
    ('1200', None)
    """
    s = unicodedata.normalize("NFKC", text)
    found = _NUMBER.findall(s)
    if not found:
        return None
    return found[-1].replace(",", "")


def number_match(prediction: str, reference: str) -> bool:
    """True if the final numbers of ``prediction`` and ``reference`` are equal as numbers
    ("12" == "12.0"); False when the prediction has no number.

    >>> number_match("so 7 + 5 = 12.", "12"), number_match("12 apples and 3", "12")
    (True, False)
    """
    p, r = final_number(prediction), final_number(reference)
    if r is None:
        raise ValueError(f"number_match: the reference {reference!r} contains no number")
    return p is not None and Fraction(p) == Fraction(r)

