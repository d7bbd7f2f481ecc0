"""recall@k and MRR (minillm/eval/retrieval.py): worked examples, a brute-force reference, bad input."""
import numpy as np
import pytest

from minillm.eval import mean_reciprocal_rank, recall_at_k


def test_worked_example():
    rankings, relevant = [[3, 1, 2], [5, 4]], [{1}, {9}]
    assert recall_at_k(rankings, relevant, 1) == 0.0
    assert recall_at_k(rankings, relevant, 2) == 0.5
    assert mean_reciprocal_rank(rankings, relevant) == pytest.approx(0.25)
    assert mean_reciprocal_rank(rankings, relevant, k=1) == 0.0
    assert recall_at_k([[7, 8]], [7], 1) == 1.0  # a single relevant id needs no set
    assert mean_reciprocal_rank([[2, 7, 8]], [[8, 7]]) == pytest.approx(1 / 2)  # the first relevant one counts


def test_against_brute_force():
    rng = np.random.default_rng(0)
    rankings = [list(rng.permutation(20)[:10]) for _ in range(50)]
    relevant = [set(rng.choice(20, size=rng.integers(1, 3), replace=False).tolist()) for _ in range(50)]
    for k in (1, 3, 10):
        ref = np.mean([len(set(r[:k]) & s) > 0 for r, s in zip(rankings, relevant)])
        assert recall_at_k(rankings, relevant, k) == pytest.approx(ref)
    rr = []
    for r, s in zip(rankings, relevant):
        ranks = [i + 1 for i, d in enumerate(r) if d in s]
        rr.append(1 / min(ranks) if ranks else 0.0)
    assert mean_reciprocal_rank(rankings, relevant) == pytest.approx(np.mean(rr))


def test_bad_input():
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k([[1]], [{1}], 0)
    with pytest.raises(ValueError, match="2 rankings but 1 relevant"):
        recall_at_k([[1], [2]], [{1}], 1)
    with pytest.raises(ValueError, match="query 0 has no relevant"):
        mean_reciprocal_rank([[1]], [set()])
    assert recall_at_k([], [], 3) == 0.0
