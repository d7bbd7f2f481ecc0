"""Happy LLM 5.2.1 — word-level tokenizer.

Split on whitespace and punctuation; Chinese has no spaces between words, so
(as the book does) each Chinese character is its own token.  The vocabulary
keeps the most frequent words and everything else becomes ``<unk>``: that is
the out-of-vocabulary (OOV) problem that motivates subwords.  Whitespace is
not kept, so ``decode`` re-inserts single spaces by simple rules and the round
trip is not exact ("a  b\\n" comes back as "a b").

>>> tok = WordTokenizer.train(["Hello, world! 你好，世界。"])
>>> [tok.id_to_token(i) for i in tok.encode("Hello,  world! 你好")]
['Hello', ',', 'world', '!', '你', '好']
>>> tok.decode(tok.encode("Hello,  world!"))
'Hello, world!'
>>> tok.decode(tok.encode("世界，你好。"))
'世界，你好。'
>>> tok.decode(tok.encode("Goodbye, world"))
'<unk>, world'
"""

from __future__ import annotations

import regex

from .hf_json import split_pre_tokenizer
from .wordlevel import WordLevelTokenizer

__all__ = ["WordTokenizer", "WORD_PATTERN"]

#: One Chinese character | a run of anything but space, punctuation, symbols and
#: Chinese | one punctuation mark or symbol.  Whitespace is dropped.
WORD_PATTERN = r"\p{Han}|[^\s\p{P}\p{S}\p{Han}]+|[\p{P}\p{S}]"

_WORD_RE = regex.compile(WORD_PATTERN)
_NO_SPACE_BEFORE = set(".,!?;:%)]}'\"…") | set("，。！？；：、）》」』】”’")
_NO_SPACE_AFTER = set("([{\"") | set("（《「『【“‘")
_CJK = regex.compile(r"[\p{Han}\u3000-\u303f\uff00-\uffef]")
_HAN = regex.compile(r"\p{Han}")


class WordTokenizer(WordLevelTokenizer):
    """Whitespace/punctuation split, Chinese split into characters; ``lowercase`` folds case.

    ``segmenter``: optional callable ``str -> list[str]`` that cuts each run of Chinese
    characters into words instead of single characters (Happy LLM 1.3.1), e.g.
    ``minillm.classic.segment.UnigramSegmenter(dictionary)``. It is not saved with the
    tokenizer (``tokenizer.json`` cannot describe it): pass it again after loading.
    """

    PATTERN = WORD_PATTERN

    def __init__(self, tokens=(), special_tokens=None, *, lowercase: bool = False, segmenter=None, **kwargs):
        if special_tokens is None:
            from .base import DEFAULT_SPECIAL_TOKENS

            special_tokens = DEFAULT_SPECIAL_TOKENS
        super().__init__(tokens, special_tokens, **kwargs)
        self.lowercase = bool(lowercase)
        if segmenter is not None and not callable(segmenter):
            raise TypeError(f"WordTokenizer: segmenter must be callable (str -> list of words), got {type(segmenter).__name__}")
        self.segmenter = segmenter

    def _split(self, text: str) -> list[str]:
        units = _WORD_RE.findall(text.lower() if self.lowercase else text)
        if self.segmenter is None:
            return units
        out: list[str] = []
        run = ""  # consecutive Chinese characters, cut into words by the segmenter
        for u in units + [""]:
            if len(u) == 1 and _HAN.fullmatch(u):
                run += u
                continue
            if run:
                words = list(self.segmenter(run))
                if "".join(words) != run:
                    raise ValueError(f"WordTokenizer: segmenter changed the text {run!r} into {words!r}")
                out.extend(words)
                run = ""
            if u:
                out.append(u)
        return out

    def _join(self, tokens: list[str]) -> str:
        out: list[str] = []
        prev = None
        for t in tokens:
            if prev is not None and not (
                t in _NO_SPACE_BEFORE or prev in _NO_SPACE_AFTER or _CJK.fullmatch(t) or _CJK.fullmatch(prev)
                or (self.segmenter is not None and (_HAN.fullmatch(t[0]) or _HAN.fullmatch(prev[-1])))
            ):
                out.append(" ")
            out.append(t)
            prev = t
        return "".join(out)

    def _hf_normalizer(self):
        return {"type": "Lowercase"} if self.lowercase else None

    def _hf_pre_tokenizer(self) -> dict:
        if self.segmenter is not None:
            raise ValueError("WordTokenizer: a tokenizer with a custom segmenter cannot be written as tokenizer.json")
        # invert=True: the regex matches the tokens; what is between them (spaces) is removed
        return split_pre_tokenizer(WORD_PATTERN, behavior="Removed", invert=True)

    @classmethod
    def _hf_options(cls, data: dict, source: str) -> dict:
        norm = data.get("normalizer")
        if norm not in (None, {"type": "Lowercase"}):
            raise ValueError(f"{source}: unsupported normalizer {norm!r} for a WordTokenizer")
        return {"lowercase": norm is not None}

    def config(self) -> dict:
        cfg = super().config()
        cfg["minillm"]["lowercase"] = self.lowercase
        return cfg
