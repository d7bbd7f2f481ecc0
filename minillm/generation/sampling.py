"""Choosing the next token from a row of logits, and turning prompts into padded id arrays.

* ``temperature=0``: greedy (argmax). Otherwise logits / temperature, then
* ``top_k``: keep the k most likely tokens; ``top_p``: keep the smallest set of most likely
  tokens whose probability adds up to at least p (nucleus sampling); then sample.
* ``repetition_penalty`` > 1 makes tokens already in the context less likely (CTRL's rule:
  positive logits are divided by it, negative ones multiplied).

Batches of prompts are **left-padded** (every row's next token is at the last column) for
decoder-only models; an encoder's source sentences are right-padded (``right_pad``).
"""
from __future__ import annotations

import numpy as np

from .. import random as _random
from ..tensor import Tensor

__all__ = ["check_logits", "sample_next_token", "next_token_probs", "sample_from", "apply_repetition_penalty", "left_pad", "right_pad"]


def next_token_probs(logits: np.ndarray, temperature: float = 1.0, top_k=None, top_p=None) -> np.ndarray:
    """The distribution sampling draws from: softmax(logits / temperature) restricted to the
    top-k tokens and to the top-p nucleus, renormalised. logits (B, V) -> probs (B, V) float64."""
    logits = np.asarray(logits, dtype=np.float64)  # (B, V); float64 so tiny probabilities survive
    # Subtract each row's max *before* dividing: a tiny temperature (1e-320) then sends every
    # other logit to -inf and keeps the best one at 0 (greedy in the limit), never inf - inf = NaN.
    logits = (logits - logits.max(axis=-1, keepdims=True)) / temperature
    V = logits.shape[-1]
    if top_k is not None and top_k < V:
        kth = np.partition(logits, V - top_k, axis=-1)[:, V - top_k : V - top_k + 1]  # (B, 1) k-th largest
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))  # (B, V) softmax numerator
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-probs, axis=-1, kind="stable")  # (B, V) most likely first
        sorted_p = np.take_along_axis(probs, order, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p  # probability mass strictly before each token
        drop_sorted = before >= top_p  # the set is complete before this token (the first one is always kept)
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        probs = np.where(drop, 0.0, probs)
        probs /= probs.sum(axis=-1, keepdims=True)
    return probs


def sample_from(probs: np.ndarray, rng=None) -> np.ndarray:
    """One draw per row of ``probs`` (B, V) (rows need not be normalised) -> (B,) int64."""
    rng = _random.default_generator() if rng is None else rng
    u = rng.random((probs.shape[0], 1))  # (B, 1) uniform in [0, 1)
    cdf = np.cumsum(probs, axis=-1)  # (B, V)
    idx = (cdf < u * cdf[:, -1:]).sum(axis=-1)  # inverse CDF: first token whose cdf reaches u
    return np.minimum(idx, probs.shape[-1] - 1).astype(np.int64)


def check_logits(logits: np.ndarray, step: int) -> None:
    """Refuse NaN or +inf logits (broken weights, an overflow): every choice from them would be
    an arbitrary token, silently. -inf is a legitimate "never this token"."""
    logits = np.asarray(logits)  # (B, V); no copy for an array
    if logits.size and logits.max() < np.inf:  # one pass (the max is NaN if any is): 11 us against 64 for
        return  # the mask below at (32, 6144), ~5 % of a tiny model's batched decode step
    bad = np.isnan(logits) | np.isposinf(logits)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise FloatingPointError(
            f"generate: the model's logits at new token {step} contain {logits[row, col]} (row {row}, token {col}); "
            "check the weights for NaN/inf"
        )


def sample_next_token(logits: np.ndarray, temperature: float = 1.0, top_k=None, top_p=None, rng=None) -> np.ndarray:
    """Pick one token id per row of ``logits`` (B, V). Returns (B,) int64. ``temperature=0`` is argmax."""
    if temperature == 0:
        return np.asarray(logits).argmax(axis=-1)  # greedy
    return sample_from(next_token_probs(logits, temperature, top_k, top_p), rng)


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """CTRL's repetition penalty on the tokens marked in ``seen`` (B, V) bool. Returns (B, V)."""
    penalised = np.where(logits > 0, logits / penalty, logits * penalty)
    return np.where(seen, penalised, logits)  # (B, V)


# ----------------------------------------------------------------------------- prompts
def left_pad(prompts, pad_token_id: int = 0):
    """Token lists of different lengths -> ids (B, T) and mask (B, T), padded on the left.

    >>> left_pad([[5, 6, 7], [8]], pad_token_id=0)
    (array([[5, 6, 7], [0, 0, 8]]), array([[1, 1, 1], [0, 0, 1]]))
    """
    T = max(len(p) for p in prompts)
    ids = np.full((len(prompts), T), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(prompts), T), dtype=np.int64)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, T - len(p) :] = p
            mask[i, T - len(p) :] = 1
    return ids, mask


def right_pad(prompts, pad_token_id: int = 0):
    """Like ``left_pad`` with the padding after the tokens (an encoder's source batch).

    >>> right_pad([[5, 6, 7], [8]], pad_token_id=0)
    (array([[5, 6, 7], [8, 0, 0]]), array([[1, 1, 1], [1, 0, 0]]))
    """
    T = max(len(p) for p in prompts)
    ids = np.full((len(prompts), T), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(prompts), T), dtype=np.int64)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = p
        mask[i, : len(p)] = 1
    return ids, mask


def prepare_inputs(input_ids, attention_mask, pad_token_id, padding_side: str = "left"):
    """Prompts in any accepted form -> ids (B, T) int64, mask (B, T) bool, single (True for one 1-D prompt).

    input_ids: one prompt (list of ints, 1-D array or Tensor) or a batch (list of lists of any
    lengths, padded here on ``padding_side``; or a 2-D array with an optional ``attention_mask``).
    """
    if isinstance(input_ids, Tensor):
        input_ids = input_ids.data
    if isinstance(input_ids, np.ndarray):
        if input_ids.dtype.kind not in "iu":
            raise TypeError(f"generate: input_ids must be integer token ids, got dtype {input_ids.dtype}")
        single = input_ids.ndim == 1
        ids = input_ids[None] if single else input_ids
        if ids.ndim != 2:
            raise ValueError(f"generate: input_ids must be 1-D (one prompt) or 2-D (batch), got shape {input_ids.shape}")
        if attention_mask is None:
            mask = np.ones(ids.shape, dtype=bool)
        else:
            mask = np.asarray(attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask)
            mask = (mask[None] if single else mask).astype(bool)
            if mask.shape != ids.shape:
                raise ValueError(f"generate: attention_mask shape {mask.shape} differs from input_ids shape {ids.shape}")
    else:
        prompts = list(input_ids)
        single = not prompts or not isinstance(prompts[0], (list, tuple, np.ndarray))
        prompts = [prompts] if single else [list(p) for p in prompts]
        for p in prompts:
            for t in p:
                if not isinstance(t, (int, np.integer)) or isinstance(t, bool):
                    raise TypeError(f"generate: token ids must be ints, got {t!r} ({type(t).__name__})")
        if attention_mask is not None:
            raise ValueError("generate: pass attention_mask only with an array of input_ids; lists are padded for you")
        ids, mask = (left_pad if padding_side == "left" else right_pad)(prompts, pad_token_id)
        mask = mask.astype(bool)
    if ids.shape[0] == 0:
        raise ValueError("generate: the batch of prompts is empty")
    if ids.shape[1] == 0 or not mask.any(axis=1).all():
        raise ValueError("generate: every prompt needs at least one token")
    if padding_side == "left" and (np.diff(mask.astype(np.int8), axis=1) < 0).any():
        raise ValueError("generate: padding must be on the left (attention_mask rows like 0,0,1,1,1)")
    return ids.astype(np.int64, copy=False), mask, single
