"""examples/align.py end to end (--quick: a micro SFT model, then pairs, reward model, DPO, PPO)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_align_quick_runs_end_to_end(tmp_path):
    out = tmp_path / "align"
    cmd = [sys.executable, os.path.join(ROOT, "examples", "align.py"), "--quick", "--no-progress", "--out-dir", str(out)]
    env = {**os.environ, "PYTHONPATH": ROOT, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for name in ("pairs_train.jsonl", "pairs_val.jsonl", "report.json", "reward_curves.png", "dpo_curves.png",
                 "ppo_curves.png"):
        assert (out / name).exists(), name
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert 0 <= report["reward_model"]["accuracy"]["all"] <= 1
    for name in ("dpo", "ppo"):
        assert 0 <= report["eval"][name]["win_rate_truth"] <= 1
        assert report["eval"][name]["exact_match"]["n"] == 16
    assert [h["round"] for h in report["online_dpo"]] == [1, 2] and len(report["online_nll_control"]) == 2
    assert report["online_nll_control"][-1]["rewards/margins"] == pytest.approx(0, abs=1e-3)  # β ≈ 0: no preference term
    assert set(report["dpo_minus_nll"]) == {"greedy", "T=1.0", "T=0.7"} and "DPO − NLL control" in proc.stdout
    assert (out / "nll_control" / "model" / "model.safetensors").exists()
    for name in ("SFT", "DPO", "NLL", "PPO"):  # greedy and sampled correctness, with the change against SFT
        row = report["correctness"][name]
        assert set(row) == {"greedy", "T=1.0", "T=0.7"} and row["T=1.0"]["samples"] == 2, row.keys()
        assert all(0 <= r["acc"] <= 1 and abs(sum(r["kinds"].values()) - 1) < 1e-9 for r in row.values())
    assert report["correctness"]["SFT"]["T=1.0"]["delta"] == 0
    assert "held-out correctness" in proc.stdout and "mistakes, T=1.0" in proc.stdout
    first = json.loads((out / "pairs_train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert {"prompt", "chosen", "rejected"} <= set(first)
    # a second run in the same folder is refused
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode != 0 and "already holds" in again.stderr

    # the command line on the micro SFT model the example trained, with the pairs it wrote
    model = str(out / "sft_model" / "model")
    pairs = ["--pairs", str(out / "pairs_train.jsonl"), "--val", str(out / "pairs_val.jsonl")]
    small = ["--steps", "2", "--batch-size", "4", "--no-progress"]

    def cli(*argv):
        return subprocess.run([sys.executable, "-m", "minillm", *argv], capture_output=True, text=True, env=env,
                              timeout=600, cwd=str(tmp_path))

    # --bf16 rides along (mixed precision in the Trainer; the saved weights stay float32)
    r = cli("reward", "--model", model, "--out", str(tmp_path / "rm"), *pairs, *small, "--bf16")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "held-out pairwise accuracy" in r.stdout and (tmp_path / "rm" / "model" / "score.safetensors").exists()
    r = cli("dpo", "--model", model, "--out", str(tmp_path / "dpo"), *pairs, *small, "--eval-limit", "4", "--lora", "--bf16")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "DPO" in r.stdout and (tmp_path / "dpo" / "model" / "model.safetensors").exists()
    from safetensors.numpy import load_file
    assert {a.dtype.name for a in load_file(str(tmp_path / "dpo" / "model" / "model.safetensors")).values()} == {"float32"}
    r = cli("ppo", "--model", model, "--reward-model", str(tmp_path / "rm" / "model"), "--out", str(tmp_path / "ppo"),
            "--iters", "1", "--batch-size", "4", "--n-prompts", "8", "--eval-limit", "4")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "iteration 1" in r.stdout and (tmp_path / "ppo" / "metrics.jsonl").exists()
    # online DPO from the command line: the micro model is never right, so no pair of its own replies exists
    r = cli("dpo", "--model", model, "--out", str(tmp_path / "odpo"), "--online-rounds", "1", "--n-prompts", "8",
            "--samples", "2", "--batch-size", "2", "--eval-limit", "0", "--no-progress")
    assert r.returncode == 2 and "round 1 gave 0 pairs, fewer than one batch of 2" in r.stderr, r.stderr[-2000:]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "a"}\n', encoding="utf-8")
    r = cli("dpo", "--model", model, "--out", str(tmp_path / "dpo2"), "--pairs", str(bad), "--val", str(bad))
    assert r.returncode == 2 and "bad.jsonl:1: missing field(s) ['rejected']" in r.stderr
    r = cli("ppo", "--model", model, "--out", str(tmp_path / "ppo2"))
    assert r.returncode == 2 and "--reward-model DIR or --rule" in r.stderr
