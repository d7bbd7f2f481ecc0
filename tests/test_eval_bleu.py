"""Corpus BLEU (minillm/eval/bleu.py): worked examples by hand, properties, and parity with sacrebleu."""
import math
import random

import pytest

from minillm.eval.bleu import corpus_bleu, sentence_bleu, tokenize_13a, tokenize_zh


def test_identical_corpus_scores_100():
    hyps = ["the cat sat on the mat .", "a dog ran in the park today ."]
    s = corpus_bleu(hyps, hyps)
    assert s.score == pytest.approx(100.0) and s.bp == 1.0 and s.precisions == [100.0] * 4


def test_worked_example_clipped_unigram_precision():
    # "the" occurs 4 times in the hypothesis but once in the reference: 1 of 4 unigrams counts
    s = corpus_bleu(["the the the the"], ["the cat is here"], smooth_method="none")
    assert s.counts == [1, 0, 0, 0] and s.totals == [4, 3, 2, 1]
    assert s.precisions[0] == 25.0 and s.score == 0.0  # no bigram match and no smoothing -> 0


def test_worked_example_by_hand():
    # hyp: "the cat sat on a mat" (6 tokens); ref: "the cat sat on the mat" (6 tokens)
    # 1-grams: the cat sat on a mat -> 5 of 6 match ('a' does not)
    # 2-grams: the-cat cat-sat sat-on on-a a-mat -> 3 of 5; 3-grams: 2 of 4; 4-grams: 1 of 3
    s = corpus_bleu(["the cat sat on a mat"], ["the cat sat on the mat"])
    assert s.counts == [5, 3, 2, 1] and s.totals == [6, 5, 4, 3] and s.bp == 1.0
    expected = 100 * math.exp((math.log(5 / 6) + math.log(3 / 5) + math.log(2 / 4) + math.log(1 / 3)) / 4)
    assert s.score == pytest.approx(expected, rel=1e-12)  # = 53.73


def test_brevity_penalty_by_hand():
    # a 4-token hypothesis, all of it in the 8-token reference: precisions 1, BP = exp(1 - 8/4)
    s = corpus_bleu(["a b c d"], ["a b c d e f g h"])
    assert s.precisions == [100.0] * 4 and s.bp == pytest.approx(math.exp(-1))
    assert s.score == pytest.approx(100 * math.exp(-1))
    assert corpus_bleu(["a b c d e f g h i j"], ["a b c d e f g h"]).bp == 1.0  # longer: no penalty


def test_corpus_bleu_pools_counts_before_dividing():
    hyps, refs = ["a b c d", "x y z w v"], ["a b c d", "x y q w v"]
    s = corpus_bleu(hyps, refs)
    assert s.counts == [4 + 4, 3 + 2, 2 + 0, 1 + 0]  # x-y and w-v are the only matching bigrams of sentence 2 and s.totals == [9, 7, 5, 3]
    mean_of_sentences = (sentence_bleu(hyps[0], refs[0]).score + sentence_bleu(hyps[1], refs[1]).score) / 2
    assert s.score != pytest.approx(mean_of_sentences)


def test_multiple_references_closest_length_and_max_counts():
    # two reference streams; the second sentence's references have lengths 3 and 5; hyp has 4 tokens:
    # both are 1 away, the tie goes to the shorter (3)
    s = corpus_bleu(["the the cat", "a b c d"], [["the cat", "a b c"], ["the the dog", "a b c d e"]])
    assert s.ref_len == 3 + 3
    assert s.counts[0] == 3 + 4  # "the" counts twice thanks to the second reference of sentence 1


def test_smoothing_methods():
    hyp, ref = ["the cat sat"], ["the cat ran"]  # 2/3 unigrams, 1/2 bigrams, 0/1 trigram; no 4-gram
    exp = corpus_bleu(hyp, ref, smooth_method="exp")
    assert exp.precisions[2] == pytest.approx(100 / (2 * 1))  # first zero order: 1 / (2 · total)
    assert corpus_bleu(hyp, ref, smooth_method="floor").precisions[2] == pytest.approx(100 * 0.1 / 1)
    assert corpus_bleu(hyp, ref, smooth_method="none").score == 0.0


def test_tokenizers():
    assert tokenize_13a("Tom's cat, at 3.5 km.") == "Tom's cat , at 3.5 km ."  # (13a keeps apostrophes)
    assert tokenize_zh("早上，汤姆去了公园。") == "早 上 ， 汤 姆 去 了 公 园 。"
    assert tokenize_zh("汤姆 has 2 cats.") == "汤 姆 has 2 cats ."


def test_bad_inputs():
    with pytest.raises(ValueError, match="reference stream 0 has 1 sentences but there are 2 hypotheses"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="tokenize must be one of"):
        corpus_bleu(["a"], ["a"], tokenize="moses")
    with pytest.raises(ValueError, match="smooth_method must be one of"):
        corpus_bleu(["a"], ["a"], smooth_method="lin")
    with pytest.raises(TypeError, match="hypotheses must be a list of strings"):
        corpus_bleu("a b", ["a b"])


def _random_corpus(rng, words, n):
    def sent():
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
    return [sent() for _ in range(n)], [sent() for _ in range(n)], [sent() for _ in range(n)]


@pytest.mark.parametrize("smooth", ["exp", "none", "floor", "add-k"])
def test_parity_with_sacrebleu(smooth):
    sacrebleu = pytest.importorskip("sacrebleu")
    rng = random.Random(0)
    en = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", ".", ",", "Tom's", "3.5", "went", "home"]
    for trial in range(20):
        hyps, r1, r2 = _random_corpus(rng, en, rng.randint(1, 8))
        for refs in ([r1], [r1, r2]):
            ours = corpus_bleu(hyps, refs, smooth_method=smooth)
            theirs = sacrebleu.corpus_bleu(hyps, refs, smooth_method=smooth)
            assert ours.score == pytest.approx(theirs.score, abs=1e-9), (hyps, refs)
            assert (ours.sys_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
    zh = ["汤姆", "去了", "公园", "。", "，", "早上", "猫", "“", "”", "AI", "2"]
    for trial in range(20):
        hyps, r1, _ = _random_corpus(rng, zh, rng.randint(1, 8))
        hyps, r1 = ["".join(h.split()) for h in hyps], ["".join(r.split()) for r in r1]
        ours = corpus_bleu(hyps, [r1], tokenize="zh", smooth_method=smooth)
        theirs = sacrebleu.corpus_bleu(hyps, [r1], tokenize="zh", smooth_method=smooth)
        assert ours.score == pytest.approx(theirs.score, abs=1e-9), (hyps, r1)
    s = sacrebleu.sentence_bleu("the cat sat", ["the cat sat on the mat"])
    assert sentence_bleu("the cat sat", ["the cat sat on the mat"]).score == pytest.approx(s.score, abs=1e-9)
