"""T5 parity with Hugging Face ``T5ForConditionalGeneration`` (optional: skipped without
transformers): buckets, logits with and without padding, greedy tokens, both directions."""
import json

import numpy as np
import pytest

import minillm as mi
import minillm.nn as nn
from minillm.io.hf_t5 import export_hf_t5, import_hf_t5
from minillm.models.t5 import T5Config, T5ForConditionalGeneration, greedy_generate
from minillm.nn.positional import relative_position_bucket

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers.models.t5.modeling_t5 import T5Attention as HFT5Attention  # noqa: E402

V = 40


@pytest.mark.parametrize("bidirectional", [True, False])
def test_buckets_equal_hf_for_every_pair_up_to_128(bidirectional):
    i, j = np.meshgrid(np.arange(129), np.arange(129), indexing="ij")
    rel = j - i
    ref = HFT5Attention._relative_position_bucket(torch.tensor(rel), bidirectional=bidirectional, num_buckets=32,
                                                  max_distance=128).numpy()
    np.testing.assert_array_equal(relative_position_bucket(rel, bidirectional, 32, 128), ref)


def _ours(ff):
    mi.manual_seed(0)
    m = T5ForConditionalGeneration(T5Config(vocab_size=V, d_model=16, d_kv=8, d_ff=24, num_layers=2, num_decoder_layers=2,
                                            num_heads=2, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                            dropout_rate=0.0, feed_forward_proj=ff))
    for name, p in m.named_parameters():  # norms away from 1, so they matter
        if p.ndim == 1:
            nn.init.normal_(p, 1.0, 0.2)
    return m


@pytest.mark.parametrize("ff", ["relu", "gated-gelu"])
def test_export_matches_hf_logits_and_greedy_tokens(tmp_path, ff):
    m = _ours(ff)
    export_hf_t5(m, tmp_path / "hf")
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(3, V, (3, 9)), rng.integers(3, V, (3, 6))
    mask = np.ones_like(src)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    for am in (None, mask):
        out = m(src, attention_mask=am, decoder_input_ids=tgt).logits.data
        with torch.no_grad():
            ref = hf(input_ids=torch.tensor(src), attention_mask=None if am is None else torch.tensor(am),
                     decoder_input_ids=torch.tensor(tgt)).logits.numpy()
        diff = np.abs(out - ref).max()
        assert diff <= 1e-4, (am is not None, diff)
    ours = greedy_generate(m, src, mask, max_new_tokens=8)
    with torch.no_grad():
        theirs = hf.generate(input_ids=torch.tensor(src), attention_mask=torch.tensor(mask), max_new_tokens=8,
                             do_sample=False, num_beams=1)
    for row, g in zip(theirs.tolist(), ours):
        row = row[1:]  # drop the decoder start token
        row = row[: row.index(1)] if 1 in row else row  # stop at EOS
        row = [t for t in row if t != 0]  # padding after a finished row
        assert row == g


def test_import_hf_model_built_from_config(tmp_path):
    torch.manual_seed(0)
    c = transformers.T5Config(vocab_size=V, d_model=16, d_kv=4, d_ff=20, num_layers=2, num_decoder_layers=1, num_heads=3,
                              relative_attention_num_buckets=16, relative_attention_max_distance=32, dropout_rate=0.0,
                              decoder_start_token_id=0)
    hf = transformers.T5ForConditionalGeneration(c).eval()
    with torch.no_grad():
        for _, p in hf.named_parameters():
            if p.ndim == 1:
                p.normal_(1.0, 0.2)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    m = import_hf_t5(tmp_path / "hf")
    assert (m.config.num_heads, m.config.d_kv, m.config.num_decoder_layers) == (3, 4, 1)
    rng = np.random.default_rng(1)
    src, tgt = rng.integers(2, V, (2, 7)), rng.integers(2, V, (2, 5))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(src), decoder_input_ids=torch.tensor(tgt)).logits.numpy()
    diff = np.abs(m(src, decoder_input_ids=tgt).logits.data - ref).max()
    assert diff <= 1e-4, diff


def test_import_errors_name_the_problem(tmp_path):
    m = _ours("relu")
    export_hf_t5(m, tmp_path / "a")
    path = tmp_path / "a" / "config.json"
    cfg = json.loads(path.read_text())
    path.write_text(json.dumps({**cfg, "feed_forward_proj": "gated-silu"}))
    with pytest.raises(ValueError, match="feed_forward_proj 'gated-silu' is not supported"):
        import_hf_t5(tmp_path / "a")
    path.write_text(json.dumps({**cfg, "model_type": "bart"}))
    with pytest.raises(ValueError, match="model_type is 'bart'"):
        import_hf_t5(tmp_path / "a")
    path.write_text(json.dumps({**cfg, "num_layers": 3}))
    with pytest.raises(ValueError, match=r"missing tensors \['encoder.block.2"):
        import_hf_t5(tmp_path / "a")
    path.write_text(json.dumps({**cfg, "scale_decoder_outputs": False}))
    with pytest.raises(ValueError, match="scale_decoder_outputs=False"):
        import_hf_t5(tmp_path / "a")
    with pytest.raises(TypeError, match="expected a minillm.models.t5.T5ForConditionalGeneration"):
        export_hf_t5(object(), tmp_path / "b")
