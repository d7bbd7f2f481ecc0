"""examples/align.py end to end (--quick: a micro SFT model, then pairs, reward model, DPO, PPO)."""
import json
import os
import subprocess
import sys

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
    first = json.loads((out / "pairs_train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert {"prompt", "chosen", "rejected"} <= set(first)
    # a second run in the same folder is refused
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode != 0 and "already holds" in again.stderr
