"""examples/train_glm.py end to end at a toy size."""
import json

from _helpers import load_example

train_glm = load_example("train_glm")


def test_example_runs_at_toy_size(tmp_path):
    report = train_glm.main(["--quick", "--no-progress", "--out-dir", str(tmp_path / "run"), "--n-stories", "300",
                             "--vocab-size", "300", "--steps", "2", "--batch-size", "4", "--n-eval", "5"])
    rows = report["infilling"]
    assert set(rows) == {"GLM, [MASK] inside the text", "GLM, text after the blank removed", "GPT, blank moved to the end"}
    assert all(r["n"] == 5 and 0.0 <= r["all"] <= 1.0 for r in rows.values())
    assert report["glm_val_loss"] > 0 and report["gpt_val_loss"] > 0
    # the same size: GLM has no position table (2-D RoPE) where GPT has one, and more LayerNorms
    assert abs(report["parameters"]["glm"] - report["parameters"]["gpt"]) < 0.05 * report["parameters"]["gpt"]
    saved = json.loads((tmp_path / "run" / "glm_model" / "config.json").read_text())
    assert saved["model_type"] == "minillm-glm"


def test_gpt_scoring_needs_the_blank_and_its_end():
    item = {"left": "Tom went to the", "answer": " park", "right": ". There", "later": False}
    assert train_glm.gpt_hit(" park. There, Tom", item)
    assert not train_glm.gpt_hit(" parking lot", item)
    assert not train_glm.gpt_hit(" market.", item)
