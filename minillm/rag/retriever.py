"""Retrievers: one interface over BM25, the dense bi-encoder and their fusion.

Every retriever answers ``search(query, k=3) -> list[Hit]``, best first, and ``rank(query, k)``
-> ``(chunk positions, scores)`` for evaluation. A ``Hit`` carries the chunk's ``text``, its
``score`` (BM25 score, cosine, or fused RRF score: comparable only within one retriever), the
``source`` path and offsets, so an answer can cite where it came from.

==================  ==========================================================================
``BM25Retriever``   ``BM25Retriever.from_folder("kb/")``: read, chunk and index a folder in one
                    call; ``save``/``load`` a store folder (the chunks; the index is rebuilt)
``DenseRetriever``  a ``VectorStore`` with vectors + the ``BiEncoder`` that made them
``HybridRetriever`` reciprocal-rank fusion (RRF) of several retrievers' rankings:
                    ``score(d) = Σ_r 1 / (k_rrf + rank_r(d))`` (Cormack et al. 2009, k_rrf = 60).
                    Ranks, not scores, are fused, so BM25's unbounded scores and cosines need no
                    calibration against each other
==================  ==========================================================================
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .bm25 import BM25, bm25_tokenize
from .loaders import ReadFiles
from .store import VectorStore

__all__ = ["Hit", "BM25Retriever", "DenseRetriever", "HybridRetriever", "reciprocal_rank_fusion"]


@dataclass
class Hit:
    """One retrieved chunk: ``text``, ``score``, ``source`` path, character offsets ``start``/``end``
    in the source, Markdown ``heading``, ``chunk_id`` (its position in the store) and ``metadata``."""

    text: str
    score: float
    source: str
    start: int = 0
    end: int = 0
    heading: str | None = None
    chunk_id: int = -1
    metadata: dict = field(default_factory=dict)


def _hits(store: VectorStore, positions, scores) -> list:
    out = []
    for i, s in zip(positions, scores):
        c = store.document[int(i)]
        out.append(Hit(c.text, float(s), c.source, c.start, c.end, c.heading, int(i), dict(c.metadata)))
    return out


def _check_query(query, k, who):
    if not isinstance(query, str):
        raise TypeError(f"{who}.search: query must be a str, got {type(query).__name__}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{who}.search: k must be an int >= 1, got {k!r}")


class BM25Retriever:
    """BM25 over the chunks of a ``VectorStore`` (only its chunks are used)."""

    def __init__(self, store: VectorStore, k1: float = 1.5, b: float = 0.75, tokenize=bm25_tokenize):
        if not len(store):
            raise ValueError("BM25Retriever: the store has no chunks")
        self.store, self.tokenize = store, tokenize
        self.errors: list = []
        self.index = BM25([tokenize(c.text) for c in store.document], k1=k1, b=b)

    @classmethod
    def from_folder(cls, path, max_tokens: int = 128, overlap: int = 16, tokenizer=None, k1: float = 1.5,
                    b: float = 0.75) -> "BM25Retriever":
        """Read ``path`` (folder or file), chunk it and index it. Skipped files are in ``.errors``."""
        reader = ReadFiles(path)
        chunks = reader.get_content(max_tokens, overlap, tokenizer=tokenizer)
        if not chunks:
            raise ValueError(f"BM25Retriever.from_folder: no readable text in {path}"
                             + (f" (skipped: {reader.errors})" if reader.errors else ""))
        r = cls(VectorStore(chunks), k1=k1, b=b)
        r.errors = reader.errors
        return r

    def rank(self, query: str, k: int = 3) -> tuple:
        return self.index.top_k(self.tokenize(query), k)

    def search(self, query: str, k: int = 3) -> list:
        _check_query(query, k, "BM25Retriever")
        return _hits(self.store, *self.rank(query, k))

    def save(self, path) -> None:
        self.store.persist(path)

    @classmethod
    def load(cls, path, k1: float = 1.5, b: float = 0.75) -> "BM25Retriever":
        return cls(VectorStore.load_vector(path), k1=k1, b=b)


class DenseRetriever:
    """Exact cosine search in ``store`` with the ``encoder`` that built its vectors."""

    def __init__(self, store: VectorStore, encoder):
        store.check_model(encoder)
        self.store, self.encoder = store, encoder

    def rank(self, query: str, k: int = 3) -> tuple:
        return self.store.search(self.encoder.encode([query])[0], k)

    def rank_many(self, queries, k: int = 3) -> list:
        """``rank`` for many queries, encoded in batches."""
        return [self.store.search(q, k) for q in self.encoder.encode(list(queries))]

    def search(self, query: str, k: int = 3) -> list:
        _check_query(query, k, "DenseRetriever")
        return _hits(self.store, *self.rank(query, k))


def reciprocal_rank_fusion(rankings, k_rrf: float = 60.0) -> tuple:
    """Fuse rankings (each a sequence of ids, best first) -> ``(ids, scores)`` best first.

    ``score(d) = Σ_r 1 / (k_rrf + rank_r(d))`` with ranks from 1; ties keep the smaller id first.

    >>> reciprocal_rank_fusion([[3, 1], [1, 2]], k_rrf=1)[0].tolist()
    [1, 3, 2]
    """
    if not k_rrf >= 0:
        raise ValueError(f"reciprocal_rank_fusion: k_rrf must be >= 0, got {k_rrf}")
    scores: dict = {}
    for ranking in rankings:
        for r, d in enumerate(ranking, start=1):
            scores[int(d)] = scores.get(int(d), 0.0) + 1.0 / (k_rrf + r)
    ids = sorted(scores, key=lambda d: (-scores[d], d))
    return np.array(ids, dtype=np.int64), np.array([scores[d] for d in ids])


class HybridRetriever:
    """RRF of ``retrievers`` (over the same store); each contributes its top ``depth`` chunks."""

    def __init__(self, retrievers, k_rrf: float = 60.0, depth: int = 50):
        self.retrievers = list(retrievers)
        if len(self.retrievers) < 2:
            raise ValueError(f"HybridRetriever: needs at least 2 retrievers, got {len(self.retrievers)}")
        stores = {id(r.store) for r in self.retrievers}
        if len(stores) != 1 and len({len(r.store) for r in self.retrievers}) != 1:
            raise ValueError("HybridRetriever: the retrievers must search the same chunks")
        self.store = self.retrievers[0].store
        self.k_rrf, self.depth = k_rrf, depth

    def rank(self, query: str, k: int = 3) -> tuple:
        ids, scores = reciprocal_rank_fusion([r.rank(query, max(k, self.depth))[0] for r in self.retrievers], self.k_rrf)
        return ids[:k], scores[:k]

    def search(self, query: str, k: int = 3) -> list:
        _check_query(query, k, "HybridRetriever")
        return _hits(self.store, *self.rank(query, k))
