"""Happy LLM 1.4.1 — word and document vectors: one-hot, bag of words, TF-IDF, cosine search.

Before embeddings were learned, text became vectors by counting:

* **one-hot**: a word is a vector of length V with a single 1 at its vocabulary index;
* **bag of words** (``CountVectorizer``): a document is the sum of its words' one-hot
  vectors, i.e. the count of each vocabulary word (order is lost);
* **TF-IDF** (``TfidfVectorizer``): counts re-weighted so that words frequent in *this*
  document but rare in the collection matter most::

      tf(t, d)  = count of t in d                (sublinear_tf: 1 + ln count, for count > 0)
      idf(t)    = ln(n / df(t)) + 1              (smooth_idf: ln((1 + n) / (1 + df(t))) + 1,
                                                  as if one extra document held every word once)
      tfidf     = tf * idf, then each row scaled to unit L2 norm (norm="l2")

  These are scikit-learn's definitions (tested equal to its ``TfidfVectorizer``).
* **cosine similarity** ranks documents for a query (``DocumentSearch``): the dot product
  of L2-normalised TF-IDF rows, the classic sparse baseline of retrieval (7.2 RAG).

Any tokenizer works: a callable ``str -> list[str]``, or a minillm tokenizer (its token
strings are used). The default lowercases and splits words, and Chinese into characters.
Vectors are dense NumPy arrays (n_docs, V): plain to read, fine for the small collections here.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import regex

__all__ = ["default_tokenize", "one_hot", "CountVectorizer", "TfidfVectorizer", "cosine_similarity", "DocumentSearch"]

_WORD_RE = regex.compile(r"\p{Han}|[^\s\p{P}\p{S}\p{Han}]+")


def default_tokenize(text: str) -> List[str]:
    """Lowercased words, each Chinese character a word, punctuation dropped.

    >>> default_tokenize("Tom saw a Cat. 汤姆看到了猫。")
    ['tom', 'saw', 'a', 'cat', '汤', '姆', '看', '到', '了', '猫']
    """
    return _WORD_RE.findall(text.lower())


def _as_tokenize(tokenizer) -> Callable[[str], List[str]]:
    if tokenizer is None:
        return default_tokenize
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "id_to_token"):  # a minillm tokenizer
        return lambda text: [tokenizer.id_to_token(i) for i in tokenizer.encode(text, allowed_special="none")]
    if callable(tokenizer):
        return tokenizer
    raise TypeError(f"tokenizer must be a callable str -> list[str] or a minillm tokenizer, got {type(tokenizer).__name__}")


def one_hot(tokens: Sequence[str], vocabulary: dict) -> np.ndarray:
    """(len(tokens), V) one-hot rows; a token outside ``vocabulary`` is a row of zeros.

    >>> one_hot(["b", "a", "z"], {"a": 0, "b": 1}).tolist()
    [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]
    """
    out = np.zeros((len(tokens), len(vocabulary)))  # (T, V)
    for row, t in enumerate(tokens):
        j = vocabulary.get(t)
        if j is not None:
            out[row, j] = 1.0
    return out


def _check_docs(docs, fn: str) -> list:
    if isinstance(docs, str):
        raise TypeError(f"{fn}: expected a list of documents, got a single str")
    docs = list(docs)
    for i, d in enumerate(docs):
        if not isinstance(d, str):
            raise TypeError(f"{fn}: document {i} must be a str, got {type(d).__name__}")
    return docs


class CountVectorizer:
    """Bag of words: document -> vector of word counts (``binary=True``: presence 0/1).

    The vocabulary is every token seen by ``fit``, sorted (scikit-learn's order);
    ``min_df`` drops tokens found in fewer documents.

    >>> cv = CountVectorizer().fit(["the cat saw the dog"])
    >>> cv.vocabulary_, cv.transform(["the dog and the dog"]).tolist()
    ({'cat': 0, 'dog': 1, 'saw': 2, 'the': 3}, [[0.0, 2.0, 0.0, 2.0]])
    """

    def __init__(self, tokenizer=None, binary: bool = False, min_df: int = 1):
        self.tokenize = _as_tokenize(tokenizer)
        self.binary, self.min_df = bool(binary), int(min_df)
        if self.min_df < 1:
            raise ValueError(f"min_df must be >= 1, got {min_df}")
        self.vocabulary_: Optional[dict] = None

    def _counts(self, docs) -> List[Counter]:
        return [Counter(self.tokenize(d)) for d in docs]

    def fit(self, docs: Sequence[str]):
        docs = _check_docs(docs, f"{type(self).__name__}.fit")
        counts = self._counts(docs)
        df = Counter()
        for c in counts:
            df.update(c.keys())
        vocab = sorted(t for t, n in df.items() if n >= self.min_df)
        if not vocab:
            raise ValueError(f"{type(self).__name__}.fit: the documents contain no tokens (after min_df={self.min_df})")
        self.vocabulary_ = {t: i for i, t in enumerate(vocab)}
        self._fit_extra(counts, len(docs))
        return self

    def _fit_extra(self, counts, n_docs):
        pass

    def _count_matrix(self, docs) -> np.ndarray:
        if self.vocabulary_ is None:
            raise RuntimeError(f"{type(self).__name__}: call fit() before transform()")
        docs = _check_docs(docs, f"{type(self).__name__}.transform")
        X = np.zeros((len(docs), len(self.vocabulary_)))  # (n_docs, V)
        for i, c in enumerate(self._counts(docs)):
            for t, n in c.items():
                j = self.vocabulary_.get(t)
                if j is not None:
                    X[i, j] = n
        return X

    def transform(self, docs: Sequence[str]) -> np.ndarray:
        X = self._count_matrix(docs)
        return (X > 0).astype(np.float64) if self.binary else X

    def fit_transform(self, docs: Sequence[str]) -> np.ndarray:
        return self.fit(docs).transform(docs)

    def get_feature_names_out(self) -> List[str]:
        return list(self.vocabulary_)


class TfidfVectorizer(CountVectorizer):
    """TF-IDF with scikit-learn's options and defaults: ``sublinear_tf=False``,
    ``smooth_idf=True``, ``norm="l2"`` (or None).

    >>> tv = TfidfVectorizer(smooth_idf=False).fit(["cat dog", "cat"])
    >>> tv.idf_.round(4).tolist()   # ln(2/2) + 1 for cat, ln(2/1) + 1 for dog
    [1.0, 1.6931]
    """

    def __init__(self, tokenizer=None, sublinear_tf: bool = False, smooth_idf: bool = True, norm: Optional[str] = "l2",
                 min_df: int = 1):
        super().__init__(tokenizer, binary=False, min_df=min_df)
        if norm not in ("l2", None):
            raise ValueError(f"norm must be 'l2' or None, got {norm!r}")
        self.sublinear_tf, self.smooth_idf, self.norm = bool(sublinear_tf), bool(smooth_idf), norm
        self.idf_: Optional[np.ndarray] = None

    def _fit_extra(self, counts, n_docs):
        df = np.zeros(len(self.vocabulary_))
        for c in counts:
            for t in c:
                j = self.vocabulary_.get(t)
                if j is not None:
                    df[j] += 1
        if self.smooth_idf:
            self.idf_ = np.log((1 + n_docs) / (1 + df)) + 1.0
        else:
            self.idf_ = np.log(n_docs / df) + 1.0

    def transform(self, docs: Sequence[str]) -> np.ndarray:
        tf = self._count_matrix(docs)  # (n_docs, V)
        if self.sublinear_tf:
            tf = np.where(tf > 0, 1.0 + np.log(np.maximum(tf, 1.0)), 0.0)
        X = tf * self.idf_  # (n_docs, V) * (V,)
        if self.norm == "l2":
            n = np.linalg.norm(X, axis=1, keepdims=True)
            X = X / np.where(n > 0, n, 1.0)  # an empty document stays a zero row
        return X


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) cosine similarities of the rows of a (n, d) and b (m, d); zero rows give 0.

    >>> cosine_similarity(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0], [0.0, 0.0]])).round(4).tolist()
    [[0.7071, 0.0]]
    """
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"cosine_similarity: feature sizes differ, {a.shape} vs {b.shape}")
    na, nb = np.linalg.norm(a, axis=1, keepdims=True), np.linalg.norm(b, axis=1, keepdims=True)
    return (a / np.where(na > 0, na, 1)) @ (b / np.where(nb > 0, nb, 1)).T  # (n, d) @ (d, m) -> (n, m)


class DocumentSearch:
    """Rank documents for a query by cosine similarity of their vectors (TF-IDF by default).

    >>> s = DocumentSearch(["Tom went to the park.", "Amy bought a red cup.", "Tom saw a cat."])
    >>> [i for i, _ in s.search("Where did Tom go? the park", k=2)]
    [0, 2]
    """

    def __init__(self, docs: Sequence[str], vectorizer: Optional[CountVectorizer] = None):
        self.docs = _check_docs(docs, "DocumentSearch")
        if not self.docs:
            raise ValueError("DocumentSearch: needs at least one document")
        self.vectorizer = vectorizer if vectorizer is not None else TfidfVectorizer()
        self.matrix = self.vectorizer.fit_transform(self.docs)  # (n_docs, V)

    def search(self, query: str, k: int = 5) -> List[Tuple[int, float]]:
        """The top-``k`` (document index, cosine score), best first (ties: lower index first)."""
        if k < 1:
            raise ValueError(f"DocumentSearch.search: k must be >= 1, got {k}")
        q = self.vectorizer.transform([query])  # (1, V)
        scores = cosine_similarity(q, self.matrix)[0]  # (n_docs,)
        order = np.lexsort((np.arange(len(scores)), -scores))[:k]
        return [(int(i), float(scores[i])) for i in order]
