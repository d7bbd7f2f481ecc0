"""Happy LLM 1.4.2 — n-gram language models: add-k, interpolated Kneser–Ney, stupid backoff.

An n-gram LM assumes a token depends only on the n-1 tokens before it:

    P(w_t | w_1 .. w_{t-1}) ≈ P(w_t | w_{t-n+1} .. w_{t-1}) = c(h, w) / c(h)     (maximum likelihood)

where h is the context (the n-1 previous tokens) and c counts occurrences in the training
stream. Most long n-grams are never seen, so the estimate must be *smoothed*:

* **add-k** (Laplace for k = 1): ``(c(h, w) + k) / (c(h) + k·V)``;
* **interpolated Kneser–Ney**: subtract a discount D from every seen count and give the
  freed mass to a lower-order distribution, which counts in how many *different contexts*
  a word appears (its continuation count) rather than how often::

      P(w | h) = max(c(h, w) - D, 0) / c(h)  +  D · N1+(h •) / c(h) · P(w | h')

  with h' the context without its first token, N1+(h •) the number of distinct tokens
  seen after h, D = n1 / (n1 + 2·n2) per order (n1, n2: n-grams seen once, twice), and
  at the bottom an interpolation with the uniform 1/V so unseen tokens keep some mass;
* **stupid backoff** (Brants et al. 2007): ``c(h, w)/c(h)`` if seen, else ``0.4 · S(w | h')``.
  The scores do not sum to one, so it has no perplexity: use it for ranking only.

Add-k and Kneser–Ney are proper distributions over the V tokens for every context (the
tests check the sum), so their perplexity on held-out text, exp(-mean log P), compares
directly with a neural LM's on the same tokens.

Counting is vectorised: an n-gram of token ids (w_1..w_k) is packed into one int64
``code = ((w_1·V + w_2)·V + ...)·V + w_k``; ``np.unique`` counts codes and
``np.searchsorted`` looks them up, so a million-token corpus is counted in about a second.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .._checks import check_token_ids

__all__ = ["NGramCounts", "NGramLM", "SMOOTHINGS"]

SMOOTHINGS = ("add_k", "kneser_ney", "stupid_backoff")


def _lookup(keys: np.ndarray, values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """values[keys == q] for each query code, 0 where the code was never seen."""
    if len(keys) == 0:
        return np.zeros(q.shape, dtype=values.dtype)
    idx = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
    return np.where(keys[idx] == q, values[idx], 0)


def _check_ids(ids, vocab_size: int, what: str) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.size == 0:
        ids = ids.reshape(0).astype(np.int64)  # an empty context list is fine
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(f"{what}: expected a 1-D array of integer token ids, got shape {ids.shape} dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    check_token_ids(ids, vocab_size, what)
    return ids


class NGramCounts:
    """All k-gram counts of a token stream for k = 1..max_n, with the tables smoothing needs.

    For each order k (``self.order[k]``, a dict of sorted arrays):
      keys, count          every k-gram seen and how often
      ctx_keys, ctx_total, ctx_types   per context h (k-1 tokens): c(h) = Σ_w c(h, w), N1+(h •)
      cont_keys, cont      continuation count N1+(• w_1..w_k): distinct tokens seen before it (k < max_n)
      cctx_keys, cctx_total, cctx_types   the same per-context sums over continuation counts
    """

    def __init__(self, ids, max_n: int, vocab_size: int):
        if not 1 <= int(max_n) <= 8:
            raise ValueError(f"NGramCounts: max_n must be in 1..8, got {max_n}")
        if vocab_size < 2:
            raise ValueError(f"NGramCounts: vocab_size must be >= 2, got {vocab_size}")
        if float(vocab_size) ** max_n >= 2.0**62:
            raise ValueError(f"NGramCounts: {max_n}-grams over vocab_size={vocab_size} do not fit an int64 code")
        self.max_n, self.V = int(max_n), int(vocab_size)
        ids = _check_ids(ids, self.V, "NGramCounts")
        if len(ids) < self.max_n:
            raise ValueError(f"NGramCounts: need at least max_n={max_n} tokens, got {len(ids)}")
        self.n_tokens = len(ids)
        V = self.V
        self.order = {}
        codes = np.zeros(len(ids), dtype=np.int64)
        for k in range(1, self.max_n + 1):
            # codes[i] = k-gram ending at position i + k - 1 (starting at i)
            codes = codes[: len(ids) - k + 1] * V + ids[k - 1:]
            keys, count = np.unique(codes, return_counts=True)
            self.order[k] = self._with_context_sums({"keys": keys, "count": count})
        for k in range(1, self.max_n):  # continuation counts from the (k+1)-grams' suffixes
            upper = self.order[k + 1]["keys"]
            cont_keys, cont = np.unique(upper % V**k, return_counts=True)
            o = self.order[k]
            ctx = self._context_sums(cont_keys, cont)
            o.update(cont_keys=cont_keys, cont=cont, cctx_keys=ctx[0], cctx_total=ctx[1], cctx_types=ctx[2])

    def _context_sums(self, keys, count):
        ctx_of = keys // self.V
        ctx_keys, start = np.unique(ctx_of, return_index=True)  # keys are sorted, so each context is a run
        total = np.add.reduceat(count, start) if len(keys) else np.zeros(0, np.int64)
        types = np.diff(np.append(start, len(keys)))
        return ctx_keys, total, types

    def _with_context_sums(self, o):
        o["ctx_keys"], o["ctx_total"], o["ctx_types"] = self._context_sums(o["keys"], o["count"])
        return o

    @staticmethod
    def discount(count: np.ndarray) -> float:
        """Ney's D = n1 / (n1 + 2·n2) from the counts of counts, kept in (0, 1]."""
        n1, n2 = int(np.sum(count == 1)), int(np.sum(count == 2))
        return min(1.0, max(1e-3, n1 / (n1 + 2 * n2))) if n1 + n2 else 0.5


class NGramLM:
    """An n-gram LM over token ids 0..V-1 with one of ``SMOOTHINGS``.

        lm = NGramLM(3, vocab_size=2048, smoothing="kneser_ney").fit(train_ids)
        lm.perplexity(val_ids)              # exp(mean negative log-likelihood per token)
        lm.next_token_probs(context_ids)    # (V,) distribution (sums to 1 but for stupid backoff)
        lm.generate(prompt_ids, 40, seed=0)

    ``k``: the add-k pseudo-count; ``alpha``: stupid backoff's factor (0.4 in the paper).
    ``fit(ids, counts=...)`` reuses an ``NGramCounts`` of order >= n (one count, many models).
    """

    def __init__(self, n: int, vocab_size: int, smoothing: str = "kneser_ney", k: float = 1.0, alpha: float = 0.4):
        if not 1 <= int(n) <= 8:
            raise ValueError(f"NGramLM: n must be in 1..8, got {n}")
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"NGramLM: unknown smoothing {smoothing!r}; choose from {SMOOTHINGS}")
        if k <= 0:
            raise ValueError(f"NGramLM: add-k needs k > 0, got k={k}")
        if not 0 < alpha <= 1:
            raise ValueError(f"NGramLM: stupid backoff needs 0 < alpha <= 1, got alpha={alpha}")
        self.n, self.V, self.smoothing, self.k, self.alpha = int(n), int(vocab_size), smoothing, float(k), float(alpha)
        self.counts: Optional[NGramCounts] = None

    def fit(self, ids=None, counts: Optional[NGramCounts] = None) -> "NGramLM":
        if counts is None:
            counts = NGramCounts(ids, self.n, self.V)
        elif counts.max_n < self.n or counts.V != self.V:
            raise ValueError(f"NGramLM.fit: counts of order {counts.max_n}, V={counts.V} cannot serve n={self.n}, V={self.V}")
        self.counts = counts
        # discounts per order: raw counts at the top order, continuation counts below
        self.D = {j: NGramCounts.discount(counts.order[j]["count"] if j == self.n else counts.order[j]["cont"])
                  for j in range(1, self.n + 1)}
        return self

    # -------------------------------------------------------------- scoring
    def _histories(self, ids: np.ndarray, positions: np.ndarray):
        """For each position t: context codes of the j tokens before t (j = 0..n-1), and whether t >= j."""
        codes, valid = [np.zeros(len(positions), np.int64)], [np.ones(len(positions), bool)]
        for j in range(1, self.n):
            prev = ids[np.maximum(positions - j, 0)]
            codes.append(codes[-1] + prev * self.V ** (j - 1))  # prepend token t-j to the context code
            valid.append(positions >= j)
        return codes, valid

    def _prob(self, ctx_codes, valid, w: np.ndarray) -> np.ndarray:
        """P(w | context) for each row (or stupid-backoff score), built up from order 1 to n."""
        if self.counts is None:
            raise RuntimeError("NGramLM: call fit() first")
        c, V = self.counts, self.V
        p = None
        for j in range(1, self.n + 1):  # j = order: context of j-1 tokens
            o = c.order[j]
            h = ctx_codes[j - 1]
            code = h * V + w
            top = j == self.n
            if self.smoothing == "add_k":
                chw = _lookup(o["keys"], o["count"], code)
                ch = _lookup(o["ctx_keys"], o["ctx_total"], h)
                pj = (chw + self.k) / (ch + self.k * V)
            elif self.smoothing == "stupid_backoff":
                chw = _lookup(o["keys"], o["count"], code)
                ch = _lookup(o["ctx_keys"], o["ctx_total"], h)
                pj = np.where(chw > 0, chw / np.maximum(ch, 1), 0.0 if p is None else self.alpha * p)
            else:  # interpolated Kneser–Ney: raw counts at the top order, continuation counts below
                if top:
                    chw = _lookup(o["keys"], o["count"], code)
                    ch = _lookup(o["ctx_keys"], o["ctx_total"], h)
                    types = _lookup(o["ctx_keys"], o["ctx_types"], h)
                else:
                    chw = _lookup(o["cont_keys"], o["cont"], code)
                    ch = _lookup(o["cctx_keys"], o["cctx_total"], h)
                    types = _lookup(o["cctx_keys"], o["cctx_types"], h)
                D = self.D[j]
                lower = np.full(len(w), 1.0 / V) if p is None else p  # below unigrams: uniform
                safe = np.maximum(ch, 1)
                pj = np.where(ch > 0, np.maximum(chw - D, 0) / safe + D * types / safe * lower, lower)
            p = pj if p is None else np.where(valid[j - 1], pj, p)  # too little history: keep the lower order
        return p

    def log_probs(self, ids) -> np.ndarray:
        """log P(ids[t] | ids[:t]) for t = 1..len-1 (the first token has no history and is not scored)."""
        ids = _check_ids(ids, self.V, "NGramLM.log_probs")
        if len(ids) < 2:
            raise ValueError(f"NGramLM.log_probs: need at least 2 tokens, got {len(ids)}")
        pos = np.arange(1, len(ids))
        out = np.empty(len(pos))
        for s in range(0, len(pos), 1 << 18):  # chunks keep memory flat
            pp = pos[s:s + (1 << 18)]
            ctx, valid = self._histories(ids, pp)
            with np.errstate(divide="ignore"):
                out[s:s + len(pp)] = np.log(self._prob(ctx, valid, ids[pp]))
        return out

    def perplexity(self, ids) -> float:
        """exp of the mean negative log-likelihood per predicted token."""
        if self.smoothing == "stupid_backoff":
            raise ValueError("NGramLM.perplexity: stupid backoff scores are not probabilities (they do not sum to 1)")
        return float(math.exp(-self.log_probs(ids).mean()))

    def next_token_probs(self, context) -> np.ndarray:
        """(V,) P(w | context) for every token w (the last n-1 context tokens are used)."""
        context = _check_ids(context, self.V, "NGramLM.next_token_probs")
        ids = np.append(context, 0)  # a placeholder at the predicted position
        ctx, valid = self._histories(ids, np.full(self.V, len(context)))
        return self._prob(ctx, valid, np.arange(self.V, dtype=np.int64))

    def generate(self, context, max_new_tokens: int, temperature: float = 1.0, seed: int = 0, eos_token_id=None) -> list:
        """Sample ``max_new_tokens`` ids after ``context`` (stops early at ``eos_token_id``)."""
        if temperature <= 0:
            raise ValueError(f"NGramLM.generate: temperature must be > 0, got {temperature}")
        rng = np.random.default_rng(seed)
        out = [int(t) for t in _check_ids(context, self.V, "NGramLM.generate")]
        new = []
        for _ in range(int(max_new_tokens)):
            p = self.next_token_probs(out) ** (1.0 / temperature)
            t = int(rng.choice(self.V, p=p / p.sum()))
            out.append(t)
            new.append(t)
            if eos_token_id is not None and t == eos_token_id:
                break
        return new
