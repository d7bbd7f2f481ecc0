"""Retrieval metrics (Happy LLM 7.2, measuring a retriever): recall@k and mean reciprocal rank.

For each query the retriever returns a ranking (ids, best first) and the benchmark knows the
set of relevant ids (usually one passage, sometimes several that all hold the answer):

=====================  ======================================================================
``recall_at_k``        share of queries with at least one relevant id in the top k ("hit rate",
                       the usual RAG recall@k: the reader sees the answer if any relevant
                       passage is among the k it is given)
``mean_reciprocal_rank``  mean over queries of 1 / (rank of the first relevant id), 0 if none
                       is ranked (MRR; ``k`` cuts the ranking, MRR@k)
=====================  ======================================================================

Worked example (tested): rankings [[3, 1, 2], [5, 4]], relevant [{1}, {9}] ->
recall@1 = 0, recall@2 = 0.5, MRR = (1/2 + 0) / 2 = 0.25.
"""
from __future__ import annotations

from typing import Optional, Sequence

__all__ = ["recall_at_k", "mean_reciprocal_rank"]


def _relevant_sets(rankings, relevant, who):
    rankings, relevant = list(rankings), list(relevant)
    if len(rankings) != len(relevant):
        raise ValueError(f"{who}: {len(rankings)} rankings but {len(relevant)} relevant sets")
    sets = []
    for i, r in enumerate(relevant):
        s = {r} if isinstance(r, (int, str)) else set(r)
        if not s:
            raise ValueError(f"{who}: query {i} has no relevant id")
        sets.append(s)
    return rankings, sets


def recall_at_k(rankings: Sequence[Sequence], relevant: Sequence, k: int) -> float:
    """Share of queries whose top ``k`` ids contain a relevant one.

    >>> recall_at_k([[3, 1, 2], [5, 4]], [{1}, {9}], k=2)
    0.5
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"recall_at_k: k must be an int >= 1, got {k!r}")
    rankings, sets = _relevant_sets(rankings, relevant, "recall_at_k")
    if not rankings:
        return 0.0
    return sum(any(d in s for d in list(r)[:k]) for r, s in zip(rankings, sets)) / len(rankings)


def mean_reciprocal_rank(rankings: Sequence[Sequence], relevant: Sequence, k: Optional[int] = None) -> float:
    """Mean of 1 / rank of the first relevant id (0 when none is in the top ``k``, or ranked at all).

    >>> mean_reciprocal_rank([[3, 1, 2], [5, 4]], [{1}, {9}])
    0.25
    """
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ValueError(f"mean_reciprocal_rank: k must be None or an int >= 1, got {k!r}")
    rankings, sets = _relevant_sets(rankings, relevant, "mean_reciprocal_rank")
    if not rankings:
        return 0.0
    total = 0.0
    for r, s in zip(rankings, sets):
        for rank, d in enumerate(list(r)[:k] if k else list(r), start=1):
            if d in s:
                total += 1.0 / rank
                break
    return total / len(rankings)
