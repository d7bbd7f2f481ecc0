"""examples/train_transformer.py end to end (--quick), its pieces, and the translation data it uses."""
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from minillm.data.translation import (
    TranslationDataset, collate_translation, sentence_pairs, split_sentences, translation_pairs,
)
from minillm.plot import heatmap_rgb
from minillm.tokenizers import CharTokenizer, WordTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "train_transformer.py")


def test_split_sentences():
    assert split_sentences("On Sunday, Tom went home. It was raining.", "en") == ["On Sunday, Tom went home.", "It was raining."]
    assert split_sentences("星期天，汤姆回家了。那天在下雨。", "zh") == ["星期天，汤姆回家了。", "那天在下雨。"]
    with pytest.raises(ValueError, match="lang must be 'en' or 'zh'"):
        split_sentences("x", "fr")


def test_sentence_pairs_are_aligned_translations():
    pairs = sentence_pairs(30, seed=0)
    assert len(pairs) > 60
    for en, zh in pairs:
        assert en.endswith(".") and zh.endswith("。") and not any("\u4e00" <= c <= "\u9fff" for c in en)
    # the same English sentence always gets the same Chinese (a function the model can learn)
    table = {}
    for en, zh in sentence_pairs(300, seed=0):
        assert table.setdefault(en, zh) == zh


def test_heldout_sentences_are_unseen_and_deterministic():
    d = translation_pairs(200, 30, seed=0)
    assert len(d["heldout"]) == 30 and len(set(d["train"])) == len(d["train"])
    assert not {en for en, _ in d["heldout"]} & {en for en, _ in d["train"]}
    assert translation_pairs(200, 30, seed=0) == d


def test_dataset_and_collate_shift_targets_and_pad():
    pairs = [("Tom went home.", "汤姆回家了。"), ("It was raining.", "那天在下雨。")]
    src_tok, tgt_tok = WordTokenizer.train([e for e, _ in pairs]), CharTokenizer.train([z for _, z in pairs])
    ds = TranslationDataset(pairs, src_tok, tgt_tok, max_len=16)
    src, tgt_in, tgt_out = ds[0]
    assert src_tok.decode(src[:-1].tolist()) == "Tom went home." and src[-1] == src_tok.eos_token_id
    assert tgt_in[0] == tgt_tok.bos_token_id and tgt_out[-1] == tgt_tok.eos_token_id
    np.testing.assert_array_equal(tgt_in[1:], tgt_out[:-1])  # teacher forcing: targets are inputs shifted left
    b = collate_translation([ds[0], ds[1]], pad_id=5)
    assert b["input_ids"].shape == b["attention_mask"].shape and b["labels"].shape == b["decoder_input_ids"].shape
    assert (b["labels"][b["decoder_attention_mask"] == 0] == -100).all()
    assert (b["input_ids"][b["attention_mask"] == 0] == 5).all()
    with pytest.raises(ValueError, match="pair 1 .*more than max_len=4"):
        TranslationDataset([("Tom.", "汤。"), ("It was raining.", "那天在下雨。")], src_tok, tgt_tok, max_len=4)


def test_generate_on_the_transformer_uses_the_cache_and_matches_full_recompute():
    import minillm as mi
    from minillm.models.transformer import ModelArgs, Transformer

    mi.manual_seed(0)
    m = Transformer(ModelArgs(dim=16, n_heads=2, n_layer=1, dropout=0.0, max_seq_len=10, vocab_size=9))
    for p in m.parameters():
        if p.ndim == 2:
            p.data[:] = np.random.default_rng(0).normal(0, 0.5, p.shape)
    src, mask = np.array([[3, 4, 5, 2], [6, 7, 2, 0]]), np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    from minillm.generation import generate

    out = generate(m, src, attention_mask=mask, max_new_tokens=6, do_sample=False, decoder_start_token_id=1,
                   eos_token_id=2, pad_token_id=0)
    for row, ids in enumerate(out):  # re-derive each token by a full forward pass without cache
        seq = [1]
        for tok in ids:
            logits = m(src[row : row + 1], np.array([seq]), src_mask=mask[row : row + 1]).logits.data[0, -1]
            assert int(logits.argmax()) == tok
            seq.append(tok)
    # the PNG writer makes a valid PNG
    rgb = heatmap_rgb(np.array([[0.1, 0.9], [0.5, 0.5]]), cell=3)
    assert rgb.shape == (6, 6, 3) and rgb[0, 0].tolist() != rgb[0, 5].tolist()


def _png_size(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and zlib.crc32(data[12 : 16 + length]) == struct.unpack(">I", data[16 + length : 20 + length])[0]
    return struct.unpack(">II", data[16:24])


def test_example_quick_runs_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, EXAMPLE, "--quick", "--no-progress", "--out-dir", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "held-out greedy: BLEU" in proc.stdout and "exact match" in proc.stdout
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert 0.0 <= report["heldout_bleu_greedy"] <= 100.0 and report["heldout_size"] == 40
    assert "held-out beam 4: BLEU" in proc.stdout and 0.0 <= report["heldout_bleu_beam"] <= 100.0
    assert report["final_train_loss"] < 0.8 * np.log(json.loads((out / "config.json").read_text())["tgt_vocab_size"])
    for name in ("model.safetensors", "config.json", "cross_attention.txt", "src_tokenizer/tokenizer.json", "tgt_tokenizer/tokenizer.json"):
        assert (out / name).exists(), name
    w, h = _png_size(out / "cross_attention.png")
    assert w > 0 and h > 0
    # the saved weights load back into the same model
    from minillm.io.safetensors import load_safetensors
    from minillm.models.transformer import ModelArgs, Transformer

    m = Transformer(ModelArgs.from_dict(json.loads((out / "config.json").read_text())))
    m.load_state_dict(load_safetensors(out / "model.safetensors"))


def test_example_help():
    proc = subprocess.run([sys.executable, EXAMPLE, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--quick" in proc.stdout and "--post-norm" in proc.stdout
