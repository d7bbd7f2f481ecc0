"""Reading a knowledge base from disk (Happy LLM 7.2.2, TinyRAG ``utils.py``: ``ReadFiles``).

The book's ``ReadFiles(path)`` walks a folder for ``.md``/``.txt``/``.pdf`` files,
``get_content(max_token_len=600, cover_content=150)`` reads and chunks them. Ours reads

===========  ==================================================================
``.txt``     the whole file is one document
``.md``      one document per section: a heading line starts a section, and the
             heading path ("Guide > Install") is kept as the section's ``heading``
``.jsonl``   one document per line with a string ``text`` field (the book's
             pretraining format); ``metadata["line"]`` is the 1-based line number
===========  ==================================================================

and keeps, for every document, its source path and its character offset in the file, so a
retrieved chunk can always be traced back to the exact place it came from.

A file that cannot be read (not UTF-8, bad JSON, no ``text`` field, unreadable) is *reported
by name and skipped*: ``ReadFiles.errors`` lists ``(path, reason)`` and a ``RuntimeWarning``
names it, so one broken file never stops the indexing of a thousand good ones. PDF is not
read (it needs a third-party parser); a ``.pdf`` file is reported as skipped.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field

from .chunking import chunk_documents, split_text

__all__ = ["Document", "ReadFiles", "load_documents", "read_file_content", "SUPPORTED_SUFFIXES"]

SUPPORTED_SUFFIXES = (".txt", ".md", ".jsonl")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


@dataclass
class Document:
    """One document: ``text``, the ``source`` file path, ``offset`` = where ``text`` starts in
    the file's decoded text (for ``.jsonl``: 0, offsets are within the line's ``text``),
    ``heading`` (Markdown section path or None) and free ``metadata`` (``line`` for JSONL)."""

    text: str
    source: str
    offset: int = 0
    heading: str | None = None
    metadata: dict = field(default_factory=dict)


def _markdown_sections(text: str, source: str) -> list:
    """Split Markdown at heading lines; each section keeps its heading line and its heading path.

    >>> [d.heading for d in _markdown_sections("intro\\n# A\\nx\\n## B\\ny\\n# C\\nz", "f.md")]
    [None, 'A', 'A > B', 'C']
    """
    heads = list(_HEADING.finditer(text))
    starts = [0] + [m.start() for m in heads]
    if heads and heads[0].start() == 0:
        starts = starts[1:]
    docs, path = [], []  # path: [(level, title)]
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else len(text)
        m = _HEADING.match(text, s)
        if m and m.start() == s:
            level = len(m.group(1))
            path = [p for p in path if p[0] < level] + [(level, m.group(2).strip())]
        heading = " > ".join(t for _, t in path) if path else None
        body = text[s:e]
        if (body[m.end() - s:] if m and m.start() == s else body).strip():  # a heading alone is no document
            docs.append(Document(body, source, offset=s, heading=heading))
    return docs


def read_file_content(path: str) -> list:
    """The documents of one file (see the module docstring). Raises ``ValueError`` naming the
    file (and line) on content it cannot read; ``OSError`` on a file it cannot open."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected one of {SUPPORTED_SUFFIXES}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
    if suffix == ".txt":
        return [Document(text, path)] if text.strip() else []
    if suffix == ".md":
        return _markdown_sections(text, path)
    docs = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            got = type(record.get("text")).__name__ if isinstance(record, dict) and "text" in record else "no 'text'"
            raise ValueError(f"{path}:{n}: expected an object with a string 'text' field, got {got}")
        if record["text"].strip():
            docs.append(Document(record["text"], path, metadata={"line": n}))
    return docs


class ReadFiles:
    """The book's file reader: ``ReadFiles(path).get_content(max_token_len, cover_content)``.

    ``path`` is a folder (walked recursively, files in sorted order, hidden files and folders
    skipped) or a single file. ``file_list`` holds the files with a supported suffix;
    ``errors`` the ``(path, reason)`` of every file that was skipped.
    """

    def __init__(self, path) -> None:
        self._path = os.fspath(path)
        if not os.path.exists(self._path):
            raise FileNotFoundError(f"ReadFiles: {self._path} does not exist")
        self.errors: list = []
        self.file_list = self.get_files()

    def get_files(self) -> list:
        if os.path.isfile(self._path):
            return [self._path]
        out = []
        for root, dirs, files in os.walk(self._path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                p = os.path.join(root, name)
                if name.lower().endswith(SUPPORTED_SUFFIXES):
                    out.append(p)
                elif name.lower().endswith(".pdf"):
                    self._skip(p, "PDF is not read (it needs a PDF parser); convert it to .txt or .md")
        return out

    def _skip(self, path: str, reason: str) -> None:
        self.errors.append((path, reason))
        warnings.warn(f"skipped {path}: {reason}" if not reason.startswith(path) else f"skipped {reason}", RuntimeWarning, stacklevel=3)

    def get_documents(self) -> list:
        """Every readable document of every file; unreadable files go to ``errors``."""
        docs = []
        for p in self.file_list:
            try:
                docs.extend(read_file_content(p))
            except (ValueError, OSError) as e:
                self._skip(p, str(e))
        return docs

    def get_content(self, max_token_len: int = 600, cover_content: int = 150, tokenizer=None) -> list:
        """Read and chunk everything: a list of ``Chunk`` (``minillm.rag.chunking``) of at most
        ``max_token_len`` tokens, consecutive chunks of a document sharing up to
        ``cover_content`` tokens of whole sentences."""
        return chunk_documents(self.get_documents(), max_token_len, cover_content, tokenizer=tokenizer)

    @classmethod
    def get_chunk(cls, text: str, max_token_len: int = 600, cover_content: int = 150, tokenizer=None) -> list:
        """The book's ``ReadFiles.get_chunk``: ``text`` cut into chunk strings (``split_text``)."""
        return [text[s:e] for s, e in split_text(text, max_token_len, cover_content, tokenizer=tokenizer)]


def load_documents(path) -> tuple:
    """``(documents, errors)`` of a folder or file: ``ReadFiles(path).get_documents()`` and the
    ``(path, reason)`` of every skipped file."""
    reader = ReadFiles(path)
    docs = reader.get_documents()
    return docs, reader.errors
