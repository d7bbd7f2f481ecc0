"""Speculative (assisted) decoding (Happy LLM, Extra chapter "generation-method").

A small *draft* model (``assistant_model``) proposes ``k = num_assistant_tokens`` tokens one
by one; the large *target* model then scores all of them in ONE forward pass (k + 1
positions against its KV cache) and keeps the longest prefix it agrees with, plus one token
of its own. When the draft guesses well, the target runs once per several tokens.

* Greedy: draft token i is kept while it equals the target's argmax at that position; the
  first disagreement is replaced by the target's argmax, so the output is exactly the
  target's greedy output.
* Sampling (Leviathan et al. 2023; Chen et al. 2023): with p the target's and q the draft's
  next-token distributions (after temperature / top-k / top-p), draft token x is accepted
  with probability min(1, p(x) / q(x)); on rejection the token is drawn from
  norm(max(0, p - q)) and the round ends; if all k are accepted, one more token is drawn from
  p. Every token is then distributed exactly as the target alone would sample it.

Both models must share the vocabulary. Decoder-only models, one prompt at a time, with the
KV cache; the context is not cropped, so prompt + max_new_tokens must fit both models'
``max_seq_len``. After each round the caches are rewound to the accepted tokens (their
``length`` is cut back; the stale slots are overwritten by the next round).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .config import GenerationConfig
from .decode import model_config
from .fused import FusedDecoder, fused_decode_unsupported
from .sampling import apply_repetition_penalty, next_token_probs, sample_from

__all__ = ["assisted_decode", "AssistedStats", "speculative_accept"]


@dataclass
class AssistedStats:
    """Counts of one assisted run: draft tokens proposed and accepted, target forward passes."""

    proposed: int = 0
    accepted: int = 0
    target_calls: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else float("nan")


class _Feeder:
    """One model with its KV cache, fed any number of new tokens of a single sequence.

    Single-token feeds run on the fused kernel when the model allows it (checked against the
    modules on the first feed, as in ``generate``); longer feeds go through the modules,
    writing the same cache."""

    def __init__(self, model, fused: bool):
        self.model = model
        self.decoder = FusedDecoder(model, 1) if fused and fused_decode_unsupported(model) is None else None
        self.cache = self.decoder.kv_cache if self.decoder is not None else model.new_kv_cache(1)

    @property
    def length(self) -> int:
        return self.cache[0].length

    def rewind(self, n: int) -> None:
        for c in self.cache:
            c.length = min(c.length, n)

    def feed(self, tokens: list[int], keep: int = 1) -> np.ndarray:
        """Append ``tokens`` after the cached ones; returns the logits of the last ``keep`` (keep, V)."""
        rows = []
        if self.decoder is not None and self.length == 0:  # the prompt: prefill, and check the kernel once
            split = len(tokens) - keep + 1  # up to the first token whose logits are needed
            logits, reason = self.decoder.prefill(np.asarray(tokens[:split], dtype=np.int64)[None], verify=True)
            if reason is not None:
                warnings.warn(reason, RuntimeWarning, stacklevel=4)
                self.decoder = None  # the cache views stay; the modules go on writing them
            rows.append(logits)  # (1, V)
            tokens = tokens[split:]
        if tokens:
            ids = np.asarray(tokens, dtype=np.int64)[None]  # (1, T)
            if self.decoder is not None and len(tokens) == 1:
                rows.append(self.decoder.step(ids[0]))  # (1, V): one fused kernel call
            else:
                out = self.model(ids, kv_cache=self.cache, logits_to_keep=min(keep, len(tokens)))
                rows.append(out.logits.data[0])  # (T', V)
        return np.concatenate(rows)[-keep:]


def speculative_accept(p: np.ndarray, q: np.ndarray, drafts: list[int], rng) -> list[int]:
    """The rejection rule. p: (k+1, V) target distributions (row i: the token after draft i-1),
    q: (k, V) draft distributions, drafts: the k tokens the draft sampled from q. Returns the
    tokens to keep: an accepted prefix of ``drafts`` plus one token drawn by the target's rule."""
    for i, x in enumerate(drafts):
        if rng.random() < min(1.0, p[i, x] / q[i, x]):
            continue  # accepted
        residual = np.maximum(p[i] - q[i], 0.0)  # (V,) where the target wants more than the draft gave
        if residual.sum() <= 0:  # p == q up to rounding: rejection had probability ~0
            residual = p[i]
        return drafts[:i] + [int(sample_from(residual[None], rng)[0])]
    return drafts + [int(sample_from(p[len(drafts)][None], rng)[0])]


def assisted_decode(target, draft, prompt: np.ndarray, config: GenerationConfig, rng, stats: AssistedStats | None = None) -> Iterator[int]:
    """Yield the new tokens of one prompt (1-D int array), EOS included if produced (the caller drops it)."""
    V = model_config(target).vocab_size
    if getattr(model_config(draft), "vocab_size", None) != V:
        raise ValueError(f"generate: assistant_model's vocab_size {model_config(draft).vocab_size} differs from the model's {V}")
    n_max = config.max_new_tokens
    limit = min(model_config(target).max_seq_len, model_config(draft).max_seq_len)
    if len(prompt) + n_max > limit:
        raise ValueError(
            f"generate: assisted decoding does not crop the context: prompt ({len(prompt)}) + max_new_tokens ({n_max}) "
            f"must be <= max_seq_len ({limit})"
        )
    stats = AssistedStats() if stats is None else stats
    sampling, eos, rp = config.sampling, config.eos_token_id, config.repetition_penalty
    tgt, drf = _Feeder(target, config.fused_decode), _Feeder(draft, config.fused_decode)
    seq = [int(t) for t in prompt]
    seen = np.zeros((1, V), dtype=bool)
    seen[0, np.asarray(seq)] = True

    def processed(logits, seen_row):  # logits (V,) -> the distribution or the argmax the rules need
        if rp != 1.0:
            logits = apply_repetition_penalty(logits[None], seen_row, rp)[0]
        return next_token_probs(logits[None], config.temperature, config.top_k, config.top_p)[0] if sampling else logits

    produced = 0
    while produced < n_max:
        k = min(config.num_assistant_tokens, n_max - produced - 1)  # never propose past what is needed
        drafts, q, seen_i = [], [], seen.copy()
        for i in range(k):  # the draft proposes k tokens, one forward each
            logits = drf.feed(seq[drf.length :] if i == 0 else drafts[-1:])[-1]  # (V,)
            dist = processed(logits, seen_i)
            x = int(sample_from(dist[None], rng)[0]) if sampling else int(dist.argmax())
            drafts.append(x)
            q.append(dist)
            seen_i[0, x] = True
        # the target scores the pending tokens and every draft in one pass: k+1 next-token rows
        t_logits = tgt.feed(seq[tgt.length :] + drafts, keep=k + 1)  # (k+1, V)
        stats.target_calls += 1
        seen_i = seen.copy()
        p = []
        for i in range(k + 1):
            p.append(processed(t_logits[i], seen_i))
            if i < k:
                seen_i[0, drafts[i]] = True
        if sampling:
            new = speculative_accept(np.array(p), np.array(q).reshape(k, V), drafts, rng)
        else:
            new = []
            for i in range(k + 1):  # keep drafts while they are the target's argmax, then the target's own token
                best = int(p[i].argmax())
                new.append(best)
                if i == k or drafts[i] != best:
                    break
        stats.proposed += k
        stats.accepted += len(new) - 1
        for tok in new:
            yield tok
            produced += 1
            if (eos is not None and tok == eos) or produced == n_max:
                return
            seq.append(tok)
            seen[0, tok] = True
        # keep only cache entries of accepted tokens (the newest token of seq is not fed yet)
        tgt.rewind(len(seq) - 1)
        drf.rewind(len(seq) - 1)

