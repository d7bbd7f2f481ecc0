"""examples/rag.py runs end to end (--quick) and reports every table it promises; the CLI indexes and answers."""
import os

import pytest

from minillm.cli import main as cli_main
from _helpers import load_example


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("rag") / "run")
    with pytest.warns(RuntimeWarning, match="broken.jsonl"):
        report = load_example("rag").main(["--quick", "--out-dir", out, "--no-progress", "--questions", "6"])
    return out, report


def test_quick_run_reports_retrieval_and_answers(quick_run):
    out, report = quick_run
    for qset in ("questions", "paraphrases"):
        for r in ("BM25", "dense", "hybrid"):
            m = report["retrieval"][f"{qset}/{r}"]
            assert 0 <= m["recall@1"] <= m["recall@5"] <= 1 and 0 <= m["mrr"] <= 1
    assert set(report["answers"]) == {"closed book", "oracle passage"} | {
        f"{r}-RAG top {k}" for r in ("BM25", "dense", "hybrid") for k in (1, 3)}
    for name in ("store/store.json", "store/vectors.safetensors", "encoder/encoder.safetensors",
                 "reader/model.safetensors", "report.json"):
        assert os.path.exists(os.path.join(out, name)), name


def test_cli_index_and_ask(quick_run, tmp_path, capsys):
    out, _ = quick_run
    store = str(tmp_path / "store")
    assert cli_main(["rag", "index", os.path.join(out, "kb"), "--out", store, "--encoder", os.path.join(out, "encoder")]) == 0
    text = capsys.readouterr().out
    assert "skipped" in text and "broken.jsonl" in text and "40 chunks" in text
    assert cli_main(["rag", "index", os.path.join(out, "kb"), "--out", store]) == 2  # no --overwrite
    assert "already holds a store" in capsys.readouterr().err
    q = "On the day Emma met Amy, where did Emma go?"
    assert cli_main(["rag", "ask", store, q, "--k", "2", "--retriever", "bm25"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("[1] ") and "Emma met Amy" in text.split("[2]")[0]
    assert cli_main(["rag", "ask", store, q, "--encoder", os.path.join(out, "encoder"), "--model",
                     os.path.join(out, "reader"), "--max-new-tokens", "4"]) == 0
    assert "answer:" in capsys.readouterr().out
    assert cli_main(["rag", "ask", store, q, "--retriever", "dense"]) == 2
    assert "needs --encoder" in capsys.readouterr().err
    assert cli_main(["rag", "ask", store, q, "--k", "2", "--reader-k", "3"]) == 2
    assert "--reader-k must be between 1 and --k (2), got 3" in capsys.readouterr().err


def test_continue_from_a_saved_reader_and_encoder(quick_run, tmp_path):
    out, _ = quick_run
    with pytest.warns(RuntimeWarning, match="broken.jsonl"):
        report = load_example("rag").main(["--quick", "--out-dir", str(tmp_path / "again"), "--no-progress",
                                       "--questions", "3", "--encoder", os.path.join(out, "encoder"),
                                       "--reader-init", os.path.join(out, "reader"), "--sft-steps", "0"])
    assert not os.path.exists(tmp_path / "again" / "pretrain")  # the reader was continued, not pretrained
    assert not os.path.exists(tmp_path / "again" / "sft" / "metrics.jsonl")  # --sft-steps 0: evaluated as loaded
    assert os.path.exists(tmp_path / "again" / "reader" / "model.safetensors")
    assert report["retrieval"]["questions/dense"] is not None


def test_load_reader_grows_the_rope_table_and_keeps_the_weights(tmp_path):
    """--reader-init DIR: a model saved with a shorter max_seq_len is rebuilt with the longer RoPE
    table; its logits on positions both tables cover are unchanged."""
    import numpy as np

    import minillm as mi
    from minillm.io import save_model
    from minillm.models.llama import ModelConfig, Transformer
    from minillm.tokenizers import CharTokenizer

    mi.manual_seed(0)
    small = Transformer(ModelConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=300, max_seq_len=16))
    save_model(small, tmp_path)
    tok = CharTokenizer(sorted(set("Tom went to the park.")))
    tok.save(str(tmp_path))
    model, loaded_tok = load_example("rag").load_reader(str(tmp_path), max_seq_len=40)
    assert model.args.max_seq_len == 40 and loaded_tok.get_vocab() == tok.get_vocab()
    ids = np.array([[1, 5, 9, 7]])
    with small.mode(training=False), model.mode(training=False):
        np.testing.assert_allclose(model(mi.tensor(ids)).logits.data, small(mi.tensor(ids)).logits.data, rtol=0, atol=0)
        assert model(mi.tensor(np.ones((1, 30), dtype=np.int64))).logits.shape[1] == 30  # past the old limit of 16
