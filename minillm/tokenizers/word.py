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


class WordTokenizer(WordLevelTokenizer):
    """Whitespace/punctuation split, Chinese split into characters; ``lowercase`` folds case."""

    PATTERN = WORD_PATTERN

    def __init__(self, tokens=(), special_tokens=None, *, lowercase: bool = False, **kwargs):
        if special_tokens is None:
            from .base import DEFAULT_SPECIAL_TOKENS

            special_tokens = DEFAULT_SPECIAL_TOKENS
        super().__init__(tokens, special_tokens, **kwargs)
        self.lowercase = bool(lowercase)

    def _split(self, text: str) -> list[str]:
        return _WORD_RE.findall(text.lower() if self.lowercase else text)

    def _join(self, tokens: list[str]) -> str:
        out: list[str] = []
        prev = None
        for t in tokens:
            if prev is not None and not (
                t in _NO_SPACE_BEFORE or prev in _NO_SPACE_AFTER or _CJK.fullmatch(t) or _CJK.fullmatch(prev)
            ):
                out.append(" ")
            out.append(t)
            prev = t
        return "".join(out)

    def _hf_normalizer(self):
        return {"type": "Lowercase"} if self.lowercase else None

    def _hf_pre_tokenizer(self) -> dict:
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
