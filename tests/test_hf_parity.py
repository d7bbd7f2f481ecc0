"""Parity with Hugging Face transformers' LlamaForCausalLM (optional: skipped without torch/transformers).

export_hf must give a directory that LlamaForCausalLM.from_pretrained loads with the same
logits (the wq/wk row permutation makes HF's rotate-half RoPE equal to our interleaved RoPE),
and import_hf must read HF's own save_pretrained output.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import minillm as mi  # noqa: E402
from minillm.generation import generate  # noqa: E402
from minillm.io import export_hf, import_hf  # noqa: E402
from minillm.models.llama import ModelConfig, Transformer  # noqa: E402
from _helpers import scramble  # noqa: E402

V = 128


def random_model(**kw):
    mi.manual_seed(0)
    cfg = ModelConfig(**{**dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=V, max_seq_len=64), **kw})
    return scramble(Transformer(cfg), 0.1, vectors=(0.5, 1.5)).eval()  # every weight matters for the logits


def hf_logits(hf, ids):
    with torch.no_grad():
        return hf(torch.tensor(ids)).logits.numpy()


@pytest.mark.parametrize("kw", [dict(), dict(tie_word_embeddings=False), dict(n_kv_heads=4), dict(n_kv_heads=1, n_heads=2)])
def test_export_hf_logits_match(tmp_path, kw):
    model = random_model(**kw)
    export_hf(model, tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()  # no trust_remote_code
    ids = np.random.default_rng(1).integers(0, V, size=(2, 40))
    diff = np.abs(hf_logits(hf, ids) - model(ids).logits.data).max()
    assert diff <= 1e-4, diff


def test_greedy_generation_identical(tmp_path):
    model = random_model()
    export_hf(model, tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    prompt = np.random.default_rng(2).integers(0, V, size=(1, 12))
    ours = generate(model, prompt[0].tolist(), 30, temperature=0)
    with torch.no_grad():
        theirs = hf.generate(
            torch.tensor(prompt), attention_mask=torch.ones_like(torch.tensor(prompt)), max_new_tokens=30,
            do_sample=False, eos_token_id=None, pad_token_id=0,
        )[0, 12:].tolist()
    assert ours == theirs


def test_import_hf_reads_transformers_checkpoint(tmp_path):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
    )
    hf = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.1)
    hf.save_pretrained(tmp_path)  # safetensors by default
    model = import_hf(tmp_path)
    assert model.args.ffn_hidden_dim == 96 and model.args.n_kv_heads == 2
    ids = np.random.default_rng(3).integers(0, V, size=(2, 30))
    assert np.abs(hf_logits(hf, ids) - model(ids).logits.data).max() <= 1e-4
