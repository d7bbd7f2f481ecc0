"""Issue 25, data and command line: no lost work (1), the chat survives a real session (6), errors
are messages (7). Variants of each class."""
import json
import os

import numpy as np
import pytest

import minillm as mi
from minillm.cli import main
from minillm.data import DataFormatError, read_sft_records
from minillm.io import save_model
from minillm.models.llama import ModelConfig, Transformer
from minillm.tokenizers import BPETokenizer
from _helpers import scramble

TEXTS = ["In the morning, Tom walks to the river. What is 2 + 3? 5. 早上，汤姆去河边。"] * 30
QA = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]


def _jsonl(path, rows, bom=False):
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return str(path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("m") / "model"
    tok = BPETokenizer.train(TEXTS, vocab_size=6 + 256 + 30, show_progress=False)
    mi.manual_seed(0)
    model = Transformer(ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size,
                                    max_seq_len=64))
    save_model(scramble(model, 0.05, vectors=0.05), d)
    tok.save(d)
    return d


@pytest.fixture
def sft_files(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"messages": QA}] * 8)
    return train, tmp_path


def _sft(model_dir, train, val, out, *extra):
    return main(["sft", "--model", str(model_dir), "--data", train, "--val", val, "--steps", "1", "--batch-size", "2",
                 "--eval-limit", "2", "--out", str(out), "--no-progress", *extra])


# ------------------------------------------------------------------ 1. evaluation records: same reader, read first
def test_read_sft_records_accepts_what_training_accepts(tmp_path):
    rows = [{"messages": QA, "meta": {"skill": "math"}},
            {"conversations": [{"from": "human", "value": "hi?"}, {"from": "gpt", "value": "hello"}]},
            {"messages": [{"role": "system", "content": "be brief"}, *QA]}]
    path = _jsonl(tmp_path / "v.jsonl", rows, bom=True)
    records = list(read_sft_records(path, for_evaluation=True))
    assert [r["messages"][-1]["content"] for r in records] == ["5", "hello", "5"]
    assert records[0]["meta"] == {"skill": "math"} and "meta" not in records[1]


@pytest.mark.parametrize("row, reason", [
    ({"messages": QA[:1]}, "1 message"),
    ({"messages": [QA[1], QA[0]]}, "ends with 'assistant', 'user'"),
    ({"messages": [{"role": "system", "content": "x"}, QA[1]]}, "ends with 'system', 'assistant'"),
    ({"messages": QA, "meta": "math"}, "'meta' must be an object"),
    ({"messages": []}, "is empty"),
])
def test_evaluation_records_are_checked_by_line(tmp_path, row, reason):
    path = _jsonl(tmp_path / "v.jsonl", [{"messages": QA}, row])
    with pytest.raises(DataFormatError, match=rf"v\.jsonl:2: .*{reason}"):
        list(read_sft_records(path, for_evaluation=True))


@pytest.mark.parametrize("bad_row", [{"messages": QA[:1]}, {"messages": [QA[1], QA[0]]}, "not json",
                                     {"messages": [{"role": "tool", "content": "x"}, QA[1]]}])
def test_sft_with_a_bad_validation_file_fails_before_training(model_dir, sft_files, capsys, bad_row):
    train, tmp = sft_files
    val = tmp / "val.jsonl"
    _jsonl(val, [{"messages": QA}])
    with open(val, "a", encoding="utf-8") as f:
        f.write((bad_row if isinstance(bad_row, str) else json.dumps(bad_row)) + "\n")
    assert _sft(model_dir, train, str(val), tmp / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "val.jsonl:2" in err and "Traceback" not in err
    assert not (tmp / "out" / "checkpoints").exists()  # nothing trained, nothing lost


@pytest.mark.parametrize("lora", [[], ["--lora", "--lora-r", "2"]])
def test_sft_accepts_bom_and_mixed_validation_and_saves_before_evaluating(model_dir, sft_files, monkeypatch, capsys, lora):
    train, tmp = sft_files
    val = _jsonl(tmp / "val.jsonl", [{"messages": QA, "meta": {"skill": "math"}},
                                     {"conversations": [{"from": "human", "value": "hi?"}, {"from": "gpt", "value": "5"}]}],
                 bom=True)

    def broken(*a, **k):
        raise ValueError("evaluation exploded")

    monkeypatch.setattr("minillm.pipeline.evaluate_sft", broken)
    assert _sft(model_dir, train, val, tmp / "out", *lora) == 2
    assert "evaluation exploded" in capsys.readouterr().err
    assert (tmp / "out" / "model" / "model.safetensors").exists()  # the trained model survived the evaluation failure
    assert (tmp / "out" / "model" / "tokenizer.json").exists()


# ------------------------------------------------------------------ 1. a used --out
def _pretrain(tmp, model_dir, out, *extra):
    data = _jsonl(tmp / "pre.jsonl", [{"text": t} for t in TEXTS])
    return main(["pretrain", "--data", data, "--val", data, "--tokenizer", str(model_dir), "--block-size", "32",
                 "--steps", "2", "--batch-size", "2", "--out", str(out), "--no-progress", "--preset", "tiny", *extra])


def test_used_out_is_refused_before_any_work_and_overwrite_replaces_it(model_dir, sft_files, capsys):
    train, tmp = sft_files
    val = _jsonl(tmp / "val.jsonl", [{"messages": QA}])
    out = tmp / "out"
    assert _sft(model_dir, train, val, out) == 0
    listing = sorted(os.listdir(out))
    stamp = os.path.getmtime(out / "model" / "model.safetensors")
    capsys.readouterr()
    assert _sft(model_dir, train, val, out) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "--overwrite" in err and "--resume" in err
    assert sorted(os.listdir(out)) == listing and os.path.getmtime(out / "model" / "model.safetensors") == stamp
    assert _pretrain(tmp, model_dir, out) == 2  # the other training command too
    assert _sft(model_dir, train, val, out, "--resume", "--overwrite") == 2
    assert _sft(model_dir, train, val, out, "--overwrite") == 0
    steps = [json.loads(line)["step"] for line in open(out / "metrics.jsonl") if "train_loss" in line]
    assert steps == [1]  # one run, not two mixed


def test_resume_with_more_steps_gives_advice_the_cli_can_follow(model_dir, tmp_path, capsys):
    out = tmp_path / "pre"
    assert _pretrain(tmp_path, model_dir, out) == 0
    capsys.readouterr()
    data = str(tmp_path / "pre.jsonl")
    args = ["pretrain", "--data", data, "--val", data, "--tokenizer", str(model_dir), "--block-size", "32",
            "--steps", "3", "--batch-size", "2", "--out", str(out), "--no-progress", "--resume"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--lr-decay-steps 2" in err and "Traceback" not in err
    assert main(args + ["--lr-decay-steps", "2", "--warmup-steps", "1"]) == 0  # the advice works


# ------------------------------------------------------------------ 7. errors are messages
@pytest.mark.parametrize("argv, message", [
    (["generate", "--model", "/nonexistent/dir", "--prompt", "hi"], "does not exist"),
    (["pretrain", "--out", "{tmp}/o", "--data", "{tmp}/x.jsonl"], "--data and --val go together"),
    (["sft", "--model", "{tmp}", "--out", "{tmp}/o"], "tokenizer.json is missing"),
    (["pretrain", "--out", "{tmp}/o", "--data", "{tmp}/missing.jsonl", "--val", "{tmp}/missing.jsonl",
      "--tokenizer", "{tmp}/nope"], "not found"),
    (["pretrain", "--out", "{tmp}/o", "--data", "{tmp}/bad.txt.gz", "--val", "{tmp}/bad.txt.gz",
      "--tokenizer", "{model}"], "unsupported pretraining file type"),
])
def test_cli_errors_print_a_message_and_exit_2(tmp_path, model_dir, capsys, argv, message):
    (tmp_path / "bad.txt.gz").write_bytes(b"\x1f\x8b")
    argv = [a.format(tmp=tmp_path, model=model_dir) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert "--debug" in err
    with pytest.raises((ValueError, OSError)):
        main(["--debug", *argv])  # the traceback is one flag away


def test_tokenizer_model_vocab_mismatch_is_caught_at_load(tmp_path, model_dir, capsys):
    d = tmp_path / "m"
    d.mkdir()
    for f in ("config.json", "model.safetensors"):
        (d / f).write_bytes((model_dir / f).read_bytes())
    BPETokenizer.train(TEXTS, vocab_size=6 + 256 + 10, show_progress=False).save(d)
    assert main(["generate", "--model", str(d), "--prompt", "hi"]) == 2
    assert "vocab_size" in capsys.readouterr().err


# ------------------------------------------------------------------ 6. the chat session
class FakeStream:
    """Stands in for stream_generate: records each prompt, answers with a few ordinary tokens."""

    def __init__(self, reply_len=3):
        self.prompts = []
        self.reply_len = reply_len

    def __call__(self, model, ids, generation_config=None, **kw):
        max_new_tokens = kw.get("max_new_tokens", getattr(generation_config, "max_new_tokens", None))
        self.prompts.append((list(ids), max_new_tokens))
        yield from [300 % model.args.vocab_size] * min(self.reply_len, max_new_tokens)


def _chat(monkeypatch, model_dir, lines, *extra, stream=None):
    stream = stream or FakeStream()
    monkeypatch.setattr("minillm.generation.stream_generate", stream)
    feed = iter(lines)

    def fake_input(prompt=""):
        item = next(feed)
        if isinstance(item, BaseException):
            raise item
        return item

    monkeypatch.setattr("builtins.input", fake_input)
    code = main(["chat", "--model", str(model_dir), "--max-new-tokens", "8", *extra])
    return code, stream


def _tok(model_dir):
    from minillm.tokenizers import load_tokenizer

    return load_tokenizer(model_dir)


@pytest.mark.parametrize("n_turns", [1, 3, 8])
def test_chat_keeps_the_system_prompt_and_headers_when_history_is_trimmed(monkeypatch, model_dir, capsys, n_turns):
    tok = _tok(model_dir)
    msgs = [f"Tom walks to the river number {i}" for i in range(n_turns)]
    code, stream = _chat(monkeypatch, model_dir, msgs + [""], "--system", "Be brief.")
    assert code == 0 and len(stream.prompts) == n_turns
    system_ids = tok.encode_chat([{"role": "system", "content": "Be brief."}])
    user_header = [tok.im_start_id] + tok.encode("user\n")
    for (ids, budget), msg in zip(stream.prompts, msgs):
        assert ids[: len(system_ids)] == system_ids  # the system message is always there
        assert len(ids) + budget <= 64 and budget >= 1
        tail = [tok.im_start_id] + tok.encode(f"user\n{msg}")
        assert any(ids[i:i + len(tail)] == tail for i in range(len(ids)))  # the newest message, whole, with its header
        assert ids.count(tok.im_start_id) == 1 + 2 * ((ids.count(tok.im_start_id) - 1) // 2)  # whole exchanges only
        assert all(ids[i:i + len(user_header)] == user_header or ids[i + 1:i + 2] != user_header[1:2]
                   for i in range(len(ids)) if ids[i] == tok.im_start_id)


@pytest.mark.parametrize("length", [200, 1000])
def test_chat_message_longer_than_the_context_is_trimmed_safely(monkeypatch, model_dir, capsys, length):
    tok = _tok(model_dir)
    long = ("river " * length)[:length] + " END"
    code, stream = _chat(monkeypatch, model_dir, [long, "hi", ""], "--system", "Be brief.")
    out = capsys.readouterr().out
    assert code == 0 and "longer than the context" in out
    ids, budget = stream.prompts[0]
    system_ids = tok.encode_chat([{"role": "system", "content": "Be brief."}])
    user_header = [tok.im_start_id] + tok.encode("user\n")
    assert ids[: len(system_ids)] == system_ids
    assert ids[len(system_ids): len(system_ids) + len(user_header)] == user_header  # never cut
    assert tok.decode(ids).rstrip().endswith("END<|im_end|>\n<|im_start|>assistant")
    assert len(ids) + budget <= 64 and budget >= 1
    assert len(stream.prompts) == 2  # the session went on


@pytest.mark.parametrize("end", [EOFError(), KeyboardInterrupt(), RuntimeError("lost sys.stdin"),
                                 ValueError("I/O operation on closed file."),
                                 UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")])
def test_chat_ends_cleanly_when_stdin_goes_away(monkeypatch, model_dir, capsys, end):
    code, stream = _chat(monkeypatch, model_dir, ["hello", end])
    assert code == 0 and len(stream.prompts) == 1


@pytest.mark.parametrize("line", ["caf\udce9", "\udcff\udcfe", "ok \udc80 ok"])
def test_chat_skips_a_line_with_undecodable_bytes(monkeypatch, model_dir, capsys, line):
    code, stream = _chat(monkeypatch, model_dir, [line, "hello", ""])
    assert code == 0 and len(stream.prompts) == 1  # the bad line skipped, the next one answered
    assert "not UTF-8" in capsys.readouterr().out


def test_chat_reset_keeps_the_system_prompt(monkeypatch, model_dir):
    tok = _tok(model_dir)
    code, stream = _chat(monkeypatch, model_dir, ["one", "/reset", "two", ""], "--system", "Be brief.")
    system_ids = tok.encode_chat([{"role": "system", "content": "Be brief."}])
    assert code == 0 and stream.prompts[1][0][: len(system_ids)] == system_ids
    assert "one" not in tok.decode(stream.prompts[1][0])


def test_chat_with_a_system_prompt_too_long_for_the_context(monkeypatch, model_dir, capsys):
    code, _ = _chat(monkeypatch, model_dir, [""], "--system", "river " * 200)
    assert code == 2 and "--system is too long" in capsys.readouterr().err


def test_train_tokenizer_refuses_to_replace_a_saved_tokenizer(tmp_path, capsys):
    text = tmp_path / "a.txt"
    text.write_text("Tom went to the market. 汤姆去了市场。\n" * 50, encoding="utf-8")
    out = tmp_path / "tok"
    assert main(["train-tokenizer", "--input", str(text), "--vocab-size", "270", "--out", str(out)]) == 0
    before = (out / "tokenizer.json").read_bytes()
    capsys.readouterr()
    assert main(["train-tokenizer", "--input", str(text), "--vocab-size", "280", "--out", str(out)]) == 2
    assert "already holds a tokenizer" in capsys.readouterr().err
    assert (out / "tokenizer.json").read_bytes() == before  # untouched
    assert main(["train-tokenizer", "--input", str(text), "--vocab-size", "280", "--out", str(out), "--overwrite"]) == 0
    assert (out / "tokenizer.json").read_bytes() != before
