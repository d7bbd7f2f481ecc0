"""examples/lora_sft.py runs end to end (a very small --quick run) and reports what it promises."""
import json
import os

import pytest
from _helpers import load_example


def test_help_lists_the_lora_options(capsys):
    example = load_example("lora_sft")
    with pytest.raises(SystemExit) as e:
        example.parse_args(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--quick", "--base", "--r", "--lora-alpha", "--lora-dropout", "--targets", "--lora-lr"):
        assert flag in out


def test_quick_run_end_to_end(tmp_path, capsys):
    example = load_example("lora_sft")
    out_dir = str(tmp_path / "run")
    report = example.main([
        "--quick", "--out-dir", out_dir, "--no-progress", "--n-stories", "200", "--n-sft", "60", "--vocab-size", "300",
        "--block-size", "32", "--pretrain-steps", "2", "--sft-steps", "2", "--sft-batch-size", "4", "--eval-limit", "3",
        "--targets", "wq,wv",
    ])
    text = capsys.readouterr().out
    assert "trainable params:" in text and "held-out exact match" in text and "optimizer state" in text
    full, lora = report["runs"]
    assert lora["trainable"] < full["trainable"] and lora["optimizer_bytes"] < full["optimizer_bytes"]
    assert full["trainable"] == full["total"]
    assert report["reload_max_abs_diff"] == 0.0 and report["merged_max_abs_diff"] < 1e-4
    assert report["adapter_bytes"] < report["full_model_bytes"]
    adapter = os.path.join(out_dir, "lora_adapter")
    assert sorted(os.listdir(adapter)) == ["adapter_config.json", "adapter_model.safetensors"]
    with open(os.path.join(adapter, "adapter_config.json"), encoding="utf-8") as f:
        assert json.load(f)["target_modules"] == ["wq", "wv"]
    assert os.path.exists(os.path.join(out_dir, "lora_merged_model", "model.safetensors"))
