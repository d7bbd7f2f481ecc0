"""1.4.2 n-gram LMs: worked counts, distributions that sum to one, perplexity, sampling."""
import math

import numpy as np
import pytest

from minillm.classic.ngram import SMOOTHINGS, NGramCounts, NGramLM

V = 12


@pytest.fixture(scope="module")
def stream():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V - 2, size=3000)  # tokens 10 and 11 never occur in training
    ids[::4] = 3  # some structure: every 4th token is 3
    return ids


def test_counts_worked_example():
    c = NGramCounts([1, 2, 1, 2, 3], max_n=2, vocab_size=5)
    o1, o2 = c.order[1], c.order[2]
    assert dict(zip(o1["keys"].tolist(), o1["count"].tolist())) == {1: 2, 2: 2, 3: 1}
    # bigrams (1,2) x2, (2,1), (2,3): codes 1*5+2 = 7, 11, 13
    assert dict(zip(o2["keys"].tolist(), o2["count"].tolist())) == {7: 2, 11: 1, 13: 1}
    assert dict(zip(o2["ctx_keys"].tolist(), o2["ctx_types"].tolist())) == {1: 1, 2: 2}
    # continuation counts: 2 follows only 1; 1 follows only 2; 3 follows only 2
    assert dict(zip(o1["cont_keys"].tolist(), o1["cont"].tolist())) == {1: 1, 2: 1, 3: 1}
    lm = NGramLM(2, 5, "add_k", k=1.0).fit([1, 2, 1, 2, 3])
    assert lm.next_token_probs([1])[2] == pytest.approx((2 + 1) / (2 + 5))  # (c(1,2) + k) / (c(1) + kV)
    mle = NGramLM(2, 5, "stupid_backoff").fit([1, 2, 1, 2, 3])
    assert mle.next_token_probs([2])[1] == pytest.approx(0.5)  # c(2,1)/c(2)
    assert mle.next_token_probs([2])[4] == 0.0  # never seen at all
    assert mle.next_token_probs([2])[2] == pytest.approx(0.4 * 2 / 5)  # backoff to 0.4 * c(2)/N


@pytest.mark.parametrize("smoothing", ["add_k", "kneser_ney"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_probabilities_sum_to_one_for_every_context(stream, smoothing, n):
    lm = NGramLM(n, V, smoothing, k=0.5).fit(stream)
    rng = np.random.default_rng(1)
    contexts = [[], [3], [11], [10, 11, 10, 11]] + [list(stream[i:i + n - 1]) for i in range(0, 60, 7)]
    contexts += [list(rng.integers(0, V, size=n - 1)) for _ in range(5)]
    for ctx in contexts:
        p = lm.next_token_probs(ctx)
        assert p.shape == (V,) and np.all(p > 0), ctx
        assert p.sum() == pytest.approx(1.0, abs=1e-12), ctx
    if n == 2:  # every context of the bigram model, exhaustively
        for h in range(V):
            assert lm.next_token_probs([h]).sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_log_probs_score_each_position_with_its_history(stream, smoothing):
    lm = NGramLM(3, V, smoothing).fit(stream)
    ids = np.concatenate([stream[:30], [11, 10]])
    lp = lm.log_probs(ids)
    with np.errstate(divide="ignore"):  # stupid backoff scores an unseen token 0: log 0 = -inf
        for t in (1, 2, 5, 30, 31):
            np.testing.assert_allclose(lp[t - 1], np.log(lm.next_token_probs(ids[:t])[ids[t]]), rtol=1e-12)


def test_kneser_ney_beats_add_one_and_longer_context_helps(stream):
    train, val = stream[:2400], stream[2400:]
    ppl = {(n, s): NGramLM(n, V, s).fit(train).perplexity(val) for n in (1, 2) for s in ("add_k", "kneser_ney")}
    assert ppl[(2, "kneser_ney")] < ppl[(1, "kneser_ney")]  # the every-4th-token pattern needs context
    assert ppl[(2, "kneser_ney")] < ppl[(2, "add_k")]
    assert all(p < V for p in ppl.values())  # better than a uniform guess


def test_sampling_is_deterministic_and_follows_the_model(stream):
    lm = NGramLM(2, V, "kneser_ney").fit(stream)
    a = lm.generate([3], 50, seed=0)
    assert a == lm.generate([3], 50, seed=0) and len(a) == 50 and all(0 <= t < V for t in a)
    det = NGramLM(2, 4, "stupid_backoff").fit([0, 1, 2, 3] * 50)
    assert det.generate([0], 6, temperature=0.01) == [1, 2, 3, 0, 1, 2]
    assert det.generate([0], 6, eos_token_id=2) == [1, 2]


def test_bad_inputs(stream):
    with pytest.raises(ValueError, match="unknown smoothing 'laplace'"):
        NGramLM(2, V, "laplace")
    with pytest.raises(ValueError, match="n must be in 1..8"):
        NGramLM(0, V)
    with pytest.raises(ValueError, match="token id 12 at position [0-9]+ is outside"):
        NGramLM(2, V).fit([1, 2, 12])
    with pytest.raises(ValueError, match="1-D array of integer"):
        NGramLM(2, V).fit(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="call fit"):
        NGramLM(2, V).next_token_probs([1])
    with pytest.raises(ValueError, match="not probabilities"):
        NGramLM(2, V, "stupid_backoff").fit(stream).perplexity(stream)
    with pytest.raises(ValueError, match="do not fit an int64"):
        NGramCounts([1, 2, 3, 4, 5, 6], max_n=6, vocab_size=100_000)
    with pytest.raises(ValueError, match="cannot serve n=3"):
        NGramLM(3, V).fit(counts=NGramCounts(stream, 2, V))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        NGramLM(2, V).fit(stream).generate([1], 3, temperature=0)
