"""examples/train_gpt.py end to end at a toy size, and its prompt formats."""
import json

from _helpers import load_example

train_gpt = load_example("train_gpt")


def test_prompt_formats():
    assert train_gpt.solved("cat =", "猫") == "cat = 猫"
    assert train_gpt.solved("问题：x\n答案：", "市场。") == "问题：x\n答案：市场。"
    assert train_gpt.few_shot_prompt([("1 + 1 =", "2"), ("2 + 2 =", "4")], "3 + 4 =") == "1 + 1 = 2\n2 + 2 = 4\n3 + 4 ="
    for task in ("qa", "qa (Q:/A:)", "translate", "math"):
        items = train_gpt.task_items(task, 5, "val", 0)
        assert len(items) == 5 and all(p and a for p, a, _ in items)
    assert all(p.endswith(" =") and " " in p[:-2] for p, _, _ in train_gpt.task_items("math", 5, "val", 0))
    # qa items carry their language, so the demonstrations can be drawn from the same language
    qa = train_gpt.task_items("qa", 20, "val", 0)
    assert {k for *_, k in qa} == {"en", "zh"} and all(("问题：" in p) == (k == "zh") for p, _, k in qa)
    assert train_gpt.mean_and_stderr([1, 0, 1, 0]) == (0.5, 0.25)


def test_example_runs_at_toy_size(tmp_path):
    report = train_gpt.main(["--quick", "--no-progress", "--out-dir", str(tmp_path / "run"), "--steps", "4",
                             "--n-stories", "300", "--vocab-size", "300", "--block-size", "96", "--n-eval", "3"])
    tasks = ("qa", "qa (Q:/A:)", "translate", "math", "qa · en", "qa · zh", "qa (Q:/A:) · en", "qa (Q:/A:) · zh")
    assert set(report["few_shot_exact_match"]) <= {f"{t}|{k}" for t in tasks for k in (0, 1, 3)}
    assert {f"{t}|{k}" for t in tasks[:4] for k in (0, 1, 3)} <= set(report["few_shot_exact_match"])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert saved["steps"] == 4 and (tmp_path / "run" / "model" / "model.safetensors").exists()
