"""BM25 (Okapi), the sparse retriever (Happy LLM 7.2: "检索" by keywords), vectorised over a CSR matrix.

For a query q with terms t and a document d of length |d| (tokens), average length avgdl::

    score(q, d) = Σ_t  idf(t) · tf(t, d) · (k1 + 1) / (tf(t, d) + k1 · (1 − b + b · |d| / avgdl))
    idf(t)      = ln((N − n(t) + 0.5) / (n(t) + 0.5))          N documents, n(t) of them contain t

``k1`` (default 1.5) saturates repeated terms: the 10th "tom" adds less than the 2nd. ``b``
(default 0.75) normalises by length: a long chunk does not win only because it has more words.
A term in more than half the documents has a negative idf; as ``rank_bm25.BM25Okapi`` (the
library the book's ecosystem uses) it is floored at ``epsilon · mean idf``, so the scores here
equal ``rank_bm25``'s on the same tokens (``tests/test_rag.py``). A term repeated in the query
counts once per repetition, as there.

The index: the fraction above depends only on (t, d), so it is computed once for every
(term, document) pair and stored, multiplied by idf(t), as a sparse matrix in CSR form with one
row per term (``indptr``, ``indices`` = document ids, ``data`` = weights). A query's scores are
then the sum of its terms' rows: gather the rows' slices and ``np.bincount`` them into N
scores, with no Python loop over documents.

``bm25_tokenize`` lowercases, keeps runs of letters/digits as words and every Chinese character
as a token (Chinese has no spaces; character unigrams are the usual BM25 baseline for it).
"""
from __future__ import annotations

import numpy as np
import regex

__all__ = ["BM25", "bm25_tokenize"]

_WORD = regex.compile(r"\p{Han}|[^\W_]+")


def bm25_tokenize(text: str) -> list:
    """Lowercased words and Chinese characters.

    >>> bm25_tokenize("Tom's red Umbrella, 汤姆的伞")
    ['tom', 's', 'red', 'umbrella', '汤', '姆', '的', '伞']
    """
    return _WORD.findall(text.casefold())


class BM25:
    """``BM25(corpus_tokens, k1=1.5, b=0.75, epsilon=0.25)``: an Okapi BM25 index.

    ``corpus_tokens``: one list of tokens per document. ``get_scores(query_tokens)`` -> (N,)
    float64 scores; ``top_k(query_tokens, k)`` -> (ids, scores) best first.
    """

    def __init__(self, corpus_tokens, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25):
        for name, v in (("k1", k1), ("b", b), ("epsilon", epsilon)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
                raise ValueError(f"BM25: {name} must be a finite number, got {v!r}")
        if k1 < 0:
            raise ValueError(f"BM25: k1 must be >= 0, got {k1}")
        if not 0 <= b <= 1:
            raise ValueError(f"BM25: b must be in [0, 1], got {b}")
        corpus_tokens = list(corpus_tokens)
        for i, doc in enumerate(corpus_tokens):
            if isinstance(doc, str) or not all(isinstance(t, str) for t in doc):
                raise TypeError(f"BM25: document {i} must be a list of token strings, got {type(doc).__name__}"
                                + (" (a str: tokenize it first, e.g. with bm25_tokenize)" if isinstance(doc, str) else ""))
        if not corpus_tokens:
            raise ValueError("BM25: the corpus is empty")
        self.k1, self.b, self.epsilon = float(k1), float(b), float(epsilon)
        self.corpus_size = N = len(corpus_tokens)
        self.vocab: dict = {}
        lengths = np.array([len(d) for d in corpus_tokens], dtype=np.int64)
        setdefault = self.vocab.setdefault
        flat = np.fromiter((setdefault(t, len(self.vocab)) for doc in corpus_tokens for t in doc), dtype=np.int64,
                           count=int(lengths.sum()))  # (total tokens,) term ids
        self.doc_len = lengths.astype(np.float64)  # (N,)
        self.avgdl = float(self.doc_len.mean())
        V = len(self.vocab)
        # (term, doc) pairs and their counts tf, sorted by term: the CSR rows
        doc_of = np.repeat(np.arange(N, dtype=np.int64), lengths)  # (total tokens,)
        pair, tf = np.unique(flat * N + doc_of, return_counts=True)  # sorted by term, then document
        term, doc = pair // N, pair % N
        df = np.bincount(term, minlength=V).astype(np.float64)  # (V,) documents containing each term
        idf = np.log(N - df + 0.5) - np.log(df + 0.5)
        if V:
            idf[idf < 0] = self.epsilon * idf.mean()  # rank_bm25's floor for terms in > half the documents
        self.idf = idf
        if self.avgdl > 0:
            norm = self.k1 * (1 - self.b + self.b * self.doc_len[doc] / self.avgdl)
        else:
            norm = np.full(len(doc), self.k1)
        self.data = idf[term] * tf * (self.k1 + 1) / (tf + norm)  # (nnz,) weight of term t in document d
        self.indices = doc  # (nnz,) document ids
        self.indptr = np.concatenate([[0], np.cumsum(df.astype(np.int64))])  # (V + 1,) row t = [indptr[t], indptr[t+1])

    def get_scores(self, query_tokens) -> np.ndarray:
        """BM25 score of every document for ``query_tokens``: (N,) float64."""
        if isinstance(query_tokens, str):
            raise TypeError("BM25.get_scores: expected a list of tokens, got a str (tokenize it first)")
        ids = [self.vocab[t] for t in query_tokens if t in self.vocab]
        if not ids:
            return np.zeros(self.corpus_size)
        rows = np.array(ids, dtype=np.int64)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        # positions of all the query rows' entries, without a Python loop over documents
        pos = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
        return np.bincount(self.indices[pos], weights=self.data[pos], minlength=self.corpus_size)

    def top_k(self, query_tokens, k: int) -> tuple:
        """``(ids, scores)`` of the ``k`` best documents, best first (ties: lower id first)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"BM25.top_k: k must be an int >= 1, got {k!r}")
        scores = self.get_scores(query_tokens)
        k = min(k, len(scores))
        part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        order = part[np.lexsort((part, -scores[part]))]
        return order, scores[order]
