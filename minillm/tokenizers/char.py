"""Happy LLM 5.2.2 — character-level tokenizer.

Every character (Unicode code point) is a token.  The vocabulary is small (a
few thousand characters cover Chinese text, a hundred cover English), almost
nothing is out of vocabulary, and ``decode(encode(s)) == s`` whenever every
character was seen in training.  The price is long sequences: one token per
character means the model must spend its context and compute on spelling.

>>> tok = CharTokenizer.train(["hello 世界"])
>>> tok.encode("hello")   # ids 0-5 are special; 'l' is most frequent -> 6
[9, 8, 6, 6, 10]
>>> tok.decode(tok.encode("hello 世界"))
'hello 世界'
>>> tok.encode("hi")   # 'i' was never seen -> <unk> (id 0)
[9, 0]
"""

from __future__ import annotations

from .hf_json import CHAR_PATTERN, split_pre_tokenizer
from .wordlevel import WordLevelTokenizer

__all__ = ["CharTokenizer", "CHAR_PATTERN"]


class CharTokenizer(WordLevelTokenizer):
    """One token per character; unseen characters become ``<unk>``."""

    PATTERN = CHAR_PATTERN

    def _split(self, text: str) -> list[str]:
        return list(text)

    def _join(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def _hf_pre_tokenizer(self) -> dict:
        return split_pre_tokenizer(CHAR_PATTERN)

    def _hf_decoder(self):
        return {"type": "Fuse"}  # glue the characters back without spaces
