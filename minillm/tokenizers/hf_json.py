"""Happy LLM 5.2.3 — Hugging Face ``tokenizer.json`` pieces.

The book trains with the ``tokenizers`` library and saves ``tokenizer.json``;
we write the same format so that ``tokenizers.Tokenizer.from_file`` and
``transformers.AutoTokenizer.from_pretrained`` read our files and give the same
ids.  This module holds the format's building blocks; each tokenizer class
assembles its own file (``BPETokenizer.to_hf_json`` etc.).

Byte-level BPE stores tokens as *strings*, so every byte needs a printable
character.  GPT-2's trick (``bytes_to_unicode``) keeps the 188 printable bytes
as themselves and shifts the other 68 (space, control bytes, ...) to code
points from 256 up: the space byte becomes ``Ġ`` and ``\\n`` becomes ``Ċ``,
which is why those letters fill GPT-style vocabularies.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

__all__ = [
    "CHAR_PATTERN",
    "bytes_to_unicode",
    "unicode_to_bytes",
    "token_string",
    "token_bytes",
    "split_pre_tokenizer",
    "byte_level_pre_tokenizer",
    "parse_byte_level_pattern",
    "normalizer_json",
    "parse_normalizer",
    "bos_post_processor",
    "NORMALIZATIONS",
    "file_skeleton",
    "parse_added_tokens",
    "check_vocab_ids",
]

NORMALIZATIONS = ("NFC", "NFD", "NFKC", "NFKD")


@lru_cache(maxsize=None)
def bytes_to_unicode() -> tuple[str, ...]:
    """GPT-2's table: ``bytes_to_unicode()[b]`` is the character that stands for byte ``b``.

    >>> t = bytes_to_unicode()
    >>> t[ord("a")], t[ord(" ")], t[ord("\\n")]
    ('a', 'Ġ', 'Ċ')
    """
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = [""] * 256
    shift = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shift)
            shift += 1
    return tuple(table)


@lru_cache(maxsize=None)
def unicode_to_bytes() -> dict[str, int]:
    """The inverse of :func:`bytes_to_unicode`: character -> byte value."""
    return {c: b for b, c in enumerate(bytes_to_unicode())}


def token_string(data: bytes) -> str:
    """Bytes of a token -> its byte-level string (``b" the"`` -> ``"Ġthe"``)."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in data)


def token_bytes(token: str, source: str = "tokenizer.json") -> bytes:
    """Byte-level string -> bytes; ``ValueError`` if it is not byte-level."""
    table = unicode_to_bytes()
    try:
        return bytes(table[c] for c in token)
    except KeyError as e:
        raise ValueError(f"{source}: token {token!r} has the character {e.args[0]!r}, which is not byte-level") from None


#: The character tokenizer's pre-tokenizer: any single character, newlines included (Hugging
#: Face's regex has no dotall flag). Kept here, with the file format, because ``Tokenizer.load``
#: recognises a character-level ``tokenizer.json`` by it without importing the subclass.
CHAR_PATTERN = r"[\s\S]"


def split_pre_tokenizer(pattern: str, behavior: str = "Isolated", invert: bool = False) -> dict[str, Any]:
    """A ``Split`` pre-tokenizer: cut the text with a regex (matches and the gaps between them)."""
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": behavior, "invert": invert}


def byte_level_pre_tokenizer(pattern: str) -> dict[str, Any]:
    """``Split(pattern)`` then ``ByteLevel`` (bytes -> characters, no regex of its own)."""
    return {
        "type": "Sequence",
        "pretokenizers": [
            split_pre_tokenizer(pattern),
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ],
    }


def parse_byte_level_pattern(pre: Any, gpt2_pattern: str, source: str) -> str:
    """The split regex of a byte-level BPE ``pre_tokenizer`` we know how to run."""
    if isinstance(pre, dict) and pre.get("type") == "ByteLevel":
        # The ByteLevel pre-tokenizer's built-in regex is GPT-2's.
        if pre.get("add_prefix_space"):
            raise ValueError(f"{source}: ByteLevel add_prefix_space=true is not supported")
        if pre.get("use_regex", True):
            return gpt2_pattern
        raise ValueError(f"{source}: a ByteLevel pre-tokenizer without a regex is not supported")
    if isinstance(pre, dict) and pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers") or []
        if (
            len(steps) == 2
            and steps[0].get("type") == "Split"
            and isinstance(steps[0].get("pattern"), dict)
            and "Regex" in steps[0]["pattern"]
            and steps[0].get("behavior", "Isolated") == "Isolated"
            and not steps[0].get("invert", False)
            and steps[1].get("type") == "ByteLevel"
            and not steps[1].get("use_regex", True)
            and not steps[1].get("add_prefix_space", False)
        ):
            return steps[0]["pattern"]["Regex"]
    raise ValueError(f"{source}: unsupported pre_tokenizer {pre!r}; expected Sequence[Split(Regex), ByteLevel]")


def normalizer_json(normalization: str | None) -> dict | None:
    return None if normalization is None else {"type": normalization}


def parse_normalizer(norm: Any, source: str) -> str | None:
    if norm is None:
        return None
    if isinstance(norm, dict) and norm.get("type") in NORMALIZATIONS:
        return norm["type"]
    raise ValueError(f"{source}: unsupported normalizer {norm!r}; expected null or one of {NORMALIZATIONS}")


def bos_post_processor(bos_token: str | None, bos_id: int | None) -> dict | None:
    """``TemplateProcessing`` that prepends BOS, so ``add_special_tokens=True``
    means the same thing in Hugging Face as in ``Tokenizer.encode``."""
    if bos_token is None:
        return None
    bos = {"SpecialToken": {"id": bos_token, "type_id": 0}}
    return {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, bos, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos_token: {"id": bos_token, "ids": [bos_id], "tokens": [bos_token]}},
    }


def file_skeleton(added_tokens: list[dict], normalizer, pre_tokenizer, post_processor, decoder, model) -> dict:
    """The top level of a ``tokenizer.json`` (key order as ``tokenizers`` writes it)."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": model,
    }


def parse_added_tokens(data: dict, source: str) -> dict[str, int]:
    """``added_tokens`` -> ``{content: id}`` (all of them are matched whole)."""
    out: dict[str, int] = {}
    added = data.get("added_tokens") or []
    if not isinstance(added, list):
        raise ValueError(f"{source}: added_tokens must be a list, got {type(added).__name__}")
    for t in added:
        if (not isinstance(t, dict) or not isinstance(t.get("content"), str) or not isinstance(t.get("id"), int)
                or isinstance(t.get("id"), bool) or t["id"] < 0):
            raise ValueError(f"{source}: malformed added_tokens entry {str(t)[:200]} (needs a string 'content' and "
                             "an integer 'id' >= 0)")
        out[t["content"]] = t["id"]
    return out


def check_vocab_ids(vocab: dict, added: dict[str, int], source: str) -> int:
    """Check every id of ``model.vocab`` and ``added_tokens`` *before* anything is built from them.

    Each must be a JSON integer (not a bool, not ``3.0``) in ``[0, n)``, ``n`` being the number of
    distinct tokens (the vocabulary plus added tokens it lacks): one id of 300,000,000 would
    otherwise make the loader build tables that large. Returns ``n``.
    """
    n = len(vocab) + sum(1 for t in added if t not in vocab)
    for where, table in (("model.vocab", vocab), ("added_tokens", added)):
        for tok, i in table.items():
            if not isinstance(i, int) or isinstance(i, bool):
                raise ValueError(f"{source}: {where} id of {tok!r} is {i!r}, not an integer")
            if not 0 <= i < n:
                raise ValueError(f"{source}: {where} id {i} of {tok!r} is outside [0, {n}) (the file has {n} tokens)")
    return n
