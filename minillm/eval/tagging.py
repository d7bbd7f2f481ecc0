"""Scores for the fine-tuning tasks of Happy LLM 1.3: entity-level P/R/F1 for sequence
labelling (NER, 1.3.5) with seqeval's definition, and span EM/F1 for extractive QA (1.3.9).

Entity-level scoring (``seqeval``'s default, IOB2 read leniently)
-----------------------------------------------------------------
Tags are ``O`` or ``B-TYPE`` / ``I-TYPE`` (also ``E-`` and ``S-``). An entity is a maximal chunk::

    B-PER I-PER O B-LOC      ->  (PER, 0, 1), (LOC, 3, 3)

A chunk starts at ``B-``/``S-``, at an ``I-``/``E-`` after ``O`` (a missing ``B-`` is forgiven,
as seqeval does), or where the type changes; it ends before a ``B-``/``S-``/``O``, after ``E-``/
``S-``, or where the type changes. A predicted entity counts as correct only if type, start and
end all match a true entity. Precision = correct / predicted, recall = correct / true, F1 their
harmonic mean, micro-averaged over all entities of all sentences (``per_type`` gives each type's).

Span scoring (SQuAD's definition)
---------------------------------
``span_exact_match``: equal after ``normalize_answer`` (NFKC, casefold, spaces, trailing
punctuation) and dropping English articles. ``span_f1``: F1 of the two answers' bags of tokens
(English words; Chinese characters one by one).
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from .metrics import normalize_answer

__all__ = ["get_entities", "entity_scores", "span_exact_match", "span_f1", "qa_scores"]


def _split(tag: str) -> tuple[str, str]:
    if not isinstance(tag, str):
        raise TypeError(f"tags must be strings like 'B-PER' or 'O', got {tag!r}")
    if tag == "O":
        return "O", ""
    if len(tag) < 3 or tag[1] != "-" or tag[0] not in "BIES":
        raise ValueError(f"tag {tag!r} is not 'O' or B-/I-/E-/S- followed by a type")
    return tag[0], tag[2:]


def _ends(prev: str, prev_type: str, tag: str, typ: str) -> bool:
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev != "O" and prev_type != typ


def _starts(prev: str, prev_type: str, tag: str, typ: str) -> bool:
    if tag in ("B", "S"):
        return True
    if tag in ("I", "E") and prev in ("E", "S", "O"):
        return True
    return tag != "O" and prev_type != typ


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities (type, first index, last index) of one tag sequence.

    >>> get_entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-OBJ"])
    [('PER', 0, 1), ('LOC', 3, 3), ('LOC', 4, 4), ('OBJ', 5, 5)]
    """
    out = []
    prev, prev_type, begin = "O", "", 0
    for i, t in enumerate(list(tags) + ["O"]):
        tag, typ = _split(t)
        if _ends(prev, prev_type, tag, typ):
            out.append((prev_type, begin, i - 1))
        if _starts(prev, prev_type, tag, typ):
            begin = i
        prev, prev_type = tag, typ
    return out


def entity_scores(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]],
                  keep: Sequence[Sequence[bool]] | None = None) -> dict:
    """Micro precision / recall / F1 over entities (seqeval's ``precision_score`` etc.) plus
    ``per_type``: {type: {"precision", "recall", "f1", "support"}}. Sentences pair up by index and
    must have equal lengths (``ValueError`` naming the first that does not).

    ``keep`` (one bool per tag, optional) scores only the entities, true and predicted, whose
    *first* token is kept: e.g. the names a model never saw labelled. A predicted entity that
    starts there counts against precision unless it matches a true one exactly.

    >>> t, p = [["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-PER"]]
    >>> entity_scores(t, p)["f1"], entity_scores(t, p, keep=[[False, False, False, True]])["f1"]
    (0.5, 0.0)
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"entity_scores: {len(y_true)} true sequences but {len(y_pred)} predicted")
    if keep is not None and len(keep) != len(y_true):
        raise ValueError(f"entity_scores: {len(y_true)} true sequences but {len(keep)} keep masks")
    true, pred = set(), set()
    for k, (t, p) in enumerate(zip(y_true, y_pred)):
        if len(t) != len(p):
            raise ValueError(f"entity_scores: sequence {k} has {len(t)} true tags but {len(p)} predicted")
        if keep is not None and len(keep[k]) != len(t):
            raise ValueError(f"entity_scores: sequence {k} has {len(t)} tags but {len(keep[k])} keep flags")
        ok = (lambda e: True) if keep is None else (lambda e, m=keep[k]: bool(m[e[1]]))
        true |= {(k, *e) for e in get_entities(t) if ok(e)}
        pred |= {(k, *e) for e in get_entities(p) if ok(e)}

    def prf(tr, pr):
        c = len(tr & pr)
        p = c / len(pr) if pr else 0.0
        r = c / len(tr) if tr else 0.0
        return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": len(tr)}

    types = sorted({e[1] for e in true | pred})
    out = prf(true, pred)
    out["per_type"] = {ty: prf({e for e in true if e[1] == ty}, {e for e in pred if e[1] == ty}) for ty in types}
    return out


_ARTICLES = {"a", "an", "the"}


def _tokens(text: str) -> list[str]:
    s = normalize_answer(text)
    toks = []
    for word in s.split():
        buf = ""
        for ch in word:
            if "\u4e00" <= ch <= "\u9fff":  # Chinese: one token per character
                if buf:
                    toks.append(buf)
                    buf = ""
                toks.append(ch)
            else:
                buf += ch
        if buf:
            toks.append(buf)
    return [t for t in toks if t not in _ARTICLES]


def span_exact_match(pred: str, ref: str) -> bool:
    """>>> span_exact_match("The market", "market.")
    True
    """
    return _tokens(pred) == _tokens(ref)


def span_f1(pred: str, ref: str) -> float:
    """Bag-of-tokens F1 (SQuAD). >>> span_f1("the red ball", "a ball")  # 1 common of 2 and 1
    0.6666666666666666
    """
    p, r = _tokens(pred), _tokens(ref)
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def qa_scores(preds: Sequence[str], refs: Sequence[str]) -> dict:
    """Mean exact match and F1 over answer pairs."""
    if len(preds) != len(refs) or not refs:
        raise ValueError(f"qa_scores: need equally many predictions ({len(preds)}) and references ({len(refs)}), at least 1")
    return {"exact_match": sum(map(span_exact_match, preds, refs)) / len(refs),
            "f1": sum(map(span_f1, preds, refs)) / len(refs)}
