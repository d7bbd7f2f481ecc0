"""GPT-2 parity with Hugging Face ``GPT2LMHeadModel`` (optional: skipped without transformers).

Both directions: our export loads in HF with the same logits (with and without padding) and
the same greedy tokens; an HF model built from a config, saved, imports into ours with the
same logits. Also the file-format errors of ``import_hf_gpt2``.
"""
import json

import numpy as np
import pytest

import minillm as mi
from minillm.generation import generate
from minillm.io.hf_gpt2 import export_hf_gpt2, import_hf_gpt2, to_hf_gpt2_state_dict
from minillm.models.gpt import GPT, GPTConfig
from _helpers import scramble

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

V = 61


def _model():
    mi.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=V, max_seq_len=32, n_embd=32, n_layer=2, n_head=4))
    return scramble(m, 0.2, vectors=0.1)  # non-zero biases/LayerNorms too, so every weight matters


def _ours_in_hf(tmp_path):
    m = _model()
    export_hf_gpt2(m, tmp_path / "hf", eos_token_id=0, pad_token_id=0)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    return m, hf


def _max_logit_diff(ours, hf, x) -> float:
    """Largest |our logit - Hugging Face's| on the ids ``x`` (B, T), no padding."""
    with torch.no_grad():
        ref = hf(torch.tensor(x)).logits.numpy()
    return float(np.abs(ours(x).logits.data - ref).max())


def test_conv1d_weights_are_transposed_on_export():
    m = _model()
    sd = to_hf_gpt2_state_dict(m)
    w = m.transformer.h[0].attn.c_attn.weight.data
    assert sd["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)
    np.testing.assert_array_equal(sd["transformer.h.0.attn.c_attn.weight"], w.T)
    assert "transformer.wpe.weight" in sd and "transformer.h.1.mlp.c_fc.bias" in sd and "lm_head.weight" not in sd


def test_export_logits_match_hf(tmp_path):
    m, hf = _ours_in_hf(tmp_path)
    diff = _max_logit_diff(m, hf, np.random.default_rng(0).integers(0, V, (3, 12)))
    assert diff <= 1e-4, diff


def test_export_logits_match_hf_with_left_padding(tmp_path):
    m, hf = _ours_in_hf(tmp_path)
    x = np.random.default_rng(1).integers(1, V, (3, 10))
    mask = np.ones_like(x)
    mask[1, :4] = 0
    mask[2, :7] = 0
    x[mask == 0] = 0
    pos = np.maximum(mask.cumsum(1) - 1, 0)
    with torch.no_grad():
        ref = hf(torch.tensor(x), attention_mask=torch.tensor(mask), position_ids=torch.tensor(pos)).logits.numpy()
    ours = m(x, attention_mask=mask, position_ids=pos).logits.data
    real = mask.astype(bool)
    diff = np.abs(ours - ref)[real].max()
    assert diff <= 1e-4, diff


def test_greedy_generation_matches_hf(tmp_path):
    m, hf = _ours_in_hf(tmp_path)
    prompts = [[5, 9, 2], [7, 1, 3, 8, 4, 6]]
    ours = generate(m, prompts, 10, temperature=0)  # one left-padded batch, KV cache
    for p, g in zip(prompts, ours):
        with torch.no_grad():
            out = hf.generate(torch.tensor([p]), max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert out[0, len(p):].tolist() == g


def test_import_hf_model_built_from_config(tmp_path):
    torch.manual_seed(0)
    c = transformers.GPT2Config(vocab_size=V, n_positions=24, n_embd=24, n_layer=2, n_head=3, n_inner=40,
                                initializer_range=0.2)
    hf = transformers.GPT2LMHeadModel(c).eval()
    with torch.no_grad():  # HF zero-inits biases and ones LayerNorms: randomise them so they are tested
        for name, p in hf.named_parameters():
            if p.ndim == 1:
                p.normal_(0.0, 0.1)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    m = import_hf_gpt2(tmp_path / "hf")
    assert m.config.n_inner == 40 and m.config.max_seq_len == 24
    diff = _max_logit_diff(m, hf, np.random.default_rng(2).integers(0, V, (2, 9)))
    assert diff <= 1e-4, diff


def test_import_errors_name_the_problem(tmp_path):
    m = _model()
    export_hf_gpt2(m, tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    (tmp_path / "a" / "config.json").write_text(json.dumps({**cfg, "activation_function": "relu"}))
    with pytest.raises(ValueError, match="activation_function 'relu' is not supported"):
        import_hf_gpt2(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type is 'llama'"):
        import_hf_gpt2(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(json.dumps({**cfg, "n_layer": 3}))
    with pytest.raises(ValueError, match=r"missing tensors \['transformer.h.2"):
        import_hf_gpt2(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "a" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        import_hf_gpt2(tmp_path / "a")
    with pytest.raises(TypeError, match="expected a minillm.models.gpt.GPT"):
        export_hf_gpt2(object(), tmp_path / "b")
