"""Happy LLM 5.2.3 — BPE encoding of a whole text in one compiled call.

``BPETokenizer.encode`` has a readable path (``bpe.py``): the ``regex`` module cuts the
text into chunks (``_pretokenize``), a Python dict caches each chunk's ids, and the misses
are merged by ``_kernels.bpe_encode_chunks``. Measured on 5 MB of text, that path spends
most of its time *between* the merges: ~35% in ``regex.findall`` and ~50% in Python work per
chunk (700,000 chunk lookups, list building). This module removes both for the
pre-tokenization patterns this project trains with (``GPT4_PATTERN`` and ``DIGITS_PATTERN``),
which are simple enough to run as a hand-written scanner:

1. ``char_table()``: one byte per Unicode code point saying whether it is a letter
   (``\\p{L}``), a number (``\\p{N}``) or whitespace (``\\s``), and which of the letters of
   ``'s 't 're 've 'm 'll 'd`` it is case-insensitively. The table is computed *by the
   regex module itself* (``regex.finditer`` over every code point), so the scanner's
   classes are exactly the pattern's, whatever Unicode version ``regex`` was built with.
2. ``encode_text``: decodes the UTF-8 bytes, finds each chunk with the scanner
   (``_gpt4_match``: the regex's alternatives tried in the regex's order,
   with its greedy, possessive and look-ahead rules written out), looks the chunk's bytes up
   in a hash-table cache (arrays owned by the tokenizer, ``EncodeCache``), and BPE-merges a
   miss with the same ``_merge_chunk`` the readable path uses.

The tests check the scanner against ``regex.findall`` on random strings of tricky
characters (all whitespace kinds, marks, digits of other scripts, the long s ``ſ`` that
``(?i)'s`` matches) and the whole encoder against the readable path. Any other pattern
(GPT-2's, or one read from a file) uses the readable path: each scanner costs seconds of
Numba compilation on first use, so only the patterns our recipes train with have one.
"""
from __future__ import annotations

import numpy as np
import regex
from numba import njit
from numba.extending import register_jitable

from ..kernels._cache import CACHE  # cache=True, or False where no folder is writable (kernels/_cache.py)
from . import _kernels as K

__all__ = ["char_table", "EncodeCache", "ChunkCounts", "encode_text", "count_chunks", "scan_chunks", "MODE_GPT4",
           "MODE_DIGITS"]

MODE_GPT4, MODE_DIGITS = 0, 1

# char_table() bits
_L, _N, _S = 1, 2, 4
_CONTRACTION_LETTERS = "strevmld"  # letter codes 1..8, stored in bits 3-6
_LS, _LT, _LR, _LE, _LV, _LM, _LL, _LD = 1, 2, 3, 4, 5, 6, 7, 8

_TABLE: np.ndarray | None = None


def char_table() -> np.ndarray:
    """(0x110000,) uint8: bit 0 ``\\p{L}``, bit 1 ``\\p{N}``, bit 2 ``\\s`` (as the ``regex``
    module defines them), bits 3-6 the code 1..8 of the letter of ``"strevmld"`` the code point
    equals under ``(?i)`` (``"S"``, ``"s"`` and ``"ſ"`` all give 1). Built once per process."""
    global _TABLE
    if _TABLE is None:
        cps = np.concatenate([np.arange(0xD800), np.arange(0xE000, 0x110000)]).astype(np.uint32)  # no surrogates
        text = cps.tobytes().decode("utf-32-le")  # every code point once
        table = np.zeros(0x110000, np.uint8)
        for m in regex.finditer(r"(\p{L}+)|(\p{N}+)|(\s+)", text):  # runs: ~1000x fewer matches than characters
            table[cps[m.start() : m.end()]] |= (_L, _N, _S)[m.lastindex - 1]
        for m in regex.finditer("(?i)[" + _CONTRACTION_LETTERS + "]", text):
            code = next(i for i, ch in enumerate(_CONTRACTION_LETTERS, 1) if regex.fullmatch("(?i)" + ch, m.group()))
            table[cps[m.start()]] |= code << 3
        _TABLE = table
    return _TABLE


@register_jitable
def _is(table, cp, bit):
    return (table[cp] & bit) != 0


@register_jitable
def _is_other(table, cp):
    """``[^\\s\\p{L}\\p{N}]``: punctuation, symbols, marks, controls ..."""
    return (table[cp] & 7) == 0


@register_jitable
def _gpt4_match(cp, i, n, table, max_digits):
    """End of the match of GPT4_PATTERN (``max_digits=3``) or DIGITS_PATTERN (1) at ``cp[i]``::

        (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+

    The alternatives in order; the first that matches wins. Returns -1 if none does
    (cannot happen: every character is a letter, a number, whitespace or "other")."""
    c = cp[i]
    # (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if c == 39 and i + 1 < n:
        l1 = table[cp[i + 1]] >> 3
        if l1 == _LS or l1 == _LT or l1 == _LM or l1 == _LD:
            return i + 2
        if i + 2 < n:
            l2 = table[cp[i + 2]] >> 3
            if (l1 == _LR and l2 == _LE) or (l1 == _LV and l2 == _LE) or (l1 == _LL and l2 == _LL):
                return i + 3
    # [^\r\n\p{L}\p{N}]?+\p{L}+  (possessive: a consumed first character is never given back)
    if (table[c] & 3) == 0 and c != 10 and c != 13:
        if i + 1 < n and _is(table, cp[i + 1], _L):
            j = i + 2
            while j < n and _is(table, cp[j], _L):
                j += 1
            return j
    elif _is(table, c, _L):
        j = i + 1
        while j < n and _is(table, cp[j], _L):
            j += 1
        return j
    # \p{N}{1,3}
    if _is(table, c, _N):
        j = i + 1
        while j < n and j - i < max_digits and _is(table, cp[j], _N):
            j += 1
        return j
    #  ?[^\s\p{L}\p{N}]++[\r\n]*   (the optional space is given back if no "other" follows it)
    k = i
    if c == 32 and i + 1 < n and _is_other(table, cp[i + 1]):
        k = i + 1
    if _is_other(table, cp[k]):
        j = k + 1
        while j < n and _is_other(table, cp[j]):
            j += 1
        while j < n and (cp[j] == 10 or cp[j] == 13):
            j += 1
        return j
    if not _is(table, c, _S):
        return -1
    e = i + 1  # the whitespace run [i, e)
    while e < n and _is(table, cp[e], _S):
        e += 1
    # \s*[\r\n]: greedy \s* backs off to the last newline of the run
    m = e - 1
    while m >= i:
        if cp[m] == 10 or cp[m] == 13:
            return m + 1
        m -= 1
    return _space_run_end(i, e, n)


@register_jitable
def _space_run_end(i, e, n):
    """``\\s+(?!\\S)|\\s+`` on the whitespace run [i, e): the run, minus its last space when a
    non-space follows (that space then starts the next chunk, as in ``" world"``)."""
    if e == n or e - 1 == i:
        return e
    return e - 1


@register_jitable
def _decode_utf8(data):
    """Code points of valid UTF-8 ``data`` and the byte offset of each (plus the end)."""
    n = len(data)
    cp = np.empty(n, np.int64)
    off = np.empty(n + 1, np.int64)
    i = 0
    k = 0
    while i < n:
        b = np.int64(data[i])
        off[k] = i
        if b < 0x80:
            cp[k] = b
            i += 1
        elif b < 0xE0:
            cp[k] = ((b & 0x1F) << 6) | (np.int64(data[i + 1]) & 0x3F)
            i += 2
        elif b < 0xF0:
            cp[k] = ((b & 0x0F) << 12) | ((np.int64(data[i + 1]) & 0x3F) << 6) | (np.int64(data[i + 2]) & 0x3F)
            i += 3
        else:
            cp[k] = (((b & 0x07) << 18) | ((np.int64(data[i + 1]) & 0x3F) << 12)
                     | ((np.int64(data[i + 2]) & 0x3F) << 6) | (np.int64(data[i + 3]) & 0x3F))
            i += 4
        k += 1
    off[k] = n
    return cp, off, k


@njit(cache=CACHE, inline="always")
def scan_chunks(data, table, mode):
    """Byte offsets of the pre-tokenizer's chunks of UTF-8 ``data``: chunk c is
    ``data[bounds[c]:bounds[c + 1]]``. Gaps (characters no alternative matches) become
    chunks of their own, as in ``BPETokenizer._pretokenize``.

    Numba-IR inlined into ``count_chunks`` and ``encode_text`` (its only compiled callers): compiled
    on its own, it was linked into both and LLVM optimised it again in each; inlined, a cold start
    compiles ~0.2 CPU s less, same speed (benchmarks/README.md, "Cold start")."""
    cp, off, n = _decode_utf8(data)
    bounds = np.empty(n + 1, np.int64)
    nb = 0
    i = 0
    gap = -1
    while i < n:
        j = _gpt4_match(cp, i, n, table, 1 if mode == MODE_DIGITS else 3)
        if j < 0:  # not matched: part of a gap
            if gap < 0:
                gap = i
                bounds[nb] = off[i]
                nb += 1
            i += 1
            continue
        gap = -1
        bounds[nb] = off[i]
        nb += 1
        i = j
    bounds[nb] = off[n]
    return bounds[: nb + 1].copy()


# --------------------------------------------------------------------------- #
# The chunk cache: bytes -> ids, an open-addressing hash table in flat arrays
# --------------------------------------------------------------------------- #
_HASH_MASK = (1 << 40) - 1


class EncodeCache:
    """A chunk -> ids cache the compiled encoder reads and fills in place.

    ``slots`` (a power of two >= 2 x entries) holds entry number + 1 (0 = empty). Entry e is
    the row ``meta[e] = (hash, byte start, byte length, id start, id count)``: its bytes are
    ``data[start:start + length]`` and its ids ``ids[id start:id start + count]``. ``state`` =
    (entries, bytes used, ids used). When full it empties itself (as the dict cache does).
    Only chunks of at most ``max_chunk`` bytes are kept: long ones (a Chinese clause) rarely
    repeat."""

    max_chunk = 64

    def __init__(self, entries: int):
        entries = max(int(entries), 16)
        self.slots = np.zeros(1 << int(np.ceil(np.log2(2 * entries))), np.int64)
        self.meta = np.zeros((entries, 5), np.int64)
        self.data = np.zeros(entries * 16, np.uint8)
        self.ids = np.zeros(entries * 8, np.int64)
        self.state = np.zeros(3, np.int64)

    def arrays(self):
        return self.slots, self.meta, self.data, self.ids, self.state

    def __len__(self) -> int:
        return int(self.state[0])


@register_jitable
def _hash_bytes(data, s, e):
    h = np.int64(e - s)
    for i in range(s, e):
        h = ((h * np.int64(1000003)) ^ np.int64(data[i])) & np.int64(_HASH_MASK)  # < 2**60: never overflows
    return h


@register_jitable
def _probe(slots, meta, cdata, data, s, n, h, smask):
    """Open-addressing lookup of the chunk data[s:s + n] (hash h) in a chunk table: returns
    (entry, slot), entry -1 when absent, slot where the probe stopped (the free one to insert at).
    Shared by the encoder's chunk cache and the trainer's chunk counts (meta[e] = (hash, start,
    length, ...), the chunk's bytes at cdata[start:start + length])."""
    slot = (h ^ (h >> np.int64(17))) & smask
    while slots[slot] != 0:
        ent = slots[slot] - 1
        if meta[ent, 0] == h and meta[ent, 2] == n:
            bs = meta[ent, 1]
            same = True
            for i in range(n):
                if cdata[bs + i] != data[s + i]:
                    same = False
                    break
            if same:
                return ent, slot
        slot = (slot + 1) & smask
    return -1, slot


@njit(cache=CACHE)
def encode_text(data, table, mode, byte_ids, keys, ranks, mask, new_ids, max_chunk, slots, meta, cdata, cids, state):
    """Token ids of the UTF-8 text ``data``: pre-tokenize (``scan_chunks``), then each chunk
    from the cache or merged by ``_merge_chunk`` (and cached). Returns int64 ids."""
    bounds = scan_chunks(data, table, mode)
    n_chunks = len(bounds) - 1
    out = np.empty(len(data), np.int64)  # never more tokens than bytes
    maxlen = 1
    for c in range(n_chunks):
        maxlen = max(maxlen, bounds[c + 1] - bounds[c])
    sym = np.empty(maxlen, np.int64)
    nxt = np.empty(maxlen, np.int64)
    prv = np.empty(maxlen, np.int64)
    heap = np.empty(3 * maxlen + 3, np.int64)
    smask = len(slots) - 1
    o = 0
    for c in range(n_chunks):
        s = bounds[c]
        e = bounds[c + 1]
        n = e - s
        if n > max_chunk:  # long chunk: merge, do not cache
            for i in range(n):
                sym[i] = byte_ids[data[s + i]]
            o = K._merge_chunk(sym, nxt, prv, heap, n, keys, ranks, mask, new_ids, out, o)
            continue
        h = _hash_bytes(data, s, e)
        found, slot = _probe(slots, meta, cdata, data, s, n, h, smask)
        if found >= 0:
            st = meta[found, 3]
            for i in range(meta[found, 4]):
                out[o] = cids[st + i]
                o += 1
            continue
        for i in range(n):
            sym[i] = byte_ids[data[s + i]]
        o0 = o
        o = K._merge_chunk(sym, nxt, prv, heap, n, keys, ranks, mask, new_ids, out, o)
        n_ids = o - o0
        if state[0] >= len(meta) or state[1] + n > len(cdata) or state[2] + n_ids > len(cids):
            slots[:] = 0  # full: start again (natural text refills the frequent chunks quickly)
            state[:] = 0
            slot = (h ^ (h >> np.int64(17))) & smask
        while slots[slot] != 0:  # (again after a reset: the probe chain is gone)
            slot = (slot + 1) & smask
        ent = state[0]
        meta[ent, 0] = h
        meta[ent, 1] = state[1]
        meta[ent, 2] = n
        meta[ent, 3] = state[2]
        meta[ent, 4] = n_ids
        for i in range(n):
            cdata[state[1] + i] = data[s + i]
        for i in range(n_ids):
            cids[state[2] + i] = out[o0 + i]
        slots[slot] = ent + 1
        state[0] += 1
        state[1] += n
        state[2] += n_ids
    return out[:o].copy()


# --------------------------------------------------------------------------- #
# Training: count the distinct chunks of a text without making Python strings
# --------------------------------------------------------------------------- #
class ChunkCounts:
    """Distinct chunks and their counts, filled by ``count_chunks`` in place.

    ``slots`` (power of two) holds entry + 1; entry e is ``meta[e] = (hash, start, length,
    count)`` with its bytes at ``data[start:start + length]``, in order of first occurrence.
    ``state`` = (entries, bytes used, entries needed, bytes needed)."""

    def __init__(self, entries: int = 1 << 16, data: int = 1 << 21):
        self.slots = np.zeros(1 << int(np.ceil(np.log2(2 * entries))), np.int64)
        self.meta = np.zeros((entries, 4), np.int64)
        self.data = np.zeros(data, np.uint8)
        self.state = np.zeros(4, np.int64)

    def arrays(self):
        return self.slots, self.meta, self.data, self.state

    def grow(self) -> None:
        need_entries, need_data = int(self.state[2]), int(self.state[3])
        if need_data > len(self.data):
            data = np.zeros(max(need_data, 4 * len(self.data)), np.uint8)  # 4x: each resume rescans the rest
            data[: len(self.data)] = self.data
            self.data = data
        if need_entries > len(self.meta):
            meta = np.zeros((max(need_entries, 4 * len(self.meta)), 4), np.int64)
            meta[: len(self.meta)] = self.meta
            self.meta = meta
            self.slots = np.zeros(1 << int(np.ceil(np.log2(2 * len(meta)))), np.int64)
            _rehash_chunks(self.slots, self.meta, self.state)

    def add(self, data: np.ndarray, table: np.ndarray, mode: int) -> None:
        """Count the chunks of the UTF-8 bytes ``data``."""
        start = 0
        while True:
            start = count_chunks(data, start, table, mode, *self.arrays())
            if start < 0:
                return
            self.grow()  # full: resume at the chunk that did not fit (the scanner restarts cleanly there)


@njit(cache=CACHE)
def _rehash_chunks(slots, meta, state):
    smask = len(slots) - 1
    for e in range(state[0]):
        h = meta[e, 0]
        slot = (h ^ (h >> np.int64(17))) & smask
        while slots[slot] != 0:
            slot = (slot + 1) & smask
        slots[slot] = e + 1


@njit(cache=CACHE)
def count_chunks(data, start, table, mode, slots, meta, cdata, state):
    """Add 1 to the count of every chunk of ``data[start:]`` (new chunks get an entry). Returns
    -1 when done, or the byte offset of a chunk that did not fit (``state[2:4]`` say what is
    needed): grow and call again from there."""
    bounds = scan_chunks(data[start:], table, mode)
    smask = len(slots) - 1
    for c in range(len(bounds) - 1):
        s = start + bounds[c]
        e = start + bounds[c + 1]
        n = e - s
        h = _hash_bytes(data, s, e)
        found, slot = _probe(slots, meta, cdata, data, s, n, h, smask)
        if found >= 0:
            meta[found, 3] += 1
            continue
        if state[0] + 1 > len(meta) or 2 * (state[0] + 1) > len(slots) or state[1] + n > len(cdata):
            state[2] = state[0] + 1
            state[3] = state[1] + n
            return s
        ent = state[0]
        meta[ent, 0] = h
        meta[ent, 1] = state[1]
        meta[ent, 2] = n
        meta[ent, 3] = 1
        for i in range(n):
            cdata[state[1] + i] = data[s + i]
        slots[slot] = ent + 1
        state[0] += 1
        state[1] += n
    return -1
