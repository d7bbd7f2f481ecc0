"""The token-by-token loop (greedy and sampling) and the two kinds of model it drives.

The book's ``generate`` (5.1.6) re-runs the whole prefix through the model for every new
token. Here the loop talks to a *runner* that hides how a model is fed:

* ``CausalLMRunner`` (decoder-only, LLaMA2): the prompt goes through the model once
  ("prefill"), each layer keeps its keys and values in a ``KVCache``, and every later step
  feeds only the new token. Past ``max_seq_len`` the context is cropped to the last
  ``max_seq_len`` tokens and recomputed (the book's rule), so cached and uncached decoding
  give the same tokens. With ``fused_decode`` each step is one fused kernel call
  (``fused.FusedDecoder``) once the kernel has been checked against the modules on the prompt.
* ``Seq2SeqRunner`` (encoder-decoder, ch.2 Transformer): the source is encoded once; the
  decoder starts from ``decoder_start_token_id`` and is fed one target token per step.

Both expose ``prefill() -> logits (B, V)``, ``step(next_tokens (B,)) -> logits (B, V)`` and
``reorder(index)`` (beam search), so ``sample_loop`` here and ``beam.beam_search`` work
for every model.

An encoder-decoder model follows this protocol (the ch.2 Transformer does)::

    model.is_encoder_decoder = True
    memory = model.encode(src_ids, src_mask)          # (B, S) ints, (B, S) 1/0 or None -> (B, S, C)
    cache = model.new_kv_cache(batch_size, max_len)   # one nn.KVCache per decoder layer
    logits = model.decode(tgt_ids, memory, src_mask, kv_cache=cache)   # new tokens (B, T) -> (B, T, V)
    model.config.max_seq_len                          # longest target
"""
from __future__ import annotations

import warnings
from typing import Iterator

import numpy as np

from .config import GenerationConfig
from .fused import FusedDecoder, fused_decode_unsupported
from .sampling import apply_repetition_penalty, check_logits, sample_next_token

__all__ = ["CausalLMRunner", "Seq2SeqRunner", "sample_loop", "model_config", "is_encoder_decoder"]


def model_config(model):
    """The model's config object: ``model.config`` (HF's name) or ``model.args`` (the book's LLaMA)."""
    for name in ("config", "args"):
        cfg = getattr(model, name, None)
        if cfg is not None and hasattr(cfg, "max_seq_len"):
            return cfg
    raise TypeError(f"generate: {type(model).__name__} has no config with max_seq_len (model.config or model.args)")


def is_encoder_decoder(model) -> bool:
    return bool(getattr(model, "is_encoder_decoder", False))


def positions(mask: np.ndarray):
    """RoPE positions counted from each row's first real token; None when nothing is padded."""
    if mask.all():
        return None
    return np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # (B, T)


class CausalLMRunner:
    """Feeds a decoder-only model its prompt, then one token per row per step.

    ids, mask: the left-padded prompts (B, T) and their mask (bool). ``config.use_cache``
    and ``config.fused_decode`` choose the path (all paths give the same tokens).
    """

    def __init__(self, model, ids: np.ndarray, mask: np.ndarray, config: GenerationConfig):
        self.model = model
        self.max_len = model_config(model).max_seq_len
        self.use_cache = config.use_cache
        self.ids, self.mask = ids[:, -self.max_len :], mask[:, -self.max_len :]  # an over-long prompt keeps its last max_len tokens
        self.cache = None
        self.decoder = None
        self._verified = False
        if config.use_cache and config.fused_decode and fused_decode_unsupported(model) is None:
            self.decoder = FusedDecoder(model, ids.shape[0])

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]

    def prefill(self) -> np.ndarray:
        return self._run_full()

    def _run_full(self) -> np.ndarray:
        """The whole window through the model (the prompt, or the context after cropping)."""
        ids, mask, pos = self.ids, self.mask, positions(self.mask)
        if self.decoder is not None:
            if self._verified:
                return self.decoder.prefill(ids, attention_mask=mask, position_ids=pos)
            # First use: compare the kernel with the modules on the last prompt token.
            logits, reason = self.decoder.prefill(ids, attention_mask=mask, position_ids=pos, verify=True)
            self._verified = True
            if reason is not None:
                warnings.warn(reason, RuntimeWarning, stacklevel=5)
                self.cache, self.decoder = self.decoder.kv_cache, None  # go on with the modules (the cache holds their keys)
            return logits
        if self.use_cache:
            self.cache = self.model.new_kv_cache(self.batch_size)
        out = self.model(ids, attention_mask=mask, position_ids=pos, kv_cache=self.cache, logits_to_keep=1)
        return out.logits.data[:, -1]  # (B, 1, V) -> (B, V)

    def step(self, nxt: np.ndarray) -> np.ndarray:
        """Append one token per row (B,) and return the logits for the token after it (B, V)."""
        B = self.batch_size
        self.ids = np.concatenate([self.ids, nxt[:, None]], axis=1)  # (B, T) -> (B, T+1)
        self.mask = np.concatenate([self.mask, np.ones((B, 1), dtype=bool)], axis=1)
        if self.ids.shape[1] > self.max_len:  # context full: keep the last max_len tokens and recompute
            self.ids, self.mask = self.ids[:, -self.max_len :], self.mask[:, -self.max_len :]
            return self._run_full()
        pos = positions(self.mask)
        if self.decoder is not None:  # one fused kernel call for all layers
            return self.decoder.step(nxt, positions=None if pos is None else pos[:, -1], attention_mask=self.mask)  # (B, V)
        if self.use_cache:  # one new token per row against the cache
            out = self.model(nxt[:, None], attention_mask=self.mask, position_ids=None if pos is None else pos[:, -1:], kv_cache=self.cache)
            return out.logits.data[:, -1]  # (B, 1, V) -> (B, V)
        return self._run_full()  # the book's way: the whole prefix again

    def reorder(self, index: np.ndarray) -> None:
        """Row i continues row index[i] (beam search)."""
        self.ids, self.mask = self.ids[index], self.mask[index]
        caches = self.decoder.kv_cache if self.decoder is not None else self.cache
        for c in caches or ():
            c.reorder(index)


class Seq2SeqRunner:
    """Encodes the source once, then feeds the decoder one target token per row per step.

    src_ids (B, S), src_mask (B, S) bool; the target starts with ``decoder_start_token_id``.
    """

    def __init__(self, model, src_ids: np.ndarray, src_mask: np.ndarray, config: GenerationConfig):
        if config.decoder_start_token_id is None:
            raise ValueError("generate: an encoder-decoder model needs GenerationConfig.decoder_start_token_id (the first target token)")
        self.model = model
        self.max_len = model_config(model).max_seq_len
        self.use_cache = config.use_cache
        self.src_mask = None if src_mask.all() else src_mask.astype(np.int64)  # (B, S) 1/0, None when nothing is padded
        self.memory = model.encode(src_ids, self.src_mask)  # (B, S, C), computed once
        B = src_ids.shape[0]
        self.tgt = np.full((B, 1), config.decoder_start_token_id, dtype=np.int64)  # (B, 1)
        self.cache = model.new_kv_cache(B, self.max_len) if config.use_cache else None

    @property
    def batch_size(self) -> int:
        return self.tgt.shape[0]

    def _decode(self, tgt):
        logits = self.model.decode(tgt, self.memory, self.src_mask, kv_cache=self.cache)  # (B, T, V)
        return np.asarray(getattr(logits, "data", logits))[:, -1]  # (B, V)

    def prefill(self) -> np.ndarray:
        return self._decode(self.tgt)

    def step(self, nxt: np.ndarray) -> np.ndarray:
        self.tgt = np.concatenate([self.tgt, nxt[:, None]], axis=1)  # (B, T) -> (B, T+1)
        return self._decode(nxt[:, None] if self.use_cache else self.tgt)

    def reorder(self, index: np.ndarray) -> None:
        self.tgt = self.tgt[index]
        self.memory = self.memory[index]  # beams of one source share its memory; kept general anyway
        if self.src_mask is not None:
            self.src_mask = self.src_mask[index]
        for c in self.cache or ():
            c.reorder(index)


def initial_seen(context_ids: np.ndarray, context_mask: np.ndarray, vocab: int) -> np.ndarray:
    """(B, V) bool: the tokens each row's context already holds (for the repetition penalty)."""
    seen = np.zeros((context_ids.shape[0], vocab), dtype=bool)
    rows, cols = np.nonzero(context_mask)
    ids = context_ids[rows, cols]
    ok = ids < vocab
    seen[rows[ok], ids[ok]] = True
    return seen


def sample_loop(runner, config: GenerationConfig, max_new_tokens: int, context_ids, context_mask, rng) -> Iterator:
    """Greedy or sampled decoding. Yields (next_tokens (B,), active (B,) bool) once per new
    token; stops when every row has produced ``eos_token_id`` or after ``max_new_tokens``."""
    if max_new_tokens == 0:
        return
    temperature = config.temperature if config.sampling else 0.0
    eos = config.eos_token_id
    logits = runner.prefill()
    B, V = logits.shape
    seen = initial_seen(context_ids, context_mask, V) if config.repetition_penalty != 1.0 else None
    active = np.ones(B, dtype=bool)  # rows that have not produced EOS yet
    for step in range(max_new_tokens):
        check_logits(logits, step)
        if seen is not None:
            logits = apply_repetition_penalty(logits, seen, config.repetition_penalty)
        nxt = sample_next_token(logits, temperature, config.top_k, config.top_p, rng)  # (B,)
        yield nxt, active.copy()
        if eos is not None:
            active &= nxt != eos
        if not active.any() or step == max_new_tokens - 1:
            return
        if seen is not None:
            seen[np.arange(B), nxt] = True
        logits = runner.step(nxt)
