"""End to end: the main example in --quick mode, and the command line."""
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_tiny_llama_quick_runs_end_to_end(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "examples", "train_tiny_llama.py"), "--quick", "--no-progress", "--out-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    vocab = json.loads((out / "model" / "config.json").read_text())["vocab_size"]
    # learning happened: validation loss far below a uniform guess over the vocabulary
    assert report["pretrain"]["val_loss"] < 0.75 * math.log(vocab)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (out / "model" / name).exists() and (out / "base_model" / name).exists()
    assert (out / "pretrain" / "metrics.jsonl").exists()
    assert "held-out exact match after SFT" in proc.stdout


def test_example_help():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_tiny_llama.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--quick" in proc.stdout and "--out-dir" in proc.stdout


def test_example_command_line_helpers():
    """pipeline's example_parser / add_setting_flags / apply_defaults: what every example's parse_args does."""
    from minillm import pipeline

    defaults = {"n_stories": 100, "lr": 1e-3, "sizes": ["d32"]}  # "sizes" has no flag here: filled all the same
    p = pipeline.example_parser("doc", out_dir="runs/x", overwrite_help="replace an earlier run")
    pipeline.add_setting_flags(p, defaults, skip=["sizes"])
    a = pipeline.apply_defaults(p.parse_args(["--lr", "0.5", "--n-stories", "0"]), defaults)
    assert (a.n_stories, a.lr, a.sizes) == (0, 0.5, ["d32"])  # a given 0 is kept: only what was left out is filled
    assert (a.out_dir, a.seed, a.quick, a.no_progress, a.overwrite) == ("runs/x", 0, False, False, False)
    with pytest.raises(SystemExit):
        p.parse_args(["--n-stories", "1.5"])  # typed like its default
    quiet = pipeline.example_parser("doc", out_dir="runs/y", progress=False)
    assert not hasattr(quiet.parse_args([]), "no_progress") and not hasattr(quiet.parse_args([]), "overwrite")
    with pytest.raises(TypeError, match="'sizes' is a list"):
        pipeline.add_setting_flags(quiet, defaults)  # a list (or bool) setting needs a flag of its own


def _write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def test_cli_pipeline(tmp_path, capsys, monkeypatch):
    from minillm.cli import main
    from minillm.data import generate_sft, generate_stories

    _write_jsonl(tmp_path / "pre.jsonl", [{"text": t} for t in generate_stories(300, seed=1)])
    _write_jsonl(tmp_path / "pre_val.jsonl", [{"text": t} for t in generate_stories(40, seed=1, split="val")])
    _write_jsonl(tmp_path / "sft.jsonl", generate_sft(64, seed=1))
    _write_jsonl(tmp_path / "sft_val.jsonl", generate_sft(8, seed=1, split="val"))

    assert main(["train-tokenizer", "--input", str(tmp_path / "pre.jsonl"), "--vocab-size", "300", "--out", str(tmp_path / "tok")]) == 0
    assert (tmp_path / "tok" / "tokenizer.json").exists()
    from minillm import pipeline

    ahead = []  # what `pretrain` asks a compile_ahead helper to rehearse (none is started here)
    monkeypatch.setattr(pipeline, "compile_ahead", lambda config, **shape: ahead.append((config, shape)))
    pre = tmp_path / "pre"
    assert main(["pretrain", "--data", str(tmp_path / "pre.jsonl"), "--val", str(tmp_path / "pre_val.jsonl"),
                 "--tokenizer", str(tmp_path / "tok"), "--block-size", "64", "--steps", "3", "--batch-size", "2",
                 "--out", str(pre), "--no-progress"]) == 0
    assert (pre / "model" / "model.safetensors").exists() and (pre / "model" / "tokenizer.json").exists()
    (config, shape), = ahead
    assert (config.dim, config.n_layers, shape) == (128, 4, dict(batch_size=2, seq_len=64))  # the tiny preset's run
    gpt = tmp_path / "gpt"  # the same pretraining recipe, GPT-2 architecture (3.3.1)
    assert main(["pretrain", "--arch", "gpt", "--data", str(tmp_path / "pre.jsonl"), "--val", str(tmp_path / "pre_val.jsonl"),
                 "--tokenizer", str(tmp_path / "tok"), "--block-size", "64", "--steps", "2", "--batch-size", "2",
                 "--out", str(gpt), "--no-progress"]) == 0
    assert len(ahead) == 1  # the GPT run rehearses nothing: compile_ahead is the LLaMA's
    from minillm.io import load_model
    from minillm.models.gpt import GPT

    assert isinstance(load_model(str(gpt / "model")), GPT)
    capsys.readouterr()
    assert main(["generate", "--model", str(gpt / "model"), "--prompt", "In the morning", "--max-new-tokens", "4",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("In the morning")
    for extra in ([], ["--lora", "--lora-r", "2"]):
        sft = tmp_path / ("sft_lora" if extra else "sft")
        assert main(["sft", "--model", str(pre / "model"), "--data", str(tmp_path / "sft.jsonl"),
                     "--val", str(tmp_path / "sft_val.jsonl"), "--steps", "2", "--batch-size", "2",
                     "--eval-limit", "2", "--out", str(sft), "--no-progress", *extra]) == 0
        assert (sft / "model" / "model.safetensors").exists()
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path / "sft" / "model"), "--prompt", "In the morning",
                 "--max-new-tokens", "5", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("In the morning")
    assert main(["generate", "--model", str(tmp_path / "sft" / "model"), "--prompt", "In the morning",
                 "--max-new-tokens", "5", "--num-beams", "3"]) == 0
    assert capsys.readouterr().out.startswith("In the morning")
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("What is 2 + 3?\n/reset\nhello\n\n"))
    assert main(["chat", "--model", str(tmp_path / "sft" / "model"), "--max-new-tokens", "4", "--seed", "0"]) == 0
    assert capsys.readouterr().out.count("bot> ") == 2  # two questions answered, /reset in between


def test_cli_errors_are_clear(tmp_path):
    from minillm.cli import main

    assert main(["generate", "--model", str(tmp_path / "missing"), "--prompt", "hi"]) == 2  # "error: ... does not exist"
    with pytest.raises(SystemExit):
        main(["pretrain"])  # --out is required: argparse exits with a usage message


def test_prepare_corpus_reuses_or_rebuilds(tmp_path):
    from minillm.pipeline import prepare_corpus

    paths = prepare_corpus(str(tmp_path), n_stories=20, n_sft=10, seed=1)
    stamp = tmp_path / "corpus.json"
    first = os.path.getmtime(paths["pretrain_train"])
    assert prepare_corpus(str(tmp_path), n_stories=20, n_sft=10, seed=1) == paths  # same settings: reused
    assert os.path.getmtime(paths["pretrain_train"]) == first
    stamp.write_text("{damaged")  # e.g. a run killed while writing it: rebuilt, not a JSON traceback
    assert prepare_corpus(str(tmp_path), n_stories=20, n_sft=10, seed=1) == paths
    assert json.loads(stamp.read_text()) == {"n_stories": 20, "n_sft": 10, "seed": 1}
