"""Happy LLM 1.4.4 — ELMo: contextual word vectors from a bidirectional LSTM language model.

Word2Vec gives a word one vector whatever its sentence. ELMo (Peters et al. 2018) runs two
language models over the sentence and uses their hidden states as the word's features:

* a **forward LM**: a 2-layer LSTM reading left to right, predicting the next word;
* a **backward LM**: a separate 2-layer LSTM reading right to left, predicting the previous word;
* both read the *same* token embeddings (tied input) and share the output softmax.

For word k the biLM gives L + 1 = 3 layers of 2·dim features: the token embedding
(repeated for both directions), then [forward h; backward h] of LSTM layers 1 and 2.
A downstream task learns its own **scalar mix**::

    ELMo_k = γ · Σ_j softmax(s)_j · h_{k, j}

(``ScalarMix``: weights s and scale γ are trained with the task; the biLM stays frozen).

``probe_accuracy`` measures what the features know: a linear classifier (a "probe") on
frozen features predicts each word's tag (name, place, object, ...; ``classic.data.TAGS``).
The test that shows what "contextual" means: held-out stories contain names and objects
never seen in training (``<unk>`` to both models). A static vector for ``<unk>`` is one
point, so a probe can give it only one tag; ELMo's features of the same ``<unk>`` differ
with the sentence around it ("<unk>遇到了朋友..." is a name, "买了一个红色的<unk>" an object).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

import minillm as mi
import minillm.nn as nn
import minillm.nn.functional as F

__all__ = ["ELMoConfig", "WordVocab", "BiLM", "ScalarMix", "train_bilm", "elmo_layers", "Probe", "train_probe"]

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"


class WordVocab:
    """Words -> ids with ``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3."""

    def __init__(self, sentences: Sequence[Sequence[str]], min_count: int = 1):
        from collections import Counter

        c = Counter(w for s in sentences for w in s)
        words = sorted((w for w, n in c.items() if n >= min_count), key=lambda w: (-c[w], w))
        self.itos = [PAD, UNK, BOS, EOS] + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, words: Sequence[str]) -> np.ndarray:
        """``<bos>`` ids ``<eos>``; unknown words become ``<unk>``."""
        return np.array([2] + [self.stoi.get(w, 1) for w in words] + [3], dtype=np.int64)


@dataclass
class ELMoConfig:
    """vocab_size: words incl. the 4 specials. dim: embedding = LSTM hidden size (so the token layer
    and the LSTM layers mix: each layer has 2·dim features). num_layers: LSTM layers per direction."""

    vocab_size: int
    dim: int = 64
    num_layers: int = 2
    dropout: float = 0.1

    def __post_init__(self):
        for name in ("vocab_size", "dim", "num_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ELMoConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"ELMoConfig.dropout must be in [0, 1), got {self.dropout}")


def _reverse_index(lengths: np.ndarray, T: int) -> np.ndarray:
    """(B, T) index that reverses each row's first lengths[b] positions and leaves the padding.

    >>> _reverse_index(np.array([3, 1]), 3).tolist()
    [[2, 1, 0], [0, 1, 2]]
    """
    t = np.arange(T)[None, :]
    L = lengths[:, None]
    return np.where(t < L, L - 1 - t, t)


class BiLM(nn.Module):
    """ELMo's biLM: tied token embeddings, a forward and a backward LSTM stack, a shared softmax."""

    def __init__(self, cfg: ELMoConfig, dtype=None):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim, dtype=dtype)
        nn.init.normal_(self.tok_embeddings.weight, std=0.1)
        self.forward_lm = nn.LSTM(cfg.dim, cfg.dim, cfg.num_layers, batch_first=True, dropout=cfg.dropout, dtype=dtype)
        self.backward_lm = nn.LSTM(cfg.dim, cfg.dim, cfg.num_layers, batch_first=True, dropout=cfg.dropout, dtype=dtype)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, dtype=dtype)

    def forward(self, ids: np.ndarray, lengths: np.ndarray):
        """ids (B, T) padded with 0, lengths (B,). Returns (layers, fwd_logits, bwd_logits).

        layers: num_layers + 1 tensors (B, T, 2·dim); fwd_logits[:, t] predicts ids[:, t + 1],
        bwd_logits[:, t] predicts ids[:, t - 1]; both (B, T, vocab_size).
        """
        ids, lengths = np.asarray(ids), np.asarray(lengths)
        if ids.ndim != 2 or lengths.shape != (ids.shape[0],):
            raise ValueError(f"BiLM: expected ids (B, T) and lengths (B,), got {ids.shape} and {lengths.shape}")
        if lengths.min() < 2 or lengths.max() > ids.shape[1]:
            raise ValueError(f"BiLM: lengths must be in [2, T={ids.shape[1]}], got {lengths.tolist()}")
        B, T = ids.shape
        x = self.tok_embeddings(mi.tensor(ids))  # (B, T, dim)
        rows, rev = np.arange(B)[:, None], _reverse_index(lengths, T)
        _, _, fwd = self.forward_lm(self.dropout(x), return_all_layers=True)  # layers of (B, T, dim)
        _, _, bwd_rev = self.backward_lm(self.dropout(x[rows, rev]), return_all_layers=True)
        bwd = [h[rows, rev] for h in bwd_rev]  # back to left-to-right order
        layers = [mi.cat([x, x], dim=-1)] + [mi.cat([f, b], dim=-1) for f, b in zip(fwd, bwd)]  # (B, T, 2·dim)
        return layers, self.output(self.dropout(fwd[-1])), self.output(self.dropout(bwd[-1]))

    def loss(self, ids: np.ndarray, lengths: np.ndarray):
        """Mean of the forward and backward LMs' cross-entropies (padding ignored)."""
        _, fl, bl = self(ids, lengths)
        B, T = ids.shape
        valid = np.arange(T)[None, :] < lengths[:, None]
        nxt = np.full((B, T), -100)
        nxt[:, :-1] = np.where(valid[:, 1:], ids[:, 1:], -100)  # forward target: the next word
        prev = np.full((B, T), -100)
        prev[:, 1:] = np.where(valid[:, 1:], ids[:, :-1], -100)  # backward target: the previous word
        V = self.cfg.vocab_size
        lf = F.cross_entropy(fl.view(B * T, V), mi.tensor(nxt.reshape(-1)))
        lb = F.cross_entropy(bl.view(B * T, V), mi.tensor(prev.reshape(-1)))
        return (lf + lb) * 0.5, lf, lb


class ScalarMix(nn.Module):
    """ELMo's task-specific mix: γ · Σ_j softmax(s)_j · layer_j (s starts at 0: equal weights)."""

    def __init__(self, num_layers: int, dtype=None):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"ScalarMix: num_layers must be >= 1, got {num_layers}")
        self.num_layers = int(num_layers)
        self.scalar_parameters = nn.Parameter(np.zeros(num_layers, dtype=np.dtype(dtype or mi.get_default_dtype())))
        self.gamma = nn.Parameter(np.ones(1, dtype=np.dtype(dtype or mi.get_default_dtype())))

    def forward(self, layers):
        """layers: a list of num_layers tensors of one shape (..., C), or one tensor (..., num_layers, C)."""
        h = layers if isinstance(layers, mi.Tensor) else mi.stack(list(layers), dim=-2)  # (..., L, C)
        if h.shape[-2] != self.num_layers:
            raise ValueError(f"ScalarMix: expected {self.num_layers} layers, got {h.shape[-2]} (shape {h.shape})")
        w = mi.softmax(self.scalar_parameters, dim=0).view(self.num_layers, 1)  # (L, 1)
        return (h * w).sum(-2) * self.gamma  # (..., C)


def _batches(seqs: List[np.ndarray], batch_size: int, rng: np.random.Generator):
    order = rng.permutation(len(seqs))
    for s in range(0, len(order), batch_size):
        yield _pad([seqs[i] for i in order[s:s + batch_size]])


def _pad(seqs: List[np.ndarray]):
    lengths = np.array([len(s) for s in seqs])
    ids = np.zeros((len(seqs), lengths.max()), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
    return ids, lengths


def train_bilm(model: BiLM, seqs: List[np.ndarray], steps: int, batch_size: int = 16, lr: float = 3e-3,
               word_dropout: float = 0.05, seed: int = 0, log=None) -> List[float]:
    """Adam on the biLM loss. ``word_dropout``: share of words replaced by ``<unk>`` while training,
    so ``<unk>`` (every word unseen in training) gets a meaning from its contexts."""
    rng = np.random.default_rng(seed)
    opt = mi.optim.Adam(model.parameters(), lr=lr)
    losses, step = [], 0
    with model.mode(training=True):
        while step < steps:
            for ids, lengths in _batches(seqs, batch_size, rng):
                drop = (rng.random(ids.shape) < word_dropout) & (ids > 3)
                loss, _, _ = model.loss(np.where(drop, 1, ids), lengths)
                opt.zero_grad()
                loss.backward()
                mi.optim.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                losses.append(float(loss.data))
                step += 1
                if log and (step % max(1, steps // 5) == 0 or step == steps):
                    log(f"  biLM step {step}/{steps}: loss {np.mean(losses[-20:]):.3f}")
                if step >= steps:
                    break
    return losses


def elmo_layers(model: BiLM, seqs: List[np.ndarray], batch_size: int = 64) -> List[np.ndarray]:
    """Frozen features: per sequence an array (n_words, num_layers + 1, 2·dim), <bos>/<eos> dropped."""
    out = []
    with mi.no_grad(), model.mode(training=False):
        for s in range(0, len(seqs), batch_size):
            chunk = seqs[s:s + batch_size]
            ids, lengths = _pad(chunk)
            layers, _, _ = model(ids, lengths)
            h = np.stack([layer.data for layer in layers], axis=2)  # (B, T, L+1, 2·dim)
            out += [h[i, 1:n - 1] for i, n in enumerate(lengths)]
    return out


def bilm_perplexity(model: BiLM, seqs: List[np.ndarray], batch_size: int = 64) -> Dict[str, float]:
    """Forward and backward per-word perplexity on ``seqs``."""
    tot_f = tot_b = n = 0.0
    with mi.no_grad(), model.mode(training=False):
        for s in range(0, len(seqs), batch_size):
            ids, lengths = _pad(seqs[s:s + batch_size])
            _, lf, lb = model.loss(ids, lengths)
            k = float((lengths - 1).sum())
            tot_f, tot_b, n = tot_f + float(lf.data) * k, tot_b + float(lb.data) * k, n + k
    return {"forward_ppl": math.exp(tot_f / n), "backward_ppl": math.exp(tot_b / n)}


class Probe(nn.Module):
    """A linear classifier on frozen features; with ``num_layers`` it first applies a ``ScalarMix``."""

    def __init__(self, in_features: int, num_classes: int, num_layers: Optional[int] = None, dtype=None):
        super().__init__()
        self.mix = ScalarMix(num_layers, dtype=dtype) if num_layers else None
        self.linear = nn.Linear(in_features, num_classes, dtype=dtype)

    def forward(self, feats):
        x = feats if isinstance(feats, mi.Tensor) else mi.tensor(np.asarray(feats, dtype=self.linear.weight.dtype))
        if self.mix is not None:
            x = self.mix(x)  # (N, L, C) -> (N, C)
        return self.linear(x)  # (N, num_classes)

    def predict(self, feats: np.ndarray) -> np.ndarray:
        with mi.no_grad():
            return self(feats).data.argmax(-1)


def train_probe(feats: np.ndarray, labels: np.ndarray, num_classes: int, steps: int = 300, lr: float = 0.05,
                seed: int = 0) -> Probe:
    """Full-batch Adam on cross-entropy. feats: (N, C) static, or (N, L, C) layers to mix."""
    feats = np.asarray(feats, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if feats.ndim not in (2, 3) or len(feats) != len(labels):
        raise ValueError(f"train_probe: feats must be (N, C) or (N, L, C) with N = len(labels), got {feats.shape} "
                         f"and {labels.shape}")
    mi.manual_seed(seed)
    probe = Probe(feats.shape[-1], num_classes, num_layers=feats.shape[1] if feats.ndim == 3 else None)
    opt = mi.optim.Adam(probe.parameters(), lr=lr)
    x, y = mi.tensor(feats), mi.tensor(labels)
    for _ in range(steps):
        loss = F.cross_entropy(probe(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probe
