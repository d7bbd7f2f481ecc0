"""Happy LLM 5.2.3–5.2.4 — the two BPE hot loops, compiled with Numba.

The readable versions of these algorithms live in ``bpe.py`` (``get_stats``,
``merge``, ``train_naive``, ``encode_naive``); the tests check that these kernels
give exactly the same merges and ids.  They exist because measurement showed the
pure-Python loops are too slow for real corpora:

* training spends its time re-scanning the words that contain the pair just
  merged (Chinese clauses are long and contain many pairs), and
* encoding spends its time merging chunks that are not in the cache yet.

Everything here works on flat NumPy arrays (no Python objects), so the same
code runs compiled, or as plain Python under ``NUMBA_DISABLE_JIT=1`` or on the
"numpy" kernel backend (``minillm.set_kernels("numpy")`` / ``MINILLM_KERNELS=numpy``,
the library's one switch; see :func:`kernel`).  The entry points are
``@njit``; the helpers they call are ``@register_jitable``, which compiles them
into a compiled caller but leaves them plain Python for a Python caller, so
the plain run compiles nothing.  ``build_merge_table`` is plain NumPy: it runs
once per tokenizer, where compiling it cost more than it saves.  All arithmetic is done in int64 on purpose,
so that the plain-Python run (NumPy scalars, NEP 50 rules) never overflows
int32 where the compiled run would not.

A *pair key* packs a pair of token ids into one int64: ``(a << 32) | b``.  Keys
sort like the tuples ``(a, b)``, which is what makes tie-breaking deterministic.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import register_jitable

from .. import kernels as _backend
from ..kernels._cache import CACHE  # cache=True, or False where no folder is writable (kernels/_cache.py)

__all__ = [
    "pair_key",
    "initial_pair_stats",
    "merge_pair_in_words",
    "build_merge_table",
    "bpe_encode_chunks",
    "kernel",
    "use_numba",
]

_LOW32 = 0xFFFFFFFF


def use_numba() -> bool:
    """True on the "numba" kernel backend (``minillm.get_kernels()``), False on "numpy"."""
    return _backend.get_kernels() == "numba"


def kernel(fn):
    """The compiled kernel on the "numba" backend, its plain-Python body on "numpy"."""
    if use_numba():
        return fn
    return getattr(fn, "py_func", fn)  # under NUMBA_DISABLE_JIT=1, @njit returned the plain function


@register_jitable
def pair_key(a, b):
    """Pack a pair of ids into one sortable int64: ``pair_key(3, 7) == (3 << 32) | 7``."""
    return (np.int64(a) << np.int64(32)) | np.int64(b)


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #
@njit(cache=CACHE)
def initial_pair_stats(ids, starts, lens, freqs):
    """Count every adjacent pair once, weighted by word frequency.

    ``ids[starts[w] : starts[w] + lens[w]]`` are the token ids of unique word
    ``w``, which occurs ``freqs[w]`` times in the corpus.

    Returns ``(keys, counts, offsets, words)``: the distinct pair keys in sorted
    order, their total counts, and for pair ``k`` the sorted distinct words that
    contain it, ``words[offsets[k]:offsets[k + 1]]`` (the pair -> words index).

    Example: words ``[1, 1, 2]`` (freq 3) and ``[1, 2]`` (freq 1) give the pair
    (1, 1) count 3 in word 0, and (1, 2) count 4 in words 0 and 1.
    """
    n_words = len(starts)
    total = 0
    for w in range(n_words):
        if lens[w] > 1:
            total += lens[w] - 1
    keys = np.empty(total, np.int64)
    owner = np.empty(total, np.int64)
    k = 0
    for w in range(n_words):
        s = starts[w]
        for i in range(lens[w] - 1):
            keys[k] = pair_key(ids[s + i], ids[s + i + 1])
            owner[k] = w
            k += 1
    # A stable sort keeps the words of one key in increasing order.
    order = np.argsort(keys, kind="mergesort")
    ukeys = np.empty(total, np.int64)
    counts = np.zeros(total, np.int64)
    offsets = np.zeros(total + 1, np.int64)
    words = np.empty(total, np.int64)
    nu = -1
    nw = 0
    last_key = np.int64(-1)
    last_word = np.int64(-1)
    for t in range(total):
        idx = order[t]
        key = keys[idx]
        w = owner[idx]
        if key != last_key:
            nu += 1
            ukeys[nu] = key
            offsets[nu] = nw
            last_key = key
            last_word = np.int64(-1)
        counts[nu] += freqs[w]
        if w != last_word:
            words[nw] = w
            nw += 1
            last_word = w
    nu += 1
    offsets[nu] = nw
    return ukeys[:nu].copy(), counts[:nu].copy(), offsets[: nu + 1].copy(), words[:nw].copy()


@register_jitable
def _merge_word(ids, s, n, a, b, new_id, changes):
    """Replace every ``(a, b)`` by ``new_id`` in the word ``ids[s:s + n]``, compacting it
    in place, left to right.  Returns ``(new length, c)``: the word lost one token per
    occurrence, and ``changes[:c]`` are the pairs around the occurrences, each as
    ``(pair that lost an occurrence, pair that gained one)``: with ``p`` the (already
    merged) token before an occurrence and ``nx`` the token after it, ``(p, a) -> (p, new_id)``
    and ``(b, nx) -> (new_id, nx)``.  ``changes`` needs room for ``n`` rows.

    The one copy of the merge step, shared by ``merge_pair_in_words`` and ``train_step``.
    """
    i = 0
    j = 0  # write position: the word is compacted in place (j <= i always)
    c = 0
    while i < n:
        if i < n - 1 and ids[s + i] == a and ids[s + i + 1] == b:
            if j > 0:
                p = ids[s + j - 1]  # the token before, possibly just merged
                changes[c, 0] = pair_key(p, a)
                changes[c, 1] = pair_key(p, new_id)
                c += 1
            if i + 2 < n:
                nx = ids[s + i + 2]  # still the old token: we only wrote up to j
                changes[c, 0] = pair_key(b, nx)
                changes[c, 1] = pair_key(new_id, nx)
                c += 1
            ids[s + j] = new_id
            j += 1
            i += 2
        else:
            ids[s + j] = ids[s + i]
            j += 1
            i += 1
    return j, c


@njit(cache=CACHE)
def merge_pair_in_words(ids, starts, lens, freqs, words, a, b, new_id):
    """Replace every ``(a, b)`` by ``new_id`` inside ``words`` (in place) and
    report how the pair counts change.  This is the incremental step of training:
    only the words that contain the merged pair are touched.

    For each occurrence, with ``p`` the (already merged) token before it and
    ``n`` the token after it, the counts change by (times the word frequency)::

        (a, b) -1     (p, a) -1  (p, new) +1     (b, n) -1  (new, n) +1

    Worked example: merging (a, b) -> Z in ``a b a b`` gives ``Z Z``: the
    changes sum to (a, b) -2, (b, a) -1, (Z, a) +1 -1 = 0, (Z, Z) +1, which is
    exactly the difference between the pair counts before and after.

    Words that no longer contain the pair (stale index entries) are left
    unchanged.  ``lens`` is updated in place.

    Returns ``(keys, deltas, new_keys, new_offsets, new_words)``: the summed
    count change of every pair touched, and for every pair that gained
    occurrences (they all contain ``new_id``) the sorted words where it now occurs.
    """
    total = 0
    maxlen = 1
    for t in range(len(words)):
        total += lens[words[t]]
        maxlen = max(maxlen, lens[words[t]])
    cap = 3 * total + 8  # an occurrence covers 2 tokens and makes at most 5 changes
    ch_key = np.empty(cap, np.int64)
    ch_delta = np.empty(cap, np.int64)
    ch_word = np.empty(cap, np.int64)  # -1 for a decrease, the word for an increase
    changes = np.empty((maxlen, 2), np.int64)  # one word's (old pair, new pair) changes
    m = 0
    merged = pair_key(a, b)
    for t in range(len(words)):
        w = words[t]
        f = freqs[w]
        n, n_changes = _merge_word(ids, starts[w], lens[w], a, b, new_id, changes)
        for _ in range(lens[w] - n):  # each occurrence removed one token
            ch_key[m] = merged
            ch_delta[m] = -f
            ch_word[m] = -1
            m += 1
        for c in range(n_changes):
            ch_key[m] = changes[c, 0]
            ch_delta[m] = -f
            ch_word[m] = -1
            ch_key[m + 1] = changes[c, 1]
            ch_delta[m + 1] = f
            ch_word[m + 1] = w
            m += 2
        lens[w] = n

    # Sum the changes per pair; stable sort keeps each pair's words in order.
    order = np.argsort(ch_key[:m], kind="mergesort")
    ukeys = np.empty(m, np.int64)
    udelta = np.zeros(m, np.int64)
    nkeys = np.empty(m, np.int64)
    noffsets = np.zeros(m + 1, np.int64)
    nwords = np.empty(m, np.int64)
    nu = -1
    nn = -1
    nw = 0
    last_key = np.int64(-1)
    last_nkey = np.int64(-1)
    last_word = np.int64(-1)
    for t in range(m):
        idx = order[t]
        key = ch_key[idx]
        if key != last_key:
            nu += 1
            ukeys[nu] = key
            last_key = key
        udelta[nu] += ch_delta[idx]
        w = ch_word[idx]
        if w >= 0:
            if key != last_nkey:
                nn += 1
                nkeys[nn] = key
                noffsets[nn] = nw
                last_nkey = key
                last_word = np.int64(-1)
            if w != last_word:
                nwords[nw] = w
                nw += 1
                last_word = w
    nu += 1
    nn += 1
    noffsets[nn] = nw
    return (
        ukeys[:nu].copy(),
        udelta[:nu].copy(),
        nkeys[:nn].copy(),
        noffsets[: nn + 1].copy(),
        nwords[:nw].copy(),
    )


# --------------------------------------------------------------------------- #
# Encoding
# --------------------------------------------------------------------------- #
@register_jitable
def _slot(a, b, mask):
    # Mix both ids (no int64 overflow for ids < 2**24), then keep the low bits.
    h = np.int64(a) * np.int64(0x9E3779B1) + np.int64(b) * np.int64(0x85EBCA77)
    h = h ^ (h >> np.int64(15))
    return h & mask


def build_merge_table(left, right, new_ids):
    """An open-addressing hash table ``(a, b) -> (rank, new id)`` in three arrays.

    ``rank`` is the position in the merge list (lower merges first).  Returns
    ``(keys, ranks, mask)``; ``keys == -1`` marks an empty slot.  The new id of
    rank ``r`` is ``new_ids[r]``.  A pair listed twice keeps its first (lowest) rank.

    Plain NumPy, not a kernel: it runs once per tokenizer, and compiling it cost more
    (~0.5 CPU s on a cold start) than building a 50,000-merge table this way (~15 ms).
    Linear probing, inserted a round at a time: every pair not yet placed looks at
    its next slot, and of the pairs that look at the same empty slot the lowest rank
    takes it.  A pair only moves past a slot that is taken, so every slot between its
    home and its place stays full and ``_lookup`` (probe from the home slot until the
    key or an empty slot) finds it, as after one-by-one insertion.
    """
    left = np.asarray(left, np.int64)
    right = np.asarray(right, np.int64)
    n = len(left)
    cap = 16
    while cap < 2 * n + 2:
        cap *= 2
    mask = np.int64(cap - 1)
    keys = np.full(cap, -1, np.int64)
    ranks = np.full(cap, -1, np.int64)
    pair = pair_key(left, right)  # (n,) the helpers work on arrays too
    _, first = np.unique(pair, return_index=True)
    todo = np.sort(first)  # ranks still to place, each distinct pair once, lowest first
    h = _slot(left[todo], right[todo], mask)  # the slot each looks at
    while len(todo):
        free = np.flatnonzero(keys[h] == -1)
        slots, winner = np.unique(h[free], return_index=True)  # todo is in rank order: the first is the lowest
        placed = free[winner]
        keys[slots] = pair[todo[placed]]
        ranks[slots] = todo[placed]
        left_over = np.ones(len(todo), bool)
        left_over[placed] = False
        todo = todo[left_over]
        h = (h[left_over] + 1) & mask
    return keys, ranks, mask


@register_jitable
def _lookup(keys, ranks, mask, a, b):
    """Rank of merging ``(a, b)``, or -1 when it is not a merge."""
    key = pair_key(a, b)
    h = _slot(a, b, mask)
    while True:
        k = keys[h]
        if k == key:
            return ranks[h]
        if k == -1:
            return np.int64(-1)
        h = (h + 1) & mask


@register_jitable
def _heap_push(heap, size, item):
    i = size
    heap[i] = item
    while i > 0:
        parent = (i - 1) >> 1
        if heap[parent] <= heap[i]:
            break
        tmp = heap[parent]
        heap[parent] = heap[i]
        heap[i] = tmp
        i = parent
    return size + 1


@register_jitable
def _heap_pop(heap, size):
    top = heap[0]
    size -= 1
    heap[0] = heap[size]
    _sift_down(heap, size, 0)
    return top, size


@register_jitable
def _sift_down(heap, size, i):
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        child = left
        if left + 1 < size and heap[left + 1] < heap[left]:
            child = left + 1
        if heap[i] <= heap[child]:
            break
        tmp = heap[child]
        heap[child] = heap[i]
        heap[i] = tmp
        i = child


@register_jitable
def _merge_chunk(sym, nxt, prv, heap, n, keys, ranks, mask, new_ids, out, o):
    """BPE-merge the ``n`` byte ids in ``sym[:n]`` (lowest rank first) and write the
    resulting ids to ``out[o:]``; returns the new write position.

    A min-heap of ``(rank, position)`` picks the next merge and a doubly linked list
    removes the right token of each merged pair, so a chunk of n bytes costs O(n log n)
    (the plain loop in ``encode_naive`` is O(n^2)). Stale heap entries are skipped when
    popped, as in Hugging Face ``tokenizers`` (``Word::merge_all``), which this reproduces
    exactly. ``nxt``, ``prv`` (n) and ``heap`` (3n + 3) are scratch space.
    """
    if n <= 1:
        for i in range(n):
            out[o] = sym[i]
            o += 1
        return o
    for i in range(n):
        prv[i] = i - 1
        nxt[i] = i + 1
    nxt[n - 1] = -1
    size = 0
    for i in range(n - 1):
        r = _lookup(keys, ranks, mask, sym[i], sym[i + 1])
        if r >= 0:
            heap[size] = (r << np.int64(32)) | np.int64(i)
            size += 1
    for i in range(size // 2 - 1, -1, -1):  # heapify in O(n): the entries are distinct, so the pops are the same
        _sift_down(heap, size, i)
    while size > 0:
        top, size = _heap_pop(heap, size)
        r = top >> np.int64(32)
        i = top & np.int64(_LOW32)
        if sym[i] < 0 or nxt[i] < 0:
            continue  # the left token was merged away, or has no right neighbour
        j = nxt[i]
        cur = _lookup(keys, ranks, mask, sym[i], sym[j])
        if cur < 0 or new_ids[cur] != new_ids[r]:
            continue  # stale: this pair changed since the entry was pushed
        sym[i] = new_ids[r]
        sym[j] = -1
        k = nxt[j]
        nxt[i] = k
        if k >= 0:
            prv[k] = i
            r2 = _lookup(keys, ranks, mask, sym[i], sym[k])
            if r2 >= 0:
                size = _heap_push(heap, size, (r2 << np.int64(32)) | np.int64(i))
        p = prv[i]
        if p >= 0:
            r2 = _lookup(keys, ranks, mask, sym[p], sym[i])
            if r2 >= 0:
                size = _heap_push(heap, size, (r2 << np.int64(32)) | np.int64(p))
    i = 0  # position 0 is never removed: merges remove the right token
    while i >= 0:
        out[o] = sym[i]
        o += 1
        i = nxt[i]
    return o


@njit(cache=CACHE)
def bpe_encode_chunks(sym_in, offsets, keys, ranks, mask, new_ids):
    """Apply the merges, lowest rank first, to each chunk independently (``_merge_chunk``).

    ``sym_in[offsets[c]:offsets[c + 1]]`` are the byte ids of chunk ``c``.
    Returns ``(out, out_offsets)`` in the same layout as the input.
    """
    n_chunks = len(offsets) - 1
    out = np.empty(len(sym_in), np.int64)
    out_offsets = np.zeros(n_chunks + 1, np.int64)
    maxlen = 1
    for c in range(n_chunks):
        maxlen = max(maxlen, offsets[c + 1] - offsets[c])
    sym = np.empty(maxlen, np.int64)
    nxt = np.empty(maxlen, np.int64)
    prv = np.empty(maxlen, np.int64)
    heap = np.empty(3 * maxlen + 3, np.int64)
    o = 0
    for c in range(n_chunks):
        s = offsets[c]
        n = offsets[c + 1] - s
        out_offsets[c] = o
        for i in range(n):
            sym[i] = sym_in[s + i]
        o = _merge_chunk(sym, nxt, prv, heap, n, keys, ranks, mask, new_ids, out, o)
    out_offsets[n_chunks] = o
    return out[:o].copy(), out_offsets


# --------------------------------------------------------------------------- #
# Training, with the whole merge step compiled
# --------------------------------------------------------------------------- #
# ``initial_pair_stats`` + ``merge_pair_in_words`` above hand their results back to Python,
# which keeps the counts in a dict and the pair -> words index as NumPy arrays (readable, and
# the twin of what follows). Measured on 5 MB that costs ~900,000 dict updates and a sort per
# merge. Here the same state lives in flat arrays that the kernels update in place:
#
#   slots  (pow2,)  open-addressing table pair key -> pair number + 1 (0 = empty)
#   pairs  (P, 6)   per pair: key, count, head of its word list, last word appended, flag
#                   (1 = merged or banned: never popped again), the last merge it gained in
#   where  (W, 2)   linked lists of words: (word, next entry or -1); a word may appear twice
#                   in a list (merging it again then finds nothing: harmless)
#   heap   (Hc, 2)  (count, key); the largest count, then the smallest key, on top. Lazy, as
#                   in ``BPETokenizer.train``: a popped entry whose count is out of date goes
#                   back with its real count.
#   meta   (8,)     pairs used, where entries used, heap size, next word to index, merges done,
#                   and the sizes of pairs / where / heap the refused call needed
#
# When an array is too small a kernel records the sizes it needs, returns -2 before changing
# anything, and Python grows what is short (``bpe._TrainState.grow``) and calls again.
_P_KEY, _P_COUNT, _P_HEAD, _P_LAST, _P_FLAG, _P_STAMP = 0, 1, 2, 3, 4, 5


@register_jitable
def _pair_slot(slots, pairs, key):
    """The slot of ``key``: where it is, or the empty slot where it would go."""
    mask = np.int64(len(slots) - 1)
    h = _slot(key >> np.int64(32), key & np.int64(_LOW32), mask)
    while slots[h] != 0 and pairs[slots[h] - 1, _P_KEY] != key:
        h = (h + 1) & mask
    return h


@register_jitable
def _pair_add(slots, pairs, meta, key):
    """Number of pair ``key``, added with count 0 if new (the caller made sure there is room)."""
    h = _pair_slot(slots, pairs, key)
    if slots[h] != 0:
        return slots[h] - 1
    p = meta[0]
    meta[0] += 1
    pairs[p, _P_KEY] = key
    pairs[p, _P_COUNT] = 0
    pairs[p, _P_HEAD] = -1
    pairs[p, _P_LAST] = -1
    pairs[p, _P_FLAG] = 0
    pairs[p, _P_STAMP] = -1
    slots[h] = p + 1
    return p


@register_jitable
def _where_add(pairs, where, meta, p, w):
    """Append word ``w`` to pair ``p``'s list unless it was the last one appended."""
    if pairs[p, _P_LAST] != w:
        e = meta[1]
        meta[1] += 1
        where[e, 0] = w
        where[e, 1] = pairs[p, _P_HEAD]
        pairs[p, _P_HEAD] = e
        pairs[p, _P_LAST] = w


@register_jitable
def _heap_before(heap, i, j):
    """Entry i pops before entry j: larger count, then smaller key."""
    return heap[i, 0] > heap[j, 0] or (heap[i, 0] == heap[j, 0] and heap[i, 1] < heap[j, 1])


@register_jitable
def _heap_swap(heap, i, j):
    for c in range(2):
        t = heap[i, c]
        heap[i, c] = heap[j, c]
        heap[j, c] = t


@register_jitable
def _max_sift_down(heap, size, i):
    while True:
        child = 2 * i + 1
        if child >= size:
            return
        if child + 1 < size and _heap_before(heap, child + 1, child):
            child += 1
        if not _heap_before(heap, child, i):
            return
        _heap_swap(heap, i, child)
        i = child


@register_jitable
def _max_push(heap, meta, count, key):
    i = meta[2]
    meta[2] += 1
    heap[i, 0] = count
    heap[i, 1] = key
    while i > 0:
        parent = (i - 1) >> 1
        if not _heap_before(heap, i, parent):
            break
        _heap_swap(heap, i, parent)
        i = parent


@register_jitable
def _refuse(meta, n_pairs, n_where, n_heap):
    """Record the array sizes a call needs and return -2 (grow, then call again)."""
    meta[5] = n_pairs
    meta[6] = n_where
    meta[7] = n_heap
    return -2


@njit(cache=CACHE)
def rehash_pairs(slots, pairs, meta):
    """Fill an empty (larger) ``slots`` from the pairs (after ``grow_train_state``)."""
    for p in range(meta[0]):
        slots[_pair_slot(slots, pairs, pairs[p, _P_KEY])] = p + 1


@njit(cache=CACHE)
def train_init(ids, starts, lens, freqs, slots, pairs, where, heap, meta, min_frequency):
    """Count every adjacent pair (weighted by word frequency), index pair -> words, and heap
    the pairs counted at least ``min_frequency`` times. Resumable: returns -2 when an array is
    full (``meta[3]`` is the next word), 0 when done. Same counts as ``initial_pair_stats``."""
    for w in range(meta[3], len(starts)):
        n = lens[w]
        if meta[0] + n > len(pairs) or meta[1] + n > len(where) or 2 * meta[0] + 2 * n > len(slots):
            return _refuse(meta, meta[0] + n, meta[1] + n, 0)
        s = starts[w]
        for i in range(n - 1):
            p = _pair_add(slots, pairs, meta, pair_key(ids[s + i], ids[s + i + 1]))
            pairs[p, _P_COUNT] += freqs[w]
            _where_add(pairs, where, meta, p, w)
        meta[3] = w + 1
    if len(heap) < meta[0]:
        return _refuse(meta, 0, 0, meta[0])
    meta[2] = 0
    for p in range(meta[0]):
        if pairs[p, _P_COUNT] >= min_frequency:
            heap[meta[2], 0] = pairs[p, _P_COUNT]
            heap[meta[2], 1] = pairs[p, _P_KEY]
            meta[2] += 1
    for i in range(meta[2] // 2 - 1, -1, -1):
        _max_sift_down(heap, meta[2], i)
    return 0


@njit(cache=CACHE)
def train_step(ids, starts, lens, freqs, slots, pairs, where, heap, meta, min_frequency, merge_key, new_id, ban_key):
    """One step of training: mark ``ban_key`` (>= 0) as never to be merged; merge ``merge_key``
    (>= 0) into ``new_id`` in every word that holds it, updating the counts, the index and the
    heap as ``merge_pair_in_words`` describes; then return the key of the next pair to merge
    (the most frequent not merged or banned, ties to the smaller key), or -1 when no pair has
    ``min_frequency`` occurrences, or -2 (nothing changed) when an array must grow first."""
    if merge_key >= 0:
        pm = slots[_pair_slot(slots, pairs, merge_key)] - 1
        a = merge_key >> np.int64(32)
        b = merge_key & np.int64(_LOW32)
        bound = 0  # 2 x the occurrences: a bound on the new pairs, index entries and pushes
        e = pairs[pm, _P_HEAD]
        while e >= 0:
            w = where[e, 0]
            s = starts[w]
            i = 0
            while i < lens[w] - 1:
                if ids[s + i] == a and ids[s + i + 1] == b:
                    bound += 2
                    i += 2
                else:
                    i += 1
            e = where[e, 1]
        if (meta[0] + bound > len(pairs) or meta[1] + bound > len(where) or meta[2] + bound > len(heap)
                or 2 * (meta[0] + bound) > len(slots)):
            return _refuse(meta, meta[0] + bound, meta[1] + bound, meta[2] + bound)
        pairs[pm, _P_FLAG] = 1
        meta[4] += 1
        stamp = meta[4]
        gained = np.empty(bound + 1, np.int64)  # the pairs that gained occurrences, each once
        n_gained = 0
        changes = np.empty((bound + 1, 2), np.int64)  # one word's changes (_merge_word): at most 2 per occurrence
        e = pairs[pm, _P_HEAD]
        pairs[pm, _P_HEAD] = -1  # the list is used up (where.pop(key))
        pairs[pm, _P_LAST] = -1
        while e >= 0:
            w = where[e, 0]
            e = where[e, 1]
            f = freqs[w]
            n, n_changes = _merge_word(ids, starts[w], lens[w], a, b, new_id, changes)
            pairs[pm, _P_COUNT] -= f * (lens[w] - n)  # each occurrence removed one token
            lens[w] = n
            for c in range(n_changes):
                pairs[_pair_add(slots, pairs, meta, changes[c, 0]), _P_COUNT] -= f
                q = _pair_add(slots, pairs, meta, changes[c, 1])
                pairs[q, _P_COUNT] += f
                _where_add(pairs, where, meta, q, w)
                if pairs[q, _P_STAMP] != stamp:
                    pairs[q, _P_STAMP] = stamp
                    gained[n_gained] = q
                    n_gained += 1
        for t in range(n_gained):  # each pair that gained, once, with its final count
            q = gained[t]
            if pairs[q, _P_COUNT] >= min_frequency:
                _max_push(heap, meta, pairs[q, _P_COUNT], pairs[q, _P_KEY])
    if ban_key >= 0:
        pairs[slots[_pair_slot(slots, pairs, ban_key)] - 1, _P_FLAG] = 1
    while meta[2] > 0:  # pop the best up-to-date pair
        count = heap[0, 0]
        key = heap[0, 1]
        meta[2] -= 1
        heap[0, 0] = heap[meta[2], 0]
        heap[0, 1] = heap[meta[2], 1]
        _max_sift_down(heap, meta[2], 0)
        p = slots[_pair_slot(slots, pairs, key)] - 1
        real = pairs[p, _P_COUNT]
        if real != count:  # stale entry: counts changed since it was pushed
            if real >= min_frequency:
                _max_push(heap, meta, real, key)
            continue
        if pairs[p, _P_FLAG] != 0:
            continue
        return key
    return -1
