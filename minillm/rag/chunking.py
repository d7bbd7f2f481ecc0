"""Chunking by tokens, with overlap, on paragraph and sentence boundaries (Happy LLM 7.2.2,
TinyRAG's ``ReadFiles.get_chunk``).

A retriever ranks *chunks*, not files: a chunk must be short enough for the reader model's
context and for an embedding to summarise it, and should not cut a sentence in half.

``split_text(text, max_tokens, overlap)`` returns ``(start, end)`` character spans:

1. The text is cut into *units*: sentences (after ``. ! ? ; 。 ！ ？ ；`` and at line breaks),
   each remembering its paragraph (paragraphs are separated by blank lines). A unit longer
   than ``max_tokens`` (a run-on sentence, a line of Chinese without punctuation) is cut at
   the last token boundary that fits.
2. Units are packed greedily into a chunk while the chunk's token count stays within
   ``max_tokens``; a chunk that is at least half full ends at a paragraph boundary rather
   than start a new paragraph it cannot finish.
3. The next chunk starts with the longest run of *whole* sentences at the end of the previous
   chunk that has at most ``overlap`` tokens (the book's ``cover_content``), so a fact that
   straddles two chunks is whole in one of them; a chunk that starts a new paragraph carries no
   overlap (the paragraph break is a natural start). A sentence longer than ``overlap`` is never
   cut to make an overlap, so the overlap can be smaller than asked (or 0).

Guarantees (tested): every non-space character of the text is in some chunk; no chunk has more
than ``max_tokens`` tokens; consecutive chunks share at most ``overlap`` tokens; with
``overlap=0`` the chunks are disjoint and in order.

The book counts tokens with tiktoken and takes ``cover_content`` *characters* from the end of
the previous chunk, so its overlap can start mid-word; here both limits are tokens.

Tokens are counted by ``tokenizer``: None (the default ``simple_tokenize``: runs of letters or
digits, each Chinese character, each punctuation mark), any ``minillm`` tokenizer (its
``encode_ordinary``) or a callable ``str -> int``.
"""
from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field

import regex

__all__ = ["Chunk", "simple_tokenize", "token_counter", "split_text", "chunk_documents"]

_TOKEN = regex.compile(r"\p{Han}|[^\s\p{Han}\p{P}\p{S}]+|[\p{P}\p{S}]")
_SENTENCE_END = regex.compile(r"(?<=[.!?;])\s+|(?<=[。！？；])\s*|\n")
_PARAGRAPH = regex.compile(r"\n[ \t]*\n\s*")


def simple_tokenize(text: str) -> list:
    """Token spans ``[(start, end)]``: each Chinese character, each run of letters/digits, each
    punctuation mark or symbol.

    >>> [("Tom's 2 cats。猫"[s:e]) for s, e in simple_tokenize("Tom's 2 cats。猫")]
    ['Tom', "'", 's', '2', 'cats', '。', '猫']
    """
    return [m.span() for m in _TOKEN.finditer(text)]


def token_counter(tokenizer=None):
    """A ``str -> int`` token counter from ``tokenizer`` (None, a minillm tokenizer or a callable)."""
    if tokenizer is None:
        return lambda s: len(simple_tokenize(s))
    if hasattr(tokenizer, "encode_ordinary"):
        return lambda s: len(tokenizer.encode_ordinary(s))
    if callable(tokenizer):
        return tokenizer
    raise TypeError(f"tokenizer must be None, a minillm tokenizer or a callable str -> int, got {type(tokenizer).__name__}")


@dataclass
class Chunk:
    """A piece of a document: ``text == file_text[start:end]`` (for ``.jsonl``: of the line's
    ``text``), its ``source`` path, Markdown ``heading`` and ``metadata`` (e.g. ``line``)."""

    text: str
    source: str
    start: int
    end: int
    heading: str | None = None
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "chunk") -> "Chunk":
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected an object, got {type(d).__name__}")
        for name, kind in (("text", str), ("source", str), ("start", int), ("end", int)):
            if not isinstance(d.get(name), kind) or isinstance(d.get(name), bool):
                raise ValueError(f"{where}: field {name!r} must be {kind.__name__}, got {d.get(name)!r}")
        heading = d.get("heading")
        if heading is not None and not isinstance(heading, str):
            raise ValueError(f"{where}: field 'heading' must be a string or null, got {heading!r}")
        metadata = d.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ValueError(f"{where}: field 'metadata' must be an object, got {metadata!r}")
        return cls(d["text"], d["source"], d["start"], d["end"], heading, metadata)


def _strip(text: str, s: int, e: int) -> tuple:
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return s, e


def _units(text: str) -> list:
    """Sentences as ``(start, end, paragraph index)``, whitespace stripped, in order."""
    out = []
    para_bounds = [0] + [m.end() for m in _PARAGRAPH.finditer(text)]
    para_ends = [m.start() for m in _PARAGRAPH.finditer(text)] + [len(text)]
    for p, (ps, pe) in enumerate(zip(para_bounds, para_ends)):
        cuts = [ps] + [m.end() for m in _SENTENCE_END.finditer(text, ps, pe)] + [pe]
        for s, e in zip(cuts, cuts[1:]):
            s, e = _strip(text, s, e)
            if s < e:
                out.append((s, e, p))
    return out


def _cut_long(text: str, s: int, e: int, max_tokens: int, count) -> list:
    """Cut ``text[s:e]`` (more than ``max_tokens`` tokens) at token boundaries into pieces that fit."""
    ends = [s + te for _, te in simple_tokenize(text[s:e])] or [e]
    pieces = []
    while s < e:
        i = bisect.bisect_right(ends, s)  # first boundary after s
        lo, hi = i, len(ends) - 1  # largest boundary index whose prefix fits
        best = i
        while lo <= hi:
            mid = (lo + hi) // 2
            if count(text[s:ends[mid]]) <= max_tokens:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        end = ends[best]
        if count(text[s:end]) > max_tokens:  # one "simple token" longer than the limit: cut characters
            end = s + 1
            while end < e and count(text[s:end + 1]) <= max_tokens:
                end += 1
        ps, pe = _strip(text, s, end)
        if ps < pe:
            pieces.append((ps, pe))
        s = end
        while s < e and text[s].isspace():
            s += 1
    return pieces


def split_text(text: str, max_tokens: int = 600, overlap: int = 150, tokenizer=None) -> list:
    """``(start, end)`` spans of the chunks of ``text`` (see the module docstring).

    >>> t = "One. Two two. Three three three.\\n\\nFour."
    >>> [t[s:e] for s, e in split_text(t, max_tokens=8, overlap=3)]
    ['One. Two two.', 'Two two. Three three three.', 'Four.']
    """
    if not isinstance(text, str):
        raise TypeError(f"split_text: text must be a str, got {type(text).__name__}")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ValueError(f"split_text: max_tokens must be an int >= 1, got {max_tokens!r}")
    if not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap < max_tokens:
        raise ValueError(f"split_text: overlap must be an int in [0, max_tokens={max_tokens}), got {overlap!r}")
    count = token_counter(tokenizer)
    units = []
    for s, e, p in _units(text):
        if count(text[s:e]) <= max_tokens:
            units.append((s, e, p))
        else:
            units += [(a, b, p) for a, b in _cut_long(text, s, e, max_tokens, count)]
    spans, i, first_new = [], 0, 0
    while i < len(units):
        j = max(i, first_new) + 1  # units[i:j] is the chunk; it holds every unit up to the first new one
        while j < len(units):
            if count(text[units[i][0]:units[j][1]]) > max_tokens:
                break
            new_paragraph = units[j][2] != units[j - 1][2]
            if new_paragraph and count(text[units[i][0]:units[j - 1][1]]) * 2 >= max_tokens:
                break
            j += 1
        spans.append((units[i][0], units[j - 1][1]))
        if j == len(units):
            break
        # the next chunk starts at units[k]: back up over whole sentences of the same paragraph
        # within the overlap (a new paragraph is a natural start and needs none)
        k = j
        while k - 1 > i and units[k - 1][2] == units[j][2] and count(text[units[k - 1][0]:units[j - 1][1]]) <= overlap:
            k -= 1
        while k < j and count(text[units[k][0]:units[j][1]]) > max_tokens:
            k += 1  # the overlap plus the next sentence must still fit
        i, first_new = k, j
    return spans


def chunk_documents(documents, max_tokens: int = 600, overlap: int = 150, tokenizer=None) -> list:
    """``Chunk``s of ``Document``s (``minillm.rag.loaders``); offsets are relative to the file."""
    chunks = []
    for doc in documents:
        for s, e in split_text(doc.text, max_tokens, overlap, tokenizer=tokenizer):
            chunks.append(Chunk(doc.text[s:e], doc.source, doc.offset + s, doc.offset + e, doc.heading,
                                dict(doc.metadata)))
    return chunks
