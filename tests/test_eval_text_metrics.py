"""Each text metric of minillm.eval on worked examples, plus parity with rouge-score when present."""
import math
import random

import pytest

from minillm.eval.text_metrics import (
    final_number, lcs_length, number_match, pass_at_k, rouge_l, rouge_tokenize, squad_normalize, squad_tokens, token_f1,
)
from minillm.eval.tasks import METRICS


# ----------------------------------------------------------------------------- SQuAD normalisation and F1
@pytest.mark.parametrize("text, expected", [
    ("The Market.", "market"),                   # lowercase, punctuation, article
    ("  a   cat,  an owl & the  dog ", "cat owl dog"),
    ("theatre", "theatre"),                      # "the" only as a whole word
    ("Tom's  hat!!", "toms hat"),                # SQuAD drops the apostrophe without a space
    ("", ""),
])
def test_squad_normalize_worked_examples(text, expected):
    assert squad_normalize(text) == expected


def test_squad_tokens_split_chinese_into_characters_and_drop_its_punctuation():
    assert squad_tokens("一只猫。") == ["一", "只", "猫"]
    assert squad_tokens("Tom在公园，看到了猫") == ["tom", "在", "公", "园", "看", "到", "了", "猫"]
    assert squad_tokens("the big red ball.") == ["big", "red", "ball"]


def test_token_f1_worked_examples():
    # pred {cat, sat}, ref {cat, sat, down}: P = 1, R = 2/3, F1 = 2·(2/3)/(5/3) = 0.8
    assert token_f1("the cat sat", ["a cat sat down"]) == pytest.approx(0.8)
    # repeated tokens count as a multiset: pred [red, red], ref [red]: P = 1/2, R = 1, F1 = 2/3
    assert token_f1("red red", ["red"]) == pytest.approx(2 / 3)
    assert token_f1("the market.", ["The Market"]) == 1.0
    assert token_f1("park", ["market"]) == 0.0
    assert token_f1("", [""]) == 0.0  # SQuAD v1.1: no common token scores 0, even for two empty answers
    # the maximum over references
    assert token_f1("a dog", ["a cat", "the dog"]) == 1.0
    # Chinese by characters: [一, 只, 猫] vs [一, 只, 狗]: 2 shared of 3 and 3
    assert token_f1("一只猫。", ["一只狗。"]) == pytest.approx(2 / 3)
    assert token_f1("x", "x") == 1.0  # a bare string is one reference


def test_token_f1_bad_references():
    with pytest.raises(ValueError, match="at least one reference"):
        token_f1("a", [])
    with pytest.raises(TypeError, match="references must be str"):
        token_f1("a", [3])
    with pytest.raises(TypeError, match="expects a str"):
        squad_normalize(None)


# ----------------------------------------------------------------------------- ROUGE-L
def test_lcs_length_worked_examples():
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # CLRS: "BCBA"
    assert lcs_length([], [1, 2]) == 0
    assert lcs_length([1, 2, 3], [1, 2, 3]) == 3
    assert lcs_length([1, 2, 3], [3, 2, 1]) == 1


def test_rouge_l_worked_examples():
    # the example of Lin (2004): LCS("police kill the gunman", "police killed the gunman") = 3 of 4
    r = rouge_l("police killed the gunman", "police kill the gunman")
    assert r == pytest.approx({"precision": 0.75, "recall": 0.75, "fmeasure": 0.75})
    # reference 6 tokens, prediction 3, LCS 3 ("the cat mat"): P = 1, R = 1/2, F = 2/3
    r = rouge_l("The cat, the mat.", "the cat sat on the mat")
    assert rouge_tokenize("The cat, the mat.") == ["the", "cat", "the", "mat"]
    r = rouge_l("the cat mat", "the cat sat on the mat")
    assert r == pytest.approx({"precision": 1.0, "recall": 0.5, "fmeasure": 2 / 3})
    assert rouge_l("", "the cat")["fmeasure"] == 0.0
    assert rouge_l("猫", "猫")["fmeasure"] == 0.0  # rouge-score's tokeniser drops Chinese ...
    zh = rouge_l("一只猫", "一只狗", tokenizer=lambda s: rouge_tokenize(s, cjk=True))  # ... our cjk option keeps it
    assert zh["fmeasure"] == pytest.approx(2 / 3)
    with pytest.raises(TypeError, match="two str"):
        rouge_l(["a"], "a")


WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "Tom's", "2nd", "cafe!", "co-op", "run,", "UP"]


def _random_sentence(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12)))


def test_rouge_l_parity_with_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(0)
    for _ in range(200):
        pred, ref = _random_sentence(rng), _random_sentence(rng)
        theirs = scorer.score(ref, pred)["rougeL"]  # rouge-score takes (target, prediction)
        ours = rouge_l(pred, ref)
        assert ours["precision"] == pytest.approx(theirs.precision), (pred, ref)
        assert ours["recall"] == pytest.approx(theirs.recall), (pred, ref)
        assert ours["fmeasure"] == pytest.approx(theirs.fmeasure), (pred, ref)


# ----------------------------------------------------------------------------- pass@k
def test_pass_at_k_equals_the_combinatorial_definition():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1.0 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)


def test_pass_at_k_worked_examples():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # k = 1: the fraction that passed
    # n = 5, c = 2, k = 2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(200, 0, 100) == 0.0 and pass_at_k(200, 101, 100) == 1.0
    # large n stays finite (the product form never builds C(200, 100))
    assert 0.0 < pass_at_k(200, 1, 100) < 1.0


def test_pass_at_k_is_unbiased():
    """Averaged over many draws of k from n, the fraction of draws with a pass equals pass@k."""
    rng = random.Random(1)
    n, c, k = 6, 2, 3
    samples = [True] * c + [False] * (n - c)
    hits = sum(any(rng.sample(samples, k)) for _ in range(20000)) / 20000
    assert hits == pytest.approx(pass_at_k(n, c, k), abs=0.015)


@pytest.mark.parametrize("args, match", [((0, 0, 1), "n >= 1"), ((5, 6, 1), "0 <= c <= n"), ((5, 1, 6), "1 <= k <= n"),
                                         ((5, 1, 0), "1 <= k <= n")])
def test_pass_at_k_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        pass_at_k(*args)
    with pytest.raises(TypeError, match="k must be an int"):
        pass_at_k(5, 1, 1.0)


# ----------------------------------------------------------------------------- final numbers (GSM8K)
def test_final_number_and_number_match():
    assert final_number("Tom has 3 apples, buys 4: 3 + 4 = 7. The answer is 7.") == "7"
    assert final_number("#### 1,234") == "1234"
    assert final_number("it is -5") == "-5"
    assert final_number("１２") == "12"  # full-width digits
    assert final_number("no number") is None
    assert number_match("so the answer is 12.0", "12")
    assert not number_match("12 then 13", "12")
    assert not number_match("none", "12")
    with pytest.raises(ValueError, match="contains no number"):
        number_match("12", "twelve")


def test_exact_match_metric_uses_the_projects_normalisation():
    em = METRICS["exact_match"]
    assert em("the market", ["The market."]) == 1.0
    assert em("市场。", ["公园。", "市场"]) == 1.0
    assert em("the park", ["the market."]) == 0.0
