"""minillm.eval.metrics: exact-match scoring of short answers, with worked examples."""
import pytest

from minillm.data import generate_sft
from minillm.eval import exact_match, exact_match_accuracy, normalize_answer, score_sft


@pytest.mark.parametrize("text, normalised", [
    ("  The  Market. ", "the market"),  # case, inner and outer whitespace, final "."
    ("市场。", "市场"),  # Chinese full stop is punctuation too
    ("１２", "12"),  # full-width digits (NFKC)
    ("a cat!?", "a cat"),  # every trailing punctuation mark
    ("Tom.", "tom"),
    ("e.g. this", "e.g. this"),  # only trailing punctuation goes
    ("...", ""),
    ("", ""),
])
def test_normalize_answer_worked_examples(text, normalised):
    assert normalize_answer(text) == normalised


def test_exact_match_worked_examples():
    assert exact_match("the market", "the market.")
    assert exact_match("  The  Market. ", "the market.")
    assert exact_match("市场", "市场。")
    assert exact_match("１２", "12")
    assert exact_match("a cat!?", "a cat.")
    assert not exact_match("the park.", "the market.")
    assert not exact_match("", "the market.")
    assert not exact_match("12", "1 2")  # inner spaces matter: "1 2" is not a number
    with pytest.raises(TypeError, match="expected a str, got int"):
        exact_match(12, "12")


def test_exact_match_accuracy_per_group():
    preds = ["the market", "12", "猫", "dog", "7"]
    refs = ["The market.", "13", "猫。", "a dog.", "7"]
    groups = ["qa", "math", "translate", "translate", None]  # None: counted under "all" only
    got = exact_match_accuracy(preds, refs, groups)
    # hits: market yes, 12 vs 13 no, 猫 yes, "dog" vs "a dog" no, 7 yes -> 3 of 5
    assert got == {"all": 3 / 5, "qa": 1.0, "math": 0.0, "translate": 0.5, "n": 5}
    assert list(got) == ["all", "qa", "math", "translate", "n"]  # groups in first-seen order
    assert exact_match_accuracy([], []) == {"all": 0.0, "n": 0}
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        exact_match_accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="2 predictions but 3 groups"):
        exact_match_accuracy(["a", "b"], ["a", "b"], ["x", "y", "z"])


def test_score_sft_reads_the_last_assistant_reply_and_the_skill():
    recs = generate_sft(40, skills=("qa", "math"))
    preds = [r["messages"][-1]["content"] if r["meta"]["skill"] == "qa" else "wrong" for r in recs]
    s = score_sft(recs, preds)
    n_qa = sum(r["meta"]["skill"] == "qa" for r in recs)
    assert s == {"all": n_qa / 40, **{k: s[k] for k in ("qa", "math")}, "n": 40}
    assert s["qa"] == 1.0 and s["math"] == 0.0 and 0 < n_qa < 40
    two_turns = {"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "3"},
                              {"role": "user", "content": "sure?"}, {"role": "assistant", "content": "2."}]}
    assert score_sft([two_turns], ["2"]) == {"all": 1.0, "n": 1}  # no meta: "all" only; the last reply counts
    with pytest.raises(ValueError, match="40 records but 39 predictions"):
        score_sft(recs, preds[:-1])
    with pytest.raises(ValueError, match="record 0 has no assistant message"):
        score_sft([{"messages": [{"role": "user", "content": "hi"}]}], ["x"])
