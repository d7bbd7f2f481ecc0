"""GPT-2 (models/gpt.py): gradients, causality, the KV cache, padding, bad input, and the
shared-block extensions it needs (tanh GELU in nn.FeedForward, position_ids in
nn.LearnedPositionalEmbedding)."""
import math

import numpy as np
import pytest

import minillm as mi
import minillm.nn as nn
from minillm.generation import generate
from minillm.models.gpt import GPT, Block, CausalSelfAttention, GPTConfig
from minillm.testing import gradcheck
from _helpers import scramble as _scramble

V = 23


def cfg(**kw):
    base = dict(vocab_size=V, max_seq_len=16, n_embd=16, n_layer=2, n_head=2)
    return GPTConfig(**{**base, **kw})


def scramble(model, std=0.3):
    return _scramble(model, std, vectors=0.1)


def ids(B, T, seed=0):
    return np.random.default_rng(seed).integers(0, V, size=(B, T))


# ------------------------------------------------------------------ shared blocks
def test_feedforward_gelu_tanh_is_gpt2s_formula():
    ff = nn.FeedForward(4, 8, activation="gelu_tanh").double()
    x = np.random.default_rng(0).standard_normal((3, 4))
    h = x @ ff.w1.weight.data.T + ff.w1.bias.data
    g = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    ref = g @ ff.w2.weight.data.T + ff.w2.bias.data
    np.testing.assert_allclose(ff(mi.tensor(x)).data, ref, rtol=1e-12, atol=1e-12)
    assert not np.allclose(nn.FeedForward(4, 8, activation="gelu").double()(mi.tensor(x)).data, 0)  # both exist
    gradcheck(lambda x, *p: ff(x), [mi.tensor(x, requires_grad=True), *ff.parameters()], name="FeedForward gelu_tanh")


def test_learned_positions_with_position_ids():
    pe = nn.LearnedPositionalEmbedding(6, 3).double()
    x = mi.zeros(2, 3, 3, dtype=mi.float64)
    pos = np.array([[0, 1, 2], [0, 0, 1]])
    np.testing.assert_array_equal(pe(x, position_ids=pos).data, pe.weight.data[pos])
    np.testing.assert_array_equal(pe(x, 2).data[0], pe.weight.data[2:5])
    with pytest.raises(ValueError, match=r"position_ids must be in \[0, 6\), got 0..6"):
        pe(x, position_ids=np.array([[0, 1, 6], [0, 0, 1]]))
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        pe(x, position_ids=np.array([0, 1, 2]))


# ------------------------------------------------------------------ config and structure
def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="n_embd .15. must be divisible by n_head .2."):
        cfg(n_embd=15)
    with pytest.raises(ValueError, match="GPTConfig.n_layer"):
        cfg(n_layer=0)
    with pytest.raises(ValueError, match="GPTConfig.dropout"):
        cfg(dropout=1.0)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['n_ctx'\]"):
        GPTConfig.from_dict({**cfg().to_dict(), "n_ctx": 3})
    assert GPTConfig.from_dict(cfg().to_dict()) == cfg()


def test_gpt2_small_shape_and_names():
    c = GPTConfig(n_layer=1)  # GPT-2 small's widths, one block (keeps the test light)
    m = GPT(c)
    names = set(m.state_dict())
    assert {"transformer.wte.weight", "transformer.wpe.embedding.weight", "transformer.h.0.attn.c_attn.weight",
            "transformer.h.0.attn.c_attn.bias", "transformer.h.0.attn.c_proj.weight", "transformer.h.0.ln_1.weight",
            "transformer.h.0.ln_2.bias", "transformer.h.0.mlp.w1.weight", "transformer.ln_f.weight"} <= names
    assert m.transformer.h[0].attn.c_attn.weight.shape == (3 * 768, 768)
    # GPT-2 small (12 layers) has 124,439,808 parameters; one block has 7,087,872 of them
    per_block = 7_087_872
    assert m.num_parameters() == 124_439_808 - 11 * per_block


def test_lm_head_is_tied_and_residual_projections_scaled():
    m = GPT(cfg(n_embd=64, n_head=4, n_layer=8, vocab_size=500, max_seq_len=64))
    assert m.lm_head.weight is m.transformer.wte.weight
    assert sum(1 for n, _ in m.named_parameters() if n in ("lm_head.weight", "transformer.wte.weight")) == 1
    std = lambda p: float(p.data.std())  # noqa: E731
    small = 0.02 / math.sqrt(2 * 8)
    for blk in m.transformer.h:
        assert abs(std(blk.attn.c_proj.weight) - small) < 0.3 * small
        assert abs(std(blk.mlp.w2.weight) - small) < 0.3 * small
        assert abs(std(blk.attn.c_attn.weight) - 0.02) < 0.2 * 0.02
        assert np.all(blk.attn.c_attn.bias.data == 0)


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("flash", [True, False])
def test_attention_and_block_gradcheck(backend, flash):
    c = cfg(n_embd=8, n_head=2, flash_attn=flash)
    attn = scramble(CausalSelfAttention(c).double(), 0.5)
    x = mi.randn(2, 3, 8, dtype=mi.float64, requires_grad=True)
    gradcheck(lambda x, *p: attn(x), [x, *attn.parameters()], name="CausalSelfAttention")
    blk = scramble(Block(c).double(), 0.5)
    gradcheck(lambda x, *p: blk(x), [x, *blk.parameters()], name="Block")


def test_model_loss_gradcheck(backend):
    m = scramble(GPT(cfg(n_embd=8, n_head=2, n_layer=1, vocab_size=7, max_seq_len=6)).double(), 0.4)
    x, y = np.random.default_rng(1).integers(0, 7, (2, 4)), np.random.default_rng(2).integers(0, 7, (2, 4))
    gradcheck(lambda *p: m(x, targets=y).loss, list(m.parameters()), name="GPT loss",
              directions=2)  # whole model: random directions; attention and blocks are checked element by element above


def test_loss_is_mean_cross_entropy_and_ignores_minus_100():
    m = scramble(GPT(cfg()).double())
    x = ids(2, 5)
    y = ids(2, 5, seed=1)
    y[0, :2] = -100
    out = m(x, targets=y)
    logits = out.logits.data
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    keep = y != -100
    nll = lse[keep] - logits[keep, y[keep]]
    assert out.loss.item() == pytest.approx(nll.mean(), rel=1e-10)


# ------------------------------------------------------------------ causality, cache, padding
@pytest.mark.parametrize("flash", [True, False])
def test_future_tokens_never_change_past_logits(flash):
    m = scramble(GPT(cfg(flash_attn=flash)).double())
    x = ids(1, 10)
    base = m(x).logits.data
    for t in range(9):
        x2 = x.copy()
        x2[0, t + 1 :] = (x2[0, t + 1 :] + 5) % V
        got = m(x2).logits.data
        np.testing.assert_allclose(got[0, : t + 1], base[0, : t + 1], atol=1e-12)
        assert not np.allclose(got[0, t + 1 :], base[0, t + 1 :])


def test_cached_decoding_equals_full_recompute(backend):
    m = scramble(GPT(cfg()).double())
    x = ids(2, 9)
    full = m(x).logits.data
    cache = m.new_kv_cache(2)
    with mi.no_grad():
        parts = [m(x[:, :4], kv_cache=cache).logits.data]
        for t in range(4, 9):
            parts.append(m(x[:, t : t + 1], kv_cache=cache).logits.data)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, atol=1e-10)
    assert cache[0].length == 9


def test_left_padding_with_positions_equals_each_row_alone():
    m = scramble(GPT(cfg()).double())
    a, b = ids(1, 7)[0], ids(1, 4, seed=3)[0]
    x = np.stack([a, np.concatenate([[0, 0, 0], b])])
    mask = np.array([[1] * 7, [0, 0, 0, 1, 1, 1, 1]])
    pos = np.maximum(mask.cumsum(1) - 1, 0)
    out = m(x, attention_mask=mask, position_ids=pos).logits.data
    np.testing.assert_allclose(out[0], m(a[None]).logits.data[0], atol=1e-10)
    np.testing.assert_allclose(out[1, 3:], m(b[None]).logits.data[0], atol=1e-10)


def test_generation_package_runs_gpt_unchanged():
    """generate() (KV cache, left-padded batch) gives the same greedy tokens as recomputing."""
    m = scramble(GPT(cfg(max_seq_len=32)))
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    cached = generate(m, prompts, 6, temperature=0)
    plain = generate(m, prompts, 6, temperature=0, use_cache=False)
    assert cached == plain
    for p, g in zip(prompts, cached):  # and equal to each prompt alone, by a hand-written greedy loop
        seq = list(p)
        for _ in range(6):
            seq.append(int(m(np.array([seq])).logits.data[0, -1].argmax()))
        assert seq[len(p):] == g


# ------------------------------------------------------------------ bad input
def test_bad_input_raises_naming_the_value():
    m = GPT(cfg())
    with pytest.raises(TypeError, match="integer token ids.*float64"):
        m(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"shape \(batch, seq_len\).*\(3,\)"):
        m(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="exceed max_seq_len=16"):
        m(np.zeros((1, 17), dtype=np.int64))
    with pytest.raises((ValueError, IndexError), match=str(V)):
        m(np.array([[1, V]]))
    with pytest.raises(ValueError, match=r"attention_mask must have shape .* \(1, 3\), got \(1, 2\)"):
        m(np.zeros((1, 3), dtype=np.int64), attention_mask=np.ones((1, 2)))
    with pytest.raises(ValueError, match="targets must have the shape"):
        m(np.zeros((1, 3), dtype=np.int64), targets=np.zeros((1, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="kv_cache has 1 layers, the model has 2"):
        m(np.zeros((1, 3), dtype=np.int64), kv_cache=m.new_kv_cache(1)[:1])
    with pytest.raises(TypeError, match="expected a GPTConfig"):
        GPT({"n_layer": 2})


def test_save_and_load_round_trip(tmp_path):
    from minillm.io import load_model, save_model

    m = scramble(GPT(cfg()))
    save_model(m, tmp_path / "gpt")
    m2 = load_model(tmp_path / "gpt")
    assert isinstance(m2, GPT) and m2.config == m.config
    x = ids(2, 5)
    np.testing.assert_array_equal(m2(x).logits.data, m(x).logits.data)
