"""The vector store (Happy LLM 7.2.2, TinyRAG ``VectorBase.py``: ``VectorStore``).

The book's ``VectorStore`` keeps the chunks and their embedding vectors, ``persist``s them as
JSON, ``load_vector``s them back and ``query``s by cosine similarity, one Python call per
stored vector. Ours keeps the same names and does the search as one matrix product:

==================  ==========================================================================
``add``             append chunks (and their vectors); each gets a stable integer id
``get_vector``      the book's name: embed every chunk with an embedding model
``search(q, k)``    exact cosine search: the stored vectors are unit length, so the scores are
                    ``V @ q`` (N,); ``np.argpartition`` finds the k best in O(N), only those k
                    are sorted
``query``           the book's: question text -> the k best chunk texts
``delete(ids)``     remove chunks by id
``persist(path)``   ``store.json`` (chunks, ids, which embedding model) + ``vectors.safetensors``
                    (float32); data only, nothing executable
``load_vector``     read them back; refuses a store built by another embedding model or of
                    another dimension, since its vectors would be compared with the wrong space
``build_ann()``     optional: an approximate-nearest-neighbour index (HNSW from ``faiss-cpu``);
                    ``search`` then answers from it; ``drop_ann()`` goes back to exact search
==================  ==========================================================================

Brute force is exact and, at 100k chunks of 128 floats, a few milliseconds per query on an idle
machine (``benchmarks/rag.py``); an approximate index (HNSW) only pays beyond that, so it is
optional and ``faiss`` is imported only when one is built.

The ANN index and the store stay consistent this way: ``add`` appends the new vectors to the
HNSW graph (faiss numbers them in order, so a graph label is a row of ``vectors``); ``delete``
marks the graph stale (HNSW cannot remove nodes) and the next ``search`` rebuilds it from the
remaining vectors. ``persist`` writes only the index's parameters into ``store.json``;
``load_vector`` rebuilds the graph from ``vectors.safetensors`` (no faiss index file is written).
"""
from __future__ import annotations

import json
import os

import numpy as np

from .._files import atomic_write
from ..io.jsonfile import read_json_object
from ..io.safetensors import load_safetensors, save_safetensors
from .chunking import Chunk

__all__ = ["VectorStore", "STORE_NAME", "VECTORS_NAME", "ANN_METHODS"]

STORE_NAME = "store.json"
VECTORS_NAME = "vectors.safetensors"
_FORMAT = "minillm-rag-store"
ANN_METHODS = ("faiss-hnsw",)


def _import_faiss():
    """faiss, imported on demand: it is optional, never needed for exact search."""
    try:
        import faiss
    except ImportError as e:
        raise ImportError("VectorStore.build_ann: the approximate index needs faiss; install it with "
                          "`pip install faiss-cpu` (or use exact search, the default)") from e
    return faiss


def _check_ann_params(method, M, ef_construction, ef_search) -> dict:
    if method not in ANN_METHODS:
        raise ValueError(f"VectorStore.build_ann: method must be one of {ANN_METHODS}, got {method!r}")
    for name, v, lo in (("M", M, 2), ("ef_construction", ef_construction, 1), ("ef_search", ef_search, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"VectorStore.build_ann: {name} must be an int >= {lo}, got {v!r}")
    return {"method": method, "M": M, "ef_construction": ef_construction, "ef_search": ef_search}


def _embedding_meta(model) -> dict:
    """What a store records about its embedding model: name, dimension, weights fingerprint."""
    dim = int(getattr(model, "config").hidden_size) if hasattr(model, "config") else int(model.dim)
    return {"name": type(model).__name__, "dim": dim, "fingerprint": str(model.fingerprint)}


class VectorStore:
    """``VectorStore(document=chunks)``: chunks plus, once embedded, their unit vectors (N, D)."""

    def __init__(self, document=None) -> None:
        self.document: list = []
        self.ids = np.zeros(0, dtype=np.int64)
        self.vectors: np.ndarray | None = None
        self.embedding: dict | None = None
        self._next_id = 0
        self.ann: dict | None = None  # the ANN index's parameters (build_ann), None: exact search
        self._ann_index = None        # the faiss index; None with self.ann set: stale, rebuilt on search
        if document:
            self.add(document)

    def __len__(self) -> int:
        return len(self.document)

    # ------------------------------------------------------------------ adding
    def add(self, chunks, vectors=None) -> np.ndarray:
        """Append ``chunks`` (``Chunk`` or plain strings) and, if the store holds vectors, their
        ``vectors`` (n, D). Returns the new ids."""
        chunks = [c if isinstance(c, Chunk) else Chunk(str(c), "", 0, len(str(c))) for c in chunks]
        if vectors is None and self.vectors is not None and len(self.document):
            raise ValueError("VectorStore.add: this store holds vectors; pass the new chunks' vectors too")
        if vectors is not None:
            v = self._check_vectors(vectors, len(chunks))
            if self.vectors is None and len(self.document):
                raise ValueError("VectorStore.add: the store's earlier chunks have no vectors (call get_vector first)")
            self.vectors = v if self.vectors is None else np.concatenate([self.vectors, v])
            if self._ann_index is not None:
                self._ann_index.add(v)  # appended in order: graph label == row of self.vectors
        new = np.arange(self._next_id, self._next_id + len(chunks), dtype=np.int64)
        self._next_id += len(chunks)
        self.document.extend(chunks)
        self.ids = np.concatenate([self.ids, new])
        return new

    def _check_vectors(self, vectors, n: int) -> np.ndarray:
        v = np.asarray(vectors)
        if v.ndim != 2 or v.shape[0] != n:
            raise ValueError(f"VectorStore: vectors must have shape ({n}, dim), got {v.shape}")
        if self.vectors is not None and v.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"VectorStore: vectors have dimension {v.shape[1]}, the store has {self.vectors.shape[1]}")
        if not np.isfinite(v).all():
            raise ValueError("VectorStore: vectors contain NaN or inf")
        v = v.astype(np.float32)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        return v / np.maximum(norms, 1e-12)  # unit length: dot product = cosine

    def get_vector(self, EmbeddingModel, batch_size: int = 64) -> np.ndarray:
        """The book's ``get_vector``: embed every chunk with ``EmbeddingModel`` (``.encode``)."""
        self.embedding = _embedding_meta(EmbeddingModel)
        self.vectors = None
        self._ann_index = None  # new vectors: the graph is rebuilt on the next search
        self.vectors = self._check_vectors(EmbeddingModel.encode([c.text for c in self.document], batch_size),
                                           len(self.document))
        return self.vectors

    # ------------------------------------------------------------------ searching
    def check_model(self, EmbeddingModel) -> None:
        """Refuse an embedding model other than the one that built the vectors (ValueError)."""
        if self.embedding is None or self.vectors is None:
            raise ValueError("VectorStore: this store has no vectors (build it with get_vector)")
        got = _embedding_meta(EmbeddingModel)
        if got["dim"] != self.embedding["dim"]:
            raise ValueError(f"VectorStore: the store's vectors have dimension {self.embedding['dim']}, the embedding "
                             f"model gives {got['dim']}")
        if got != self.embedding:
            raise ValueError(f"VectorStore: the store was built with embedding model {self.embedding}, not {got}; "
                             "re-index with this model")

    # ------------------------------------------------------------------ approximate index
    def build_ann(self, method: str = "faiss-hnsw", M: int = 32, ef_construction: int = 80,
                  ef_search: int = 64) -> "VectorStore":
        """Build an approximate-nearest-neighbour index over the stored vectors; ``search`` then
        answers from it. ``faiss-hnsw``: faiss ``IndexHNSWFlat`` with inner-product metric (the
        vectors are unit length, so inner product = cosine); ``M`` graph neighbours per node,
        ``ef_construction`` / ``ef_search`` candidate-list lengths while building / searching
        (larger: better recall, slower; ``store.ann["ef_search"]`` may be changed between searches,
        no rebuild needed). Needs ``pip install faiss-cpu`` (ImportError otherwise)."""
        params = _check_ann_params(method, M, ef_construction, ef_search)
        if self.vectors is None:
            raise ValueError("VectorStore.build_ann: this store has no vectors (build it with get_vector)")
        _import_faiss()
        self.ann = params
        self._ann_index = None
        self._ann()  # build now, so the cost is paid here rather than by the first query
        return self

    def drop_ann(self) -> None:
        """Forget the approximate index: ``search`` is exact again."""
        self.ann, self._ann_index = None, None

    def _ann(self):
        """The faiss index, (re)built from ``self.vectors`` if it is missing or stale."""
        if self._ann_index is None:
            faiss = _import_faiss()
            a = self.ann
            index = faiss.IndexHNSWFlat(self.vectors.shape[1], a["M"], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = a["ef_construction"]
            index.hnsw.efSearch = a["ef_search"]
            index.add(np.ascontiguousarray(self.vectors))
            self._ann_index = index
        return self._ann_index

    def search(self, query_vector, k: int = 3) -> tuple:
        """``(positions, scores)`` of the ``k`` stored vectors most similar to ``query_vector`` (D,),
        best first. Exact: one (N, D) @ (D,) product and an ``argpartition``; with an ANN index
        (``build_ann``), the index's answer (approximate: it may miss some of the true k best)."""
        if self.vectors is None:
            raise ValueError("VectorStore.search: this store has no vectors (build it with get_vector)")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"VectorStore.search: k must be an int >= 1, got {k!r}")
        q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.vectors.shape[1]:
            raise ValueError(f"VectorStore.search: query has dimension {q.shape[0]}, the store {self.vectors.shape[1]}")
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        if self.ann is not None and len(self.vectors):
            index = self._ann()
            index.hnsw.efSearch = max(self.ann["ef_search"], k)  # HNSW returns at most efSearch hits
            scores, labels = index.search(q[None, :], min(k, len(self.vectors)))  # (1, k) each
            found = labels[0] >= 0  # -1: fewer than k reachable
            pos, sc = labels[0][found].astype(np.int64), scores[0][found]
            order = np.lexsort((pos, -sc))  # best first, ties by position as in exact search
            return pos[order], sc[order]
        scores = self.vectors @ q  # (N, D) @ (D,) -> (N,) cosines
        k = min(k, len(scores))
        part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        order = part[np.lexsort((part, -scores[part]))]
        return order, scores[order]

    def get_similarity(self, vector1, vector2) -> float:
        """The book's name: cosine similarity of two vectors."""
        a, b = np.asarray(vector1, np.float32), np.asarray(vector2, np.float32)
        return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))

    def query(self, query: str, EmbeddingModel, k: int = 1) -> list:
        """The book's ``query``: the texts of the ``k`` chunks closest to ``query``."""
        self.check_model(EmbeddingModel)
        pos, _ = self.search(EmbeddingModel.encode([query])[0], k)
        return [self.document[i].text for i in pos]

    # ------------------------------------------------------------------ deleting
    def delete(self, ids) -> int:
        """Remove the chunks with these ids; returns how many were removed. Unknown ids: ValueError."""
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64).reshape(-1)
        unknown = np.setdiff1d(ids, self.ids)
        if unknown.size:
            raise ValueError(f"VectorStore.delete: unknown ids {unknown[:10].tolist()}")
        keep = ~np.isin(self.ids, ids)
        self.document = [c for c, k in zip(self.document, keep) if k]
        self.ids = self.ids[keep]
        if self.vectors is not None:
            self.vectors = self.vectors[keep]
        if (~keep).any():
            self._ann_index = None  # HNSW cannot remove nodes: rebuilt from the kept vectors on the next search
        return int((~keep).sum())

    # ------------------------------------------------------------------ files
    def persist(self, path: str = "storage") -> None:
        """Write ``path/store.json`` and (with vectors) ``path/vectors.safetensors``."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        vec_path = os.path.join(path, VECTORS_NAME)
        if self.vectors is not None:
            save_safetensors({"vectors": self.vectors, "ids": self.ids}, vec_path, metadata={"format": _FORMAT})
        elif os.path.exists(vec_path):
            os.remove(vec_path)  # stale vectors of an earlier store must not be read back with these chunks
        meta = {
            "format": _FORMAT, "version": 1, "count": len(self.document), "next_id": self._next_id,
            "embedding": self.embedding, "has_vectors": self.vectors is not None, "ann": self.ann,
            "ids": self.ids.tolist(), "document": [c.to_dict() for c in self.document],
        }
        atomic_write(os.path.join(path, STORE_NAME), json.dumps(meta, ensure_ascii=False) + "\n")

    @classmethod
    def load_vector(cls, path: str = "storage", EmbeddingModel=None) -> "VectorStore":
        """Read a store written by ``persist``. With ``EmbeddingModel``, refuse (ValueError) a store
        whose vectors another model (or dimension) made."""
        path = os.fspath(path)
        store_file = os.path.join(path, STORE_NAME)
        meta = read_json_object(store_file, f" (is {path} a folder written by VectorStore.persist?)")
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{store_file}: not a minillm RAG store (format {meta.get('format')!r})")
        docs, ids = meta.get("document"), meta.get("ids")
        if not isinstance(docs, list) or not isinstance(ids, list) or len(docs) != len(ids):
            raise ValueError(f"{store_file}: 'document' and 'ids' must be lists of the same length")
        store = cls()
        store.document = [Chunk.from_dict(d, f"{store_file}: chunk {i}") for i, d in enumerate(docs)]
        store.ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        store._next_id = int(meta.get("next_id", len(docs)))
        store.embedding = meta.get("embedding")
        if meta.get("has_vectors"):
            vec_file = os.path.join(path, VECTORS_NAME)
            tensors = load_safetensors(vec_file)
            v = tensors.get("vectors")
            if v is None or v.ndim != 2 or v.shape[0] != len(docs) or v.dtype != np.float32:
                raise ValueError(f"{vec_file}: expected float32 'vectors' of shape ({len(docs)}, dim), got "
                                 f"{None if v is None else (v.dtype, v.shape)}")
            if not isinstance(store.embedding, dict) or store.embedding.get("dim") != v.shape[1]:
                raise ValueError(f"{store_file}: embedding {store.embedding} does not describe vectors of dimension "
                                 f"{v.shape[1]}")
            if not np.array_equal(tensors.get("ids"), store.ids):
                raise ValueError(f"{vec_file}: its ids differ from {store_file}'s")
            store.vectors = v
        if EmbeddingModel is not None:
            store.check_model(EmbeddingModel)
        ann = meta.get("ann")
        if ann is not None:
            if not isinstance(ann, dict):
                raise ValueError(f"{store_file}: 'ann' must be an object or null, got {ann!r}")
            try:
                params = _check_ann_params(ann.get("method"), ann.get("M"), ann.get("ef_construction"),
                                           ann.get("ef_search"))
            except ValueError as e:
                raise ValueError(f"{store_file}: bad 'ann' entry: {e}") from None
            if store.vectors is not None:
                store.build_ann(**params)  # the graph is rebuilt from the vectors, never read from a file
        return store
