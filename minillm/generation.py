"""Text generation for the LLaMA2 model (Happy LLM 5.1.6 ``Transformer.generate``, 5.3/5.4 inference).

The book's ``generate`` re-runs the whole prefix through the model for every new token.
Here the same loop is written with a **KV cache**: the prompt goes through the model once
("prefill"), each layer keeps its keys and values, and every later step feeds only the one
new token, whose query attends to the cached keys. Same logits, far less work per token.

    from minillm.generation import generate, stream_generate
    new_ids = generate(model, prompt_ids, max_new_tokens=50, temperature=0)        # greedy
    new_ids = generate(model, prompt_ids, 50, temperature=0.8, top_p=0.9, seed=1)   # nucleus sampling
    for tok in stream_generate(model, prompt_ids, 200, eos_token_id=eos): print(decode([tok]), end="")

Choosing the next token from the last position's logits:
* ``temperature=0``: greedy (argmax). Otherwise logits / temperature, then
* ``top_k``: keep the k most likely tokens; ``top_p``: keep the smallest set of most likely
  tokens whose probability adds up to at least p (nucleus sampling); then sample.
* ``repetition_penalty`` > 1 makes tokens already in the context less likely (CTRL's rule:
  positive logits are divided by it, negative ones multiplied).

Batches: prompts of different lengths are **left-padded** (so every row's next token is at
the last column) and the padding is masked out of attention. Each row's RoPE positions
start at its first real token, so a padded row computes what it would compute alone.

Past ``max_seq_len`` tokens the context is cropped to the last ``max_seq_len`` tokens and
recomputed (the book's rule), so cached and uncached decoding stay identical.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np

from . import random as _random
from .autograd import no_grad
from .models.llama_decode import FusedDecoder, fused_decode_unsupported
from .tensor import Tensor

__all__ = ["generate", "stream_generate", "sample_next_token", "left_pad"]


# ----------------------------------------------------------------------------- sampling
def sample_next_token(logits: np.ndarray, temperature: float = 1.0, top_k=None, top_p=None, rng=None) -> np.ndarray:
    """Pick one token id per row of ``logits`` (B, V). Returns (B,) int64."""
    logits = np.asarray(logits, dtype=np.float64)  # (B, V); float64 so tiny probabilities survive
    if temperature == 0:
        return logits.argmax(axis=-1)  # greedy
    logits = logits / temperature
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
    rng = _random.default_generator() if rng is None else rng
    u = rng.random((probs.shape[0], 1))  # (B, 1) uniform in [0, 1)
    cdf = np.cumsum(probs, axis=-1)  # (B, V)
    idx = (cdf < u * cdf[:, -1:]).sum(axis=-1)  # inverse CDF: first token whose cdf reaches u
    return np.minimum(idx, probs.shape[-1] - 1).astype(np.int64)


def _apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
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


def _prepare(input_ids, attention_mask, pad_token_id):
    """-> ids (B, T) int64, mask (B, T) bool, single (True for one 1-D prompt)."""
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
        ids, mask = left_pad(prompts, pad_token_id)
        mask = mask.astype(bool)
    if ids.shape[1] == 0 or not mask.any(axis=1).all():
        raise ValueError("generate: every prompt needs at least one token")
    if (np.diff(mask.astype(np.int8), axis=1) < 0).any():
        raise ValueError("generate: padding must be on the left (attention_mask rows like 0,0,1,1,1)")
    return ids.astype(np.int64, copy=False), mask, single


def _check_args(max_new_tokens, temperature, top_k, top_p, repetition_penalty):
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
    if temperature is None or temperature < 0:
        raise ValueError(f"generate: temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"generate: top_k must be a positive int or None, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"generate: top_p must be in (0, 1] or None, got {top_p!r}")
    if repetition_penalty <= 0:
        raise ValueError(f"generate: repetition_penalty must be > 0, got {repetition_penalty!r}")


# ----------------------------------------------------------------------------- the loop
def _positions(mask: np.ndarray):
    """RoPE positions counted from each row's first real token; None when nothing is padded."""
    if mask.all():
        return None
    return np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # (B, T)


def _steps(
    model, ids, mask, max_new_tokens, temperature, top_k, top_p, eos_token_id, rng, repetition_penalty, use_cache, fused_decode
):
    """Yield (next_tokens (B,), active (B,) bool) once per new token; stops when every row hit EOS."""
    max_len = model.args.max_seq_len
    vocab = model.args.vocab_size
    B = ids.shape[0]
    if ids.shape[1] > max_len:  # crop an over-long prompt to its last max_len tokens
        ids, mask = ids[:, -max_len:], mask[:, -max_len:]
    seen = np.zeros((B, vocab), dtype=bool)
    if repetition_penalty != 1.0:
        rows, cols = np.nonzero(mask)
        seen[rows, ids[rows, cols]] = True
    state = {"cache": None}
    # One fused kernel call per new token instead of the layer-by-layer modules (same logits).
    decoder = FusedDecoder(model, B) if use_cache and fused_decode and fused_decode_unsupported(model) is None else None

    def run_full(ids, mask):
        """Prefill (or recompute after cropping): the whole window through the model."""
        if decoder is not None:
            return decoder.prefill(ids, attention_mask=mask, position_ids=_positions(mask))  # (B, V)
        if use_cache:
            state["cache"] = model.new_kv_cache(B)
        out = model(ids, attention_mask=mask, position_ids=_positions(mask), kv_cache=state["cache"], logits_to_keep=1)
        return out.logits.data[:, -1]  # (B, V)

    logits = run_full(ids, mask)
    active = np.ones(B, dtype=bool)  # rows that have not produced EOS yet
    for step in range(max_new_tokens):
        if repetition_penalty != 1.0:
            logits = _apply_repetition_penalty(logits, seen, repetition_penalty)
        nxt = sample_next_token(logits, temperature, top_k, top_p, rng)  # (B,)
        yield nxt, active.copy()
        if eos_token_id is not None:
            active &= nxt != eos_token_id
        if not active.any() or step == max_new_tokens - 1:
            return
        seen[np.arange(B), nxt] = True
        ids = np.concatenate([ids, nxt[:, None]], axis=1)  # (B, T) -> (B, T+1)
        mask = np.concatenate([mask, np.ones((B, 1), dtype=bool)], axis=1)
        if ids.shape[1] > max_len:  # context full: keep the last max_len tokens and recompute
            ids, mask = ids[:, -max_len:], mask[:, -max_len:]
            logits = run_full(ids, mask)
        elif decoder is not None:  # one fused kernel call for all layers
            pos = _positions(mask)
            logits = decoder.step(nxt, positions=None if pos is None else pos[:, -1], attention_mask=mask)  # (B, V)
        elif use_cache:  # one new token per row against the cache
            pos = _positions(mask)
            out = model(
                nxt[:, None], attention_mask=mask, position_ids=None if pos is None else pos[:, -1:], kv_cache=state["cache"]
            )
            logits = out.logits.data[:, -1]  # (B, 1, V) -> (B, V)
        else:  # the book's way: the whole prefix again
            logits = run_full(ids, mask)


def _run(
    model, input_ids, max_new_tokens, temperature, top_k, top_p, eos_token_id, seed, repetition_penalty, use_cache,
    attention_mask, pad_token_id, fused_decode,
):
    _check_args(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    if pad_token_id is None:
        pad_token_id = eos_token_id if eos_token_id is not None else 0
    ids, mask, single = _prepare(input_ids, attention_mask, pad_token_id)
    vocab = model.args.vocab_size
    if ids[mask].min() < 0 or ids[mask].max() >= vocab:
        bad = ids[mask][(ids[mask] < 0) | (ids[mask] >= vocab)][0]
        raise IndexError(f"generate: prompt contains token id {bad}, outside the vocabulary [0, {vocab})")
    ids = np.where(mask, ids, np.clip(ids, 0, vocab - 1))  # padding ids only need to be valid
    rng = np.random.default_rng(seed) if seed is not None else None
    args = (max_new_tokens, temperature, top_k, top_p, eos_token_id, rng, repetition_penalty, use_cache, bool(fused_decode))
    return ids, mask, single, args


def generate(
    model,
    input_ids,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    seed: int | None = None,
    repetition_penalty: float = 1.0,
    use_cache: bool = True,
    attention_mask=None,
    pad_token_id: int | None = None,
    fused_decode: bool = True,
):
    """Continue ``input_ids`` by up to ``max_new_tokens`` tokens; return only the new ones.

    input_ids: one prompt (list of ints / 1-D array) -> returns ``list[int]``; a batch
    (list of lists of any lengths, or a 2-D array with an optional left-padding
    ``attention_mask``) -> returns ``list[list[int]]``. A row stops at ``eos_token_id``
    (which is not included in its output). ``seed`` makes sampling reproducible
    (default: the library's generator, ``mi.manual_seed``). ``use_cache=False`` is the
    book's recompute-everything loop. ``fused_decode`` runs each cached step as one fused
    kernel call (``minillm.models.llama_decode.FusedDecoder``) when the model allows it;
    ``False`` runs every step through the model's modules (the readable path, same tokens).
    """
    ids, mask, single, args = _run(
        model, input_ids, max_new_tokens, temperature, top_k, top_p, eos_token_id, seed, repetition_penalty, use_cache,
        attention_mask, pad_token_id, fused_decode,
    )
    out = [[] for _ in range(ids.shape[0])]
    with _eval_mode(model), no_grad():
        for nxt, active in _steps(model, ids, mask, *args):
            for b in np.nonzero(active)[0]:
                if eos_token_id is None or nxt[b] != eos_token_id:
                    out[b].append(int(nxt[b]))
    return out[0] if single else out


def stream_generate(
    model,
    input_ids,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    seed: int | None = None,
    repetition_penalty: float = 1.0,
    use_cache: bool = True,
    fused_decode: bool = True,
) -> Iterator[int]:
    """Like ``generate`` for one prompt, but yields each new token id as soon as it exists
    (for a chat loop that prints while the model writes). Stops before EOS."""
    ids, mask, single, args = _run(
        model, input_ids, max_new_tokens, temperature, top_k, top_p, eos_token_id, seed, repetition_penalty, use_cache,
        None, None, fused_decode,
    )
    if ids.shape[0] != 1:
        raise ValueError(f"stream_generate: expected one prompt, got a batch of {ids.shape[0]}; use generate() for batches")
    with _eval_mode(model):
        for nxt, _active in _with_no_grad(_steps(model, ids, mask, *args)):
            tok = int(nxt[0])
            if eos_token_id is not None and tok == eos_token_id:
                return
            yield tok


@contextmanager
def _eval_mode(model):
    """model.eval() inside, the model's own train/eval mode restored after (also on errors)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _with_no_grad(gen):
    """Run each step of a generator inside no_grad (a ``with`` around ``yield`` would leak
    no-grad mode into the caller's code between tokens)."""
    while True:
        with no_grad():
            try:
                item = next(gen)
            except StopIteration:
                return
        yield item
