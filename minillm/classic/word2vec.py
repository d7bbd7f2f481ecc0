"""Happy LLM 1.4.3 — Word2Vec: skip-gram and CBOW with negative sampling.

Two shallow models learn one vector per word from which words occur near which:

* **skip-gram** predicts each context word from the centre word;
* **CBOW** (continuous bag of words) predicts the centre word from the mean of its context.

A softmax over the whole vocabulary is replaced by **negative sampling**: for a true
(input, output) pair the loss is ``-log σ(u_o·v) - Σ_k log σ(-u_k·v)`` over K "negative"
words drawn from the unigram distribution raised to the 3/4 power (rare words a little
more often than their frequency). Frequent words are **subsampled**: a word of corpus
frequency f is kept with probability ``(√(f/t) + 1)·t/f`` (word2vec.c's formula, t = 1e-3),
and the learning rate decays linearly to ``lr·1e-4``; each centre word uses a random window
of 1..``window`` words on either side, as word2vec.c does.

``make_plan`` turns a corpus into the exact list of SGD examples (subsampling, windows and
negatives drawn with one seeded generator). Two trainers consume the same plan:

* ``train_autograd``: readable, with the engine: embeddings, a dot product, ``log σ``,
  ``backward()``, an SGD step, ``batch_size`` examples per step;
* ``train`` (the fast path): the word2vec.c loop as a Numba kernel with hand-derived
  updates (``minillm/kernels/_word2vec.py``; NumPy twin in ``reference_word2vec.py``, used
  when ``minillm.get_kernels() == "numpy"``). With ``batch_size=1`` the two agree (tested).

Evaluation helpers: ``most_similar`` (cosine nearest neighbours), ``analogy`` /
``analogy_accuracy`` (3CosAdd: b - a + c), and ``pca_2d`` for a plot.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import kernels as _kernels
from ..kernels import _word2vec, reference_word2vec

__all__ = [
    "Word2VecConfig", "Vocab", "negative_sampling_loss", "Plan", "make_plan", "Word2Vec", "train", "train_autograd",
    "most_similar", "analogy", "analogy_accuracy", "pca_2d",
]


@dataclass
class Word2VecConfig:
    """sg: 1 skip-gram, 0 CBOW. dim: vector size. window: max words each side (a random 1..window per
    centre). negative: K negatives per example. sample: subsampling threshold t (0 = off).
    min_count: rarer words are dropped. lr: start learning rate (decays linearly to lr·1e-4).
    epochs: passes over the corpus. seed: one generator for init, subsampling, windows, negatives."""

    sg: int = 1
    dim: int = 50
    window: int = 3
    negative: int = 5
    sample: float = 1e-3
    min_count: int = 2
    lr: float = 0.025
    epochs: int = 3
    seed: int = 0

    def __post_init__(self):
        if self.sg not in (0, 1):
            raise ValueError(f"Word2VecConfig.sg must be 1 (skip-gram) or 0 (CBOW), got {self.sg}")
        for name in ("dim", "window", "negative", "min_count", "epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Word2VecConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"Word2VecConfig.lr must be > 0, got {self.lr}")
        if self.sample < 0:
            raise ValueError(f"Word2VecConfig.sample must be >= 0, got {self.sample}")


class Vocab:
    """Words kept (count >= min_count), most frequent first, with their counts."""

    def __init__(self, sentences: Sequence[Sequence[str]], min_count: int = 1):
        c = Counter(w for s in sentences for w in s)
        self.words = sorted((w for w, n in c.items() if n >= min_count), key=lambda w: (-c[w], w))
        if not self.words:
            raise ValueError(f"Vocab: no word occurs at least min_count={min_count} times")
        self.index = {w: i for i, w in enumerate(self.words)}
        self.counts = np.array([c[w] for w in self.words], dtype=np.float64)

    def __len__(self):
        return len(self.words)

    def encode(self, sentences) -> List[np.ndarray]:
        """Sentences as id arrays; words outside the vocabulary are dropped (as word2vec.c does)."""
        return [np.array([self.index[w] for w in s if w in self.index], dtype=np.int64) for s in sentences]


@dataclass
class Plan:
    """Every SGD example of a training run, in order.

    inputs: (P, C) int64, the centre word (C = 1, skip-gram) or context words padded with -1 (CBOW);
    outputs: (P, 1+K) int64, the positive word then K negatives; mask: (P, 1+K) 0/1 (a negative equal
    to the positive is skipped, as in word2vec.c); lr: (P,) the decayed learning rate per example;
    n_words: words processed (after subsampling), for words/s."""

    inputs: np.ndarray
    outputs: np.ndarray
    mask: np.ndarray
    lr: np.ndarray
    n_words: int


_TABLE_SIZE = 1_000_000  # word2vec.c uses 1e8; our vocabularies are small


def make_plan(ids: Sequence[np.ndarray], counts: np.ndarray, cfg: Word2VecConfig) -> Plan:
    """Subsample, pick windows and negatives for ``cfg.epochs`` passes over sentences of ids."""
    rng = np.random.default_rng(cfg.seed + 1)
    V = len(counts)
    total = counts.sum()
    freq = counts / total
    keep_p = np.ones(V) if cfg.sample <= 0 else np.minimum(1.0, (np.sqrt(freq / cfg.sample) + 1) * cfg.sample / freq)
    noise = counts**0.75
    noise /= noise.sum()  # the unigram^0.75 distribution of negatives
    W = cfg.window
    ids = [np.asarray(x, dtype=np.int64) for x in ids]
    stream = np.concatenate(ids) if ids else np.zeros(0, np.int64)  # all sentences end to end
    sent = np.repeat(np.arange(len(ids)), [len(x) for x in ids])  # which sentence each token is in
    offsets = [k for k in range(-W, W + 1) if k != 0]
    ins, outs, n_words = [], [], 0
    for _ in range(cfg.epochs):
        keep = rng.random(len(stream)) < keep_p[stream]  # subsampling
        s, sid = stream[keep], sent[keep]
        n = len(s)
        n_words += n
        b = rng.integers(1, W + 1, size=n)  # each centre's window
        pos = np.arange(n)
        # context k of centre i: within its window, inside the stream and the same sentence
        off = np.array(offsets)
        ctx_pos = pos[:, None] + off  # (n, 2W)
        inside = (ctx_pos >= 0) & (ctx_pos < n)
        ctx_pos = np.where(inside, ctx_pos, 0)
        valid = inside & (np.abs(off) <= b[:, None]) & (sid[ctx_pos] == sid[:, None])  # (n, 2W)
        if cfg.sg:  # one example per (centre, context) pair; row-major order = word2vec.c's, centre by centre
            ins.append(s[np.broadcast_to(pos[:, None], valid.shape)[valid]][:, None])
            outs.append(s[ctx_pos[valid]])
        else:  # one example per centre: its context words, -1 where a slot is empty
            C = np.where(valid, s[ctx_pos], -1)  # (n, 2W)
            has = valid.any(1)
            ins.append(C[has])
            outs.append(s[has])
    pos = np.concatenate(outs) if outs else np.zeros(0, np.int64)
    P = len(pos)
    if P == 0:
        raise ValueError("make_plan: the corpus gives no training example (sentences too short after subsampling?)")
    inputs = np.concatenate(ins)
    # word2vec.c's unigram table: word w fills a share noise[w] of a big array, and a negative
    # sample is one uniform index into it (a gather: much faster than sampling by the CDF)
    table = np.repeat(np.arange(V), np.maximum(1, np.round(noise * _TABLE_SIZE).astype(np.int64)))
    neg = table[rng.integers(0, len(table), size=(P, cfg.negative))]
    outputs = np.concatenate([pos[:, None], neg], axis=1)  # (P, 1+K)
    mask = np.ones(outputs.shape, dtype=np.float32)  # float32: a plan of millions of examples stays small
    mask[:, 1:] = neg != pos[:, None]
    lr = cfg.lr * np.maximum(1e-4, 1.0 - np.arange(P) / P)  # linear decay
    return Plan(inputs, outputs, mask, lr, n_words)


def _init(V: int, cfg: Word2VecConfig, dtype=np.float64) -> Tuple[np.ndarray, np.ndarray]:
    """word2vec.c's init: input vectors uniform in ±0.5/dim, output vectors zero."""
    rng = np.random.default_rng(cfg.seed)
    W_in = ((rng.random((V, cfg.dim)) - 0.5) / cfg.dim).astype(dtype)
    return W_in, np.zeros((V, cfg.dim), dtype=dtype)


class Word2Vec:
    """Trained vectors: ``wv`` (V, dim) input vectors (the ones used as word vectors), ``vocab``."""

    def __init__(self, vocab: Vocab, W_in: np.ndarray, W_out: np.ndarray, cfg: Word2VecConfig, stats: dict):
        self.vocab, self.wv, self.W_out, self.cfg, self.stats = vocab, W_in, W_out, cfg, stats

    def __getitem__(self, word: str) -> np.ndarray:
        if word not in self.vocab.index:
            raise KeyError(f"word {word!r} is not in the Word2Vec vocabulary ({len(self.vocab)} words)")
        return self.wv[self.vocab.index[word]]

    def __contains__(self, word: str) -> bool:
        return word in self.vocab.index


def _prepare(sentences, cfg):
    if isinstance(sentences, str) or any(isinstance(s, str) for s in sentences[:1]):
        raise TypeError("word2vec: sentences must be lists of words (tokenize the text first)")
    vocab = Vocab(sentences, cfg.min_count)
    return vocab, make_plan(vocab.encode(sentences), vocab.counts, cfg)


def train(sentences: Sequence[Sequence[str]], cfg: Optional[Word2VecConfig] = None, dtype=np.float32) -> Word2Vec:
    """Train with the kernel (the word2vec.c loop), or its NumPy twin on the "numpy" backend."""
    cfg = cfg or Word2VecConfig()
    vocab, plan = _prepare(sentences, cfg)
    W_in, W_out = _init(len(vocab), cfg, dtype)
    mod = _word2vec if _kernels.get_kernels() == "numba" else reference_word2vec
    fn = mod.skipgram_ns_train if cfg.sg else mod.cbow_ns_train
    inputs = plan.inputs[:, 0].copy() if cfg.sg else plan.inputs
    t0 = time.perf_counter()
    loss = fn(W_in, W_out, inputs, plan.outputs, plan.mask.astype(dtype), plan.lr.astype(dtype))
    dt = time.perf_counter() - t0
    stats = {"loss": loss / len(plan.lr), "examples": len(plan.lr), "words": plan.n_words, "seconds": dt,
             "words_per_sec": plan.n_words / max(dt, 1e-9)}
    return Word2Vec(vocab, W_in, W_out, cfg, stats)


def negative_sampling_loss(W_in, W_out, inputs: np.ndarray, outputs: np.ndarray, weights: np.ndarray, sg: int = 1):
    """Σ_i Σ_j weights[i, j] · -log σ(±u_j·v_i) with the engine (+ for the positive j = 0, - for negatives).

    W_in, W_out: (V, D) Tensors; inputs (B, 1) centre ids (skip-gram) or (B, C) context ids
    padded with -1 (CBOW, v_i is their mean); outputs (B, 1+K); weights (B, 1+K).
    """
    import minillm as mi
    import minillm.nn.functional as F

    dtype = W_in.data.dtype
    if sg:
        v = F.embedding(mi.Tensor(inputs[:, 0]), W_in)  # (B, D)
    else:
        valid = (inputs >= 0).astype(dtype)  # (B, C)
        e = F.embedding(mi.Tensor(np.maximum(inputs, 0)), W_in)  # (B, C, D)
        v = (e * mi.Tensor(valid[..., None])).sum(1) / mi.Tensor(valid.sum(1, keepdims=True))  # (B, D) the mean
    u = F.embedding(mi.Tensor(outputs), W_out)  # (B, 1+K, D)
    score = (u * v.unsqueeze(1)).sum(-1)  # (B, 1+K)
    sign = np.full(outputs.shape[1], -1.0, dtype=dtype)
    sign[0] = 1.0
    logsig = mi.log(mi.sigmoid(score * mi.Tensor(sign)))  # (B, 1+K)
    return -(logsig * mi.Tensor(np.asarray(weights, dtype=dtype))).sum()


def train_autograd(sentences: Sequence[Sequence[str]], cfg: Optional[Word2VecConfig] = None, batch_size: int = 1,
                   dtype=np.float64, max_examples: Optional[int] = None) -> Word2Vec:
    """The same model with the autograd engine: look up, dot, log σ, backward, SGD.

    ``batch_size`` examples share one step (their gradients summed, each example with its own
    learning rate); with ``batch_size=1`` this is exactly ``train``'s sequential SGD.
    ``max_examples`` stops early (the engine is far slower than the kernel).
    """
    import minillm as mi

    cfg = cfg or Word2VecConfig()
    if batch_size < 1:
        raise ValueError(f"train_autograd: batch_size must be >= 1, got {batch_size}")
    vocab, plan = _prepare(sentences, cfg)
    W_in0, W_out0 = _init(len(vocab), cfg, dtype)
    W_in = mi.Tensor(W_in0, requires_grad=True)
    W_out = mi.Tensor(W_out0, requires_grad=True)
    P = len(plan.lr) if max_examples is None else min(len(plan.lr), int(max_examples))
    total, t0 = 0.0, time.perf_counter()
    for s in range(0, P, batch_size):
        sl = slice(s, min(P, s + batch_size))
        # each example's learning rate is folded into its loss weight, so one SGD step of
        # size 1 on the weighted sum is every example's own step
        loss = negative_sampling_loss(W_in, W_out, plan.inputs[sl], plan.outputs[sl],
                                      plan.mask[sl] * plan.lr[sl, None], sg=cfg.sg)
        loss.backward()
        if batch_size == 1:  # the example's own loss (its lr divided out); batches mix lrs, so no loss then
            total += float(loss.data) / float(plan.lr[s])
        W_in.data -= W_in.grad.data  # the lr is already inside the loss weights
        W_out.data -= W_out.grad.data
        W_in.grad = W_out.grad = None
    dt = time.perf_counter() - t0
    words = plan.n_words * P / len(plan.lr)
    stats = {"loss": total / P if batch_size == 1 else float("nan"), "examples": P, "words": words, "seconds": dt, "words_per_sec": words / max(dt, 1e-9)}
    return Word2Vec(vocab, W_in.data, W_out.data, cfg, stats)


# ----------------------------------------------------------------------------- evaluation


def _unit(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=-1, keepdims=True)
    return m / np.where(n > 0, n, 1.0)


def most_similar(model: Word2Vec, word: str, topn: int = 5) -> List[Tuple[str, float]]:
    """The ``topn`` words with the highest cosine similarity to ``word`` (itself excluded)."""
    unit = _unit(model.wv)
    sims = unit @ _unit(model[word])  # (V,)
    sims[model.vocab.index[word]] = -np.inf
    order = np.argsort(-sims)[:topn]
    return [(model.vocab.words[i], float(sims[i])) for i in order]


def analogy(model: Word2Vec, a: str, b: str, c: str) -> str:
    """3CosAdd: the word d maximising cos(d, b - a + c), excluding a, b, c (a : b :: c : d)."""
    unit = _unit(model.wv)
    q = _unit(unit[model.vocab.index[b]] - unit[model.vocab.index[a]] + unit[model.vocab.index[c]])
    sims = unit @ q
    for w in (a, b, c):
        sims[model.vocab.index[w]] = -np.inf
    return model.vocab.words[int(np.argmax(sims))]


def analogy_accuracy(model: Word2Vec, questions: Sequence[Tuple[str, str, str, str]]) -> Dict[str, float]:
    """Share of (a, b, c, d) answered d; questions with a word outside the vocabulary are skipped (counted)."""
    ok = n = skipped = 0
    for a, b, c, d in questions:
        if not all(w in model for w in (a, b, c, d)):
            skipped += 1
            continue
        n += 1
        ok += analogy(model, a, b, c) == d
    return {"accuracy": ok / n if n else float("nan"), "n": n, "skipped": skipped}


def pca_2d(x: np.ndarray) -> np.ndarray:
    """(N, 2) projection of the rows of x onto their first two principal components."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return xc @ vt[:2].T  # (N, D) @ (D, 2)
