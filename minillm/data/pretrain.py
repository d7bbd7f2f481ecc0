"""Pretraining data: one token file, packed blocks (Happy LLM 5.3.2 ``PretrainDataset``, 6.1).

The book tokenizes each JSONL line on the fly, adds a BOS, truncates it to
``max_length`` and pads the rest. Two problems: documents are never closed with
an end-of-sequence token (the model never learns where a text ends), and short
documents waste most of each row on padding.

Here we do what nanoGPT / llama2.c do:

1. ``build_token_file`` tokenizes the corpus **once**, streaming, and appends
   ``eos_token_id`` after **every** document::

       doc 1 tokens  EOS  doc 2 tokens  EOS  doc 3 tokens  EOS ...

   The ids go to a flat binary file (``uint16`` if the vocabulary fits,
   else ``uint32``) with a JSON sidecar ``<file>.json`` describing it.
2. ``PretrainDataset`` maps that file with ``np.memmap`` (nothing is loaded
   into RAM) and cuts it into consecutive blocks. Block ``i`` is the
   ``block_size + 1`` tokens starting at ``i * block_size``; the pair
   ``x = chunk[:-1]``, ``y = chunk[1:]`` trains next-token prediction at every
   position. Consecutive blocks share one token (the last target of block
   ``i`` is the first input of block ``i + 1``), so no token is wasted and
   there is no padding at all. A block may span several documents: the EOS
   between them tells the model a new text starts.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Optional

import numpy as np

from .._checks import check_token_ids
from .._files import atomic_path, atomic_write
from ..io.jsonfile import read_json_object

__all__ = ["build_token_file", "read_token_file_info", "PretrainDataset"]

_FORMAT = "minillm-token-file-v1"


def _dtype_for(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every id: uint16 up to 65 535 tokens."""
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def build_token_file(
    texts: Iterable[str],
    tokenizer,
    out_path,
    show_progress: bool = True,
    allowed_special: Optional[str] = "none",
    chunk_tokens: int = 1 << 20,
) -> dict:
    """Tokenize ``texts`` into ``out_path`` (+ ``out_path.json``) and return the info dict.

    Each document is encoded with ``tokenizer.encode(text, allowed_special=...)``
    and followed by ``tokenizer.eos_token_id``. ``allowed_special="none"`` (the
    default) encodes special-token strings that occur in raw text as ordinary
    text; pass ``None`` to call ``tokenizer.encode(text)`` without arguments.
    Tokens are written in chunks of ``chunk_tokens`` so memory stays flat. The
    file is written under a temporary name and renamed at the end, so an
    interrupted run never leaves a truncated file behind.

    Returns (and writes as JSON) ``{"format", "dtype", "n_tokens",
    "n_documents", "vocab_size", "eos_token_id"}`` plus ``"path"``.
    """
    vocab_size = int(tokenizer.vocab_size)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("build_token_file: tokenizer.eos_token_id is None; every document must end with an EOS id")
    check_token_ids(int(eos), vocab_size, "build_token_file", name="tokenizer.eos_token_id")
    eos = int(eos)
    dtype = _dtype_for(vocab_size)
    out_path = os.fspath(out_path)
    if os.path.dirname(out_path):
        os.makedirs(os.path.dirname(out_path), exist_ok=True)

    progress = None
    if show_progress:
        from tqdm import tqdm

        total = len(texts) if hasattr(texts, "__len__") else None
        progress = tqdm(total=total, unit="doc", desc=f"tokenizing -> {os.path.basename(out_path)}")

    n_tokens = 0
    n_docs = 0
    buf: list = []  # token ids waiting to be written
    try:
        # streamed into a temporary file, renamed over out_path only when complete
        with atomic_path(out_path) as tmp_path, open(tmp_path, "wb") as f:
            for text in texts:
                if not isinstance(text, str):
                    raise TypeError(f"document {n_docs} is {type(text).__name__}, expected str")
                ids = tokenizer.encode(text) if allowed_special is None else tokenizer.encode(text, allowed_special=allowed_special)
                check_token_ids(ids, vocab_size, f"build_token_file: document {n_docs} (tokenizer output)")
                buf.extend(ids)
                buf.append(eos)  # close every document: the book forgets this
                n_docs += 1
                if len(buf) >= chunk_tokens:
                    np.asarray(buf, dtype=dtype).tofile(f)
                    n_tokens += len(buf)
                    buf = []
                if progress is not None:
                    progress.update(1)
                    if n_docs % 1000 == 0:
                        progress.set_postfix(tokens=n_tokens + len(buf), refresh=False)
            if buf:
                np.asarray(buf, dtype=dtype).tofile(f)
                n_tokens += len(buf)
    finally:
        if progress is not None:
            progress.set_postfix(tokens=n_tokens, refresh=False)
            progress.close()

    info = {
        "format": _FORMAT,
        "dtype": dtype.name,
        "n_tokens": n_tokens,
        "n_documents": n_docs,
        "vocab_size": vocab_size,
        "eos_token_id": eos,
    }
    atomic_write(out_path + ".json", json.dumps(info, indent=1))
    return dict(info, path=out_path)


def read_token_file_info(token_file) -> dict:
    """Read and check the JSON sidecar ``<token_file>.json`` written by ``build_token_file``."""
    meta_path = os.fspath(token_file) + ".json"
    if not os.path.exists(meta_path):
        raise FileNotFoundError(f"{meta_path} not found: token files are made by build_token_file(), which writes it")
    info = read_json_object(meta_path)
    for key in ("dtype", "n_tokens", "vocab_size", "eos_token_id"):
        if key not in info:
            raise ValueError(f"{meta_path}: missing field {key!r}")
    if info["dtype"] not in ("uint16", "uint32"):
        raise ValueError(f"{meta_path}: dtype must be 'uint16' or 'uint32', got {info['dtype']!r}")
    return info


class PretrainDataset:
    """Fixed-length training blocks over a token file (memory-mapped, read-only).

    ``len(ds)`` is ``(n_tokens - 1) // block_size``; ``ds[i]`` returns
    ``(x, y)``, two int64 arrays of length ``block_size`` with
    ``x = tokens[i*B : i*B + B]`` and ``y = tokens[i*B + 1 : i*B + B + 1]``.
    The last ``(n_tokens - 1) % block_size`` tokens are not used.

    Attributes: ``block_size``, ``n_tokens``, ``vocab_size``, ``eos_token_id``, ``data`` (the memmap).
    """

    def __init__(self, token_file, block_size: int):
        if int(block_size) < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.path = os.fspath(token_file)
        self.block_size = int(block_size)
        info = read_token_file_info(self.path)
        self.vocab_size = int(info["vocab_size"])
        self.eos_token_id = int(info["eos_token_id"])
        dtype = np.dtype(info["dtype"])
        size = os.path.getsize(self.path)
        if size != info["n_tokens"] * dtype.itemsize:
            raise ValueError(
                f"{self.path}: file has {size} bytes but its sidecar says {info['n_tokens']} {dtype.name} tokens "
                f"({info['n_tokens'] * dtype.itemsize} bytes); rebuild it with build_token_file()"
            )
        self.n_tokens = int(info["n_tokens"])
        if self.n_tokens < self.block_size + 1:
            raise ValueError(
                f"{self.path}: {self.n_tokens} tokens is too few for one block of block_size + 1 = {self.block_size + 1}"
            )
        self.data = np.memmap(self.path, dtype=dtype, mode="r")  # (n_tokens,)
        self._len = (self.n_tokens - 1) // self.block_size

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int):
        i = int(i)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"block index {i} out of range for {self._len} blocks")
        start = i * self.block_size
        chunk = np.asarray(self.data[start : start + self.block_size + 1], dtype=np.int64)  # (B + 1,)
        return chunk[:-1], chunk[1:]  # (B,), (B,)

    def __repr__(self) -> str:
        return f"PretrainDataset({self.path!r}, block_size={self.block_size}, blocks={self._len}, tokens={self.n_tokens})"
