"""Checks shared by every layer: one token-id range check, one error message.

Tokenizers (``decode``, ``id_to_token``), the data pipeline (ids a tokenizer returned),
``F.embedding`` and the models (``input_ids``) and generation (prompt ids) all ask the same
question: is every id inside ``[0, vocab_size)``? They ask it here, so a learner sees one
message shape wherever a bad id turns up::

    decode: token id 1024 at position 1 is outside the valid range [0, 1000)
    Transformer: input_ids 64 at position (0, 2) is outside the valid range [0, 64)

The error is an ``IdOutOfRangeError``, which is both an ``IndexError`` (what PyTorch raises
for a bad embedding index) and a ``ValueError`` (what tokenizers raise for a bad id), so
code catching either keeps working. Like ``_files.py``, this module sits at the bottom of
the layer diagram: it imports only NumPy.
"""
from __future__ import annotations

import numpy as np

__all__ = ["IdOutOfRangeError", "check_token_ids"]


class IdOutOfRangeError(IndexError, ValueError):
    """A token id (or index) outside ``[0, upper)``; the message names the id, where it is and the range."""


def check_token_ids(ids, vocab_size: int, where: str, name: str = "token id") -> None:
    """Raise ``IdOutOfRangeError`` unless every id in ``ids`` is in ``[0, vocab_size)``.

    ``ids``: an int, a list of ints or an integer array of any shape (an empty one passes).
    The message names the first offending id in reading order, its position (an int for 1-D
    ids, a tuple for more dims, none for a single id) and the range::

        >>> check_token_ids([7, 1024, -1], 1000, "decode")
        Traceback (most recent call last):
        ...
        minillm._checks.IdOutOfRangeError: decode: token id 1024 at position 1 is outside the valid range [0, 1000)

    The caller checks the type (integers, not floats or bools) first, with its own message;
    this function only checks the range. The common case, all ids valid, costs one
    ``min`` and one ``max``.
    """
    a = np.asarray(ids)
    if a.size == 0:
        return
    lo, hi = a.min(), a.max()
    if lo >= 0 and hi < vocab_size:
        return
    bad_at = np.flatnonzero((a < 0) | (a >= vocab_size))[0]
    bad = a.flat[bad_at]
    bad = bad.item() if isinstance(bad, np.generic) else bad  # a NumPy scalar, or a Python int too big for int64
    if a.ndim == 0:
        at = ""
    elif a.ndim == 1:
        at = f" at position {int(bad_at)}"
    else:
        at = f" at position {tuple(int(i) for i in np.unravel_index(bad_at, a.shape))}"
    raise IdOutOfRangeError(f"{where}: {name} {bad}{at} is outside the valid range [0, {vocab_size})")


def check_model_inputs(input_ids, vocab_size: int, where: str, kv_cache=None, n_layers: int | None = None):
    """The checks every causal model's ``forward`` starts with: ``(ids as int64 (B, T), start)``,
    where ``start`` is the number of tokens already in ``kv_cache`` (0 without one).

    ``input_ids``: (B, T) integer ids in ``[0, vocab_size)`` with T >= 1 (a Tensor, an array or
    nested lists); ``kv_cache``: None or one cache per layer (``n_layers`` of them). Each model
    then checks its own position limits (``max_seq_len``, 2-D positions, ...)."""
    start = 0
    if kv_cache is not None:
        if n_layers is not None and len(kv_cache) != n_layers:
            raise ValueError(f"{where}: kv_cache has {len(kv_cache)} layers, the model has {n_layers}")
        start = kv_cache[0].length
    # a Tensor carries its array in .data (an ndarray's own .data is a memoryview: not used)
    ids = input_ids if isinstance(input_ids, np.ndarray) else np.asarray(getattr(input_ids, "data", input_ids))
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{where}: input_ids must be integer token ids (e.g. int64), got dtype {ids.dtype}")
    if ids.ndim != 2:
        raise ValueError(f"{where}: input_ids must have shape (batch, seq_len), got shape {ids.shape}")
    if ids.shape[1] == 0:
        raise ValueError(f"{where}: input_ids is empty (seq_len 0)")
    check_token_ids(ids, vocab_size, where, name="input_ids")
    return ids.astype(np.int64, copy=False), start

