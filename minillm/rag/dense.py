"""Dense retrieval: a BERT bi-encoder trained here (Happy LLM 7.2.2, TinyRAG ``Embeddings.py``).

The book's ``BaseEmbeddings.get_embedding`` calls a remote embedding API (or a downloaded
model). Ours is the chapter-3 BERT (``minillm.models.bert.BertModel``) turned into a sentence
encoder and trained on this machine, as DPR / Sentence-BERT train theirs:

==================  ==========================================================================
``mean_pool``       average of the last hidden states over real tokens (``attention_mask``):
                    (B, T, H) -> (B, H)
``l2_normalize``    x / ||x||: unit vectors, so a dot product is the cosine similarity
``BiEncoder``       BertModel -> mean_pool -> l2_normalize. One encoder for questions and
                    passages ("bi" = both sides encoded independently, so passages are
                    encoded once, at indexing time)
``info_nce_loss``   contrastive loss with in-batch negatives: for B (question, passage) pairs,
                    ``cross_entropy(q @ pᵀ / τ, [0, 1, …, B−1])``: each question must pick
                    its own passage among the batch's B passages
``train_bi_encoder``  AdamW on ``info_nce_loss`` over batches of distinct passages
==================  ==========================================================================

``BiEncoder.encode(texts)`` returns L2-normalised float32 vectors (N, H) as a NumPy array,
under ``no_grad`` and in eval mode (dropout off). ``BiEncoder.fingerprint`` names the exact
weights, so a vector store built with one encoder refuses to be searched with another.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from .._files import atomic_write
from ..autograd import no_grad
from ..io.jsonfile import read_json_object
from ..io.safetensors import load_safetensors, save_safetensors
from ..models.bert import BertConfig, BertModel
from ..nn import Module
from ..nn import functional as F
from ..optim import AdamW
from ..tensor import Tensor
from ..tokenizers import load_tokenizer

__all__ = ["mean_pool", "l2_normalize", "info_nce_loss", "BiEncoder", "train_bi_encoder", "cosine_similarity"]

ENCODER_CONFIG = "encoder_config.json"
ENCODER_WEIGHTS = "encoder.safetensors"


def mean_pool(hidden: Tensor, attention_mask: np.ndarray) -> Tensor:
    """Mean of ``hidden`` (B, T, H) over positions where ``attention_mask`` (B, T) is 1 -> (B, H)."""
    m = np.asarray(attention_mask)
    if m.shape != tuple(hidden.shape[:2]):
        raise ValueError(f"mean_pool: attention_mask has shape {m.shape}, expected {tuple(hidden.shape[:2])}")
    counts = m.sum(axis=1, keepdims=True)  # (B, 1)
    if (counts == 0).any():
        raise ValueError(f"mean_pool: attention_mask row {int(np.flatnonzero(counts[:, 0] == 0)[0])} has no token")
    w = Tensor._wrap((m / counts).astype(hidden.dtype)[:, :, None])  # (B, T, 1) weights summing to 1 per row
    return (hidden * w).sum(dim=1)  # (B, T, H) -> (B, H)


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """x / sqrt(Σ x² + eps) along the last dim (F.normalize's job): rows of unit length."""
    return x * ((x * x).sum(dim=-1, keepdim=True) + eps).rsqrt()  # (B, H)


def info_nce_loss(q: Tensor, p: Tensor, temperature: float = 0.05) -> Tensor:
    """InfoNCE with in-batch negatives: q, p (B, H), row i of p is q_i's positive -> scalar.

    ``logits = q @ pᵀ / temperature`` (B, B); the loss is the cross-entropy of each row against
    its diagonal. With unit vectors the logits are cosines / τ; a small τ (0.05, as SimCSE)
    sharpens the softmax so near-misses are pushed apart.
    """
    if q.ndim != 2 or tuple(q.shape) != tuple(p.shape):
        raise ValueError(f"info_nce_loss: q and p must both be (B, H), got {tuple(q.shape)} and {tuple(p.shape)}")
    if not temperature > 0:
        raise ValueError(f"info_nce_loss: temperature must be > 0, got {temperature}")
    logits = (q @ p.transpose(0, 1)) * (1.0 / temperature)  # (B, H) @ (H, B) -> (B, B)
    return F.cross_entropy(logits, Tensor._wrap(np.arange(q.shape[0], dtype=np.int64)))


def cosine_similarity(a, b) -> np.ndarray:
    """The book's ``BaseEmbeddings.cosine_similarity`` for rows: a (N, D), b (M, D) -> (N, M)."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float32))
    b = np.atleast_2d(np.asarray(b, dtype=np.float32))
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    return (a / np.maximum(na, 1e-12)) @ (b / np.maximum(nb, 1e-12)).T


class BiEncoder(Module):
    """``BiEncoder(config, tokenizer)``: BertModel -> mean pool -> L2 norm; ``encode(texts)``."""

    def __init__(self, config: BertConfig, tokenizer):
        super().__init__()
        if tokenizer.pad_token_id is None:
            raise ValueError("BiEncoder: the tokenizer needs a pad token")
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(f"BiEncoder: the tokenizer has {tokenizer.vocab_size} ids but config.vocab_size is "
                             f"{config.vocab_size}")
        self.config = config
        self.tokenizer = tokenizer
        self.bert = BertModel(config, add_pooling_layer=False)

    def tokenize(self, texts) -> tuple:
        """Right-padded ``(input_ids, attention_mask)`` (B, T), cut at the position table's length."""
        if isinstance(texts, str):
            raise TypeError("BiEncoder: expected a list of strings, got one str (wrap it in a list)")
        limit = self.config.max_positions
        rows = [self.tokenizer.encode_ordinary(t)[:limit] or [self.tokenizer.pad_token_id] for t in texts]
        T = max(len(r) for r in rows)
        ids = np.full((len(rows), T), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), T), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)], mask[i, :len(r)] = r, 1
        return ids, mask

    def forward(self, input_ids, attention_mask) -> Tensor:
        """(B, T) ids and mask -> (B, H) unit vectors."""
        h = self.bert(input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        return l2_normalize(mean_pool(h, attention_mask))  # (B, H)

    def embed(self, texts) -> Tensor:
        """Differentiable embeddings of ``texts`` (for training)."""
        return self(*self.tokenize(texts))

    def encode(self, texts, batch_size: int = 64) -> np.ndarray:
        """L2-normalised float32 embeddings (N, H) of ``texts``; batches sorted by length."""
        if isinstance(texts, str):
            raise TypeError("BiEncoder.encode: expected a list of strings, got one str (wrap it in a list)")
        texts = list(texts)
        out = np.zeros((len(texts), self.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with no_grad(), self.mode(training=False):
            for b in range(0, len(order), batch_size):
                idx = order[b:b + batch_size]
                out[idx] = self.embed([texts[i] for i in idx]).data
        return out

    def get_embedding(self, text: str) -> np.ndarray:
        """The book's ``BaseEmbeddings.get_embedding``: one text -> (H,) float32."""
        return self.encode([text])[0]

    @property
    def fingerprint(self) -> str:
        """sha256 of the weights (first 16 hex digits): the identity a vector store records."""
        h = hashlib.sha256()
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(np.ascontiguousarray(t.data, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]

    def save(self, directory) -> None:
        """``encoder_config.json`` + ``encoder.safetensors`` + ``tokenizer.json`` into ``directory``."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        save_safetensors({k: v.data for k, v in self.state_dict().items()}, os.path.join(directory, ENCODER_WEIGHTS),
                         metadata={"format": "minillm-bi-encoder"})
        self.tokenizer.save(directory)
        atomic_write(os.path.join(directory, ENCODER_CONFIG),
                     json.dumps({"model_type": "minillm-bi-encoder", "bert": self.config.to_dict()}, indent=2) + "\n")

    @classmethod
    def load(cls, directory) -> "BiEncoder":
        directory = os.fspath(directory)
        path = os.path.join(directory, ENCODER_CONFIG)
        raw = read_json_object(path, f" (is {directory} a directory written by BiEncoder.save?)")
        if raw.get("model_type") != "minillm-bi-encoder" or not isinstance(raw.get("bert"), dict):
            raise ValueError(f"{path}: not a bi-encoder config (model_type {raw.get('model_type')!r})")
        try:
            config = BertConfig.from_dict(raw["bert"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None
        enc = cls(config, load_tokenizer(directory))
        weights = os.path.join(directory, ENCODER_WEIGHTS)
        try:
            enc.load_state_dict(load_safetensors(weights), strict=True)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"{weights}: {e}") from None
        return enc


def train_bi_encoder(encoder: BiEncoder, pairs, steps: int, batch_size: int = 32, lr: float = 1e-3,
                     temperature: float = 0.05, group_of=None, seed: int = 0, log_every: int = 50, log=print) -> list:
    """Train ``encoder`` on ``pairs`` = [(question, passage)] with ``info_nce_loss``; returns the losses.

    Each batch holds ``batch_size`` pairs whose passages are all different (``group_of[i]``, if
    given, names pair i's passage: two questions about the same passage in a batch would make
    one of them a false negative for the other). Linear warmup over 10 % of the steps, then a
    constant learning rate.
    """
    pairs = list(pairs)
    if len(pairs) < 2:
        raise ValueError(f"train_bi_encoder: need at least 2 pairs, got {len(pairs)}")
    groups = list(group_of) if group_of is not None else [p for _, p in pairs]
    if len(groups) != len(pairs):
        raise ValueError(f"train_bi_encoder: {len(pairs)} pairs but {len(groups)} group labels")
    rng = np.random.default_rng(seed)
    opt = AdamW(encoder.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    losses = []
    order, pos = rng.permutation(len(pairs)), 0
    with encoder.mode(training=True):
        for step in range(steps):
            batch, seen = [], set()
            tries = 0
            while len(batch) < batch_size and tries < 4 * batch_size:
                if pos == len(order):
                    order, pos = rng.permutation(len(pairs)), 0
                i = int(order[pos])
                pos += 1
                tries += 1
                if groups[i] not in seen:
                    seen.add(groups[i])
                    batch.append(pairs[i])
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, (step + 1) / warmup)
            q = encoder.embed([a for a, _ in batch])  # (B, H)
            p = encoder.embed([b for _, b in batch])  # (B, H)
            loss = info_nce_loss(q, p, temperature)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(float(loss.data))
            if log and log_every and (step + 1) % log_every == 0:
                log(f"  step {step + 1}/{steps}  InfoNCE {np.mean(losses[-log_every:]):.3f}")
    return losses
