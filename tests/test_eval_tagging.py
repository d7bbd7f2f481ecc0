"""Entity-level P/R/F1 (seqeval's definition) and span EM/F1, on worked examples."""
import pytest

from minillm.eval.tagging import entity_scores, get_entities, qa_scores, span_exact_match, span_f1


def test_get_entities_worked_examples():
    assert get_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    # an I- after O starts an entity (seqeval forgives the missing B-); a type change splits
    assert get_entities(["O", "I-PER", "I-PER", "I-LOC"]) == [("PER", 1, 2), ("LOC", 3, 3)]
    assert get_entities(["B-PER", "B-PER"]) == [("PER", 0, 0), ("PER", 1, 1)]
    assert get_entities(["S-OBJ", "B-LOC", "E-LOC", "O"]) == [("OBJ", 0, 0), ("LOC", 1, 2)]
    assert get_entities(["O", "O"]) == []


def test_entity_scores_worked_example():
    # seqeval's README example: true has MISC (3-5) and PER (7-8); pred has MISC (2-5) and PER (7-8)
    y_true = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    y_pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    s = entity_scores(y_true, y_pred)
    assert s["precision"] == 0.5 and s["recall"] == 0.5 and s["f1"] == 0.5
    assert s["per_type"]["PER"]["f1"] == 1.0 and s["per_type"]["MISC"]["f1"] == 0.0
    # 3 true, 2 predicted, 1 correct: P = 1/2, R = 1/3, F1 = 0.4
    s = entity_scores([["B-A", "O", "B-B", "B-C"]], [["B-A", "O", "O", "B-B"]])
    assert s["precision"] == 0.5 and abs(s["recall"] - 1 / 3) < 1e-12 and abs(s["f1"] - 0.4) < 1e-12


def test_entity_scores_keep_scores_only_entities_starting_on_kept_tokens():
    y_true = [["B-PER", "O", "B-LOC", "I-LOC", "O", "B-PER"]]
    y_pred = [["B-PER", "O", "B-LOC", "O", "B-OBJ", "B-PER"]]
    keep = [[False, False, True, True, True, False]]  # the held-out tokens: 2..4
    # kept true: LOC(2-3); kept predicted: LOC(2-2) (wrong end) and OBJ(4-4): nothing correct
    s = entity_scores(y_true, y_pred, keep=keep)
    assert s["support"] == 1 and s["precision"] == 0.0 and s["recall"] == 0.0 and s["f1"] == 0.0
    keep = [[True, False, False, False, True, True]]  # kept true: PER(0), PER(5); kept predicted: PER(0), OBJ(4), PER(5)
    s = entity_scores(y_true, y_pred, keep=keep)
    assert s["recall"] == 1.0 and abs(s["precision"] - 2 / 3) < 1e-12 and abs(s["f1"] - 0.8) < 1e-12
    assert entity_scores(y_true, y_pred, keep=[[True] * 6])["f1"] == entity_scores(y_true, y_pred)["f1"]
    with pytest.raises(ValueError, match="sequence 0 has 6 tags but 2 keep flags"):
        entity_scores(y_true, y_pred, keep=[[True, False]])
    with pytest.raises(ValueError, match="but 0 keep masks"):
        entity_scores(y_true, y_pred, keep=[])


def test_entity_scores_matches_seqeval_when_installed():
    seqeval = pytest.importorskip("seqeval.metrics")
    y_true = [["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-OBJ", "O"], ["O", "B-OBJ", "I-OBJ", "I-PER"]]
    y_pred = [["B-PER", "O", "O", "B-LOC", "B-LOC", "I-OBJ", "B-PER"], ["O", "B-OBJ", "I-OBJ", "I-PER"]]
    s = entity_scores(y_true, y_pred)
    assert abs(s["f1"] - seqeval.f1_score(y_true, y_pred)) < 1e-12


def test_entity_scores_bad_input():
    with pytest.raises(ValueError, match="sequence 0 has 2 true tags but 1 predicted"):
        entity_scores([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="'X-PER'"):
        get_entities(["X-PER"])
    with pytest.raises(ValueError, match="1 true sequences but 2 predicted"):
        entity_scores([["O"]], [["O"], ["O"]])


def test_span_scores():
    assert span_exact_match("The market", "market.")
    assert span_exact_match("市场", "市场。")
    assert not span_exact_match("the park", "market")
    assert abs(span_f1("the red ball", "a ball") - 2 / 3) < 1e-12
    assert abs(span_f1("粉色的蛋糕", "蛋糕") - 2 * (2 / 5) * 1 / (2 / 5 + 1)) < 1e-12
    assert span_f1("", "") == 1.0 and span_f1("x", "") == 0.0
    assert qa_scores(["market", "cat"], ["the market.", "a dog."]) == {"exact_match": 0.5, "f1": 0.5}
    with pytest.raises(ValueError, match="equally many"):
        qa_scores(["a"], [])
