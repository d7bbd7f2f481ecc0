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
