"""examples/pretrain_bert.py --quick runs end to end and writes its files."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "pretrain_bert.py")


def test_quick_run_end_to_end(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # First fill Numba's cache with every kernel these runs use: a kernel loaded from the cache can
    # round float32 differently from the same kernel freshly compiled in the running process
    # (measured: the softmax driver, deterministic either way; docs/kernels.md "Compile cost"), so
    # a first run that compiled its kernels and a second that loaded them could fine-tune to other
    # numbers from the same weights.
    warm = subprocess.run([sys.executable, EXAMPLE, "--quick", "--out-dir", str(tmp_path / "warm")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert warm.returncode == 0, warm.stderr[-2000:]
    r = subprocess.run([sys.executable, EXAMPLE, "--quick", "--out-dir", str(tmp_path)], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| task | metric | from pretrained BERT | from random init |" in r.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert "| task | metric | from pretrained RoBERTa | from random init |" in r.stdout
    for rows in (report["finetune"], report["roberta"]["finetune"]):
        assert [row["metric"] for row in rows] == ["accuracy", "accuracy", "entity_f1", "f1"]
        for row in rows:
            for side in ("pretrained", "scratch"):
                assert 0.0 <= row[side][row["metric"]] <= 1.0
                assert 0.0 <= row[side]["train_" + row["metric"]] <= 1.0  # the fit on its own training set
        pos, ner = rows[1]["pretrained"], rows[2]["pretrained"]
        assert pos["unseen_support"] > 0 and 0.0 <= pos["unseen_accuracy"] <= 1.0  # held-out words were scored
        assert ner["unseen_support"] > 0 and 0.0 <= ner["unseen_f1"] <= 1.0
    png = (tmp_path / "attention.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert (tmp_path / "tokenizer" / "tokenizer.json").exists()
    lines = (tmp_path / "attention.txt").read_text(encoding="utf-8").splitlines()
    assert lines[1].split("\t")[1] == "[CLS]"

    # fine-tune again from the saved models, without pretraining
    again = subprocess.run([sys.executable, EXAMPLE, "--quick", "--out-dir", str(tmp_path / "again"),
                            "--from-pretrained", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "loaded the WordPiece tokenizer and the pretrained BERT" in again.stdout and "pretraining" not in again.stdout
    second = json.loads((tmp_path / "again" / "report.json").read_text())
    assert second["finetune"] == report["finetune"]  # same weights, same seeds: the same fine-tuning numbers
