"""T5 (models/t5.py) and its shared block nn.RelativePositionBias: buckets against a brute-force
reference, attention without 1/√d, gradients, bidirectional encoder / causal decoder, the KV
cache, padding, bad input, save/load."""
import math

import numpy as np
import pytest

import minillm as mi
import minillm.nn as nn
from minillm.models.t5 import (
    T5Attention, T5Block, T5Config, T5DenseGatedActDense, T5ForConditionalGeneration, T5LayerNorm, greedy_generate,
    shift_right,
)
from minillm.nn.positional import RelativePositionBias, relative_position_bucket
from minillm.testing import gradcheck

V = 19


def cfg(**kw):
    base = dict(vocab_size=V, d_model=8, d_kv=4, d_ff=12, num_layers=2, num_heads=2, relative_attention_num_buckets=8,
                relative_attention_max_distance=16, dropout_rate=0.0, max_seq_len=16)
    return T5Config(**{**base, **kw})


def ids(B, T, seed=0, low=2):
    return np.random.default_rng(seed).integers(low, V, size=(B, T))


# ------------------------------------------------------------------ relative position buckets
def brute_bucket(i: int, j: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """The T5 paper's rule for query i, key j, written out for one pair with Python floats."""
    n, rel, bucket = num_buckets, j - i, 0
    if bidirectional:
        n //= 2
        if rel > 0:
            bucket = n
        rel = abs(rel)
    else:
        rel = max(-rel, 0)
    exact = n // 2
    if rel < exact:
        return bucket + rel
    return bucket + min(n - 1, exact + int(math.log(rel / exact) / math.log(max_distance / exact) * (n - exact)))


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 16), (16, 40)])
def test_buckets_equal_brute_force_for_every_pair_up_to_128(bidirectional, num_buckets, max_distance):
    bias = RelativePositionBias(num_buckets, 2, max_distance, bidirectional)
    got = bias.buckets(129, 129)  # queries 0..128 x keys 0..128
    want = np.array([[brute_bucket(i, j, bidirectional, num_buckets, max_distance) for j in range(129)] for i in range(129)])
    np.testing.assert_array_equal(got, want)
    assert got.min() >= 0 and got.max() < num_buckets
    # with an offset (decoding with a cache): rows of the full table
    np.testing.assert_array_equal(bias.buckets(3, 129, q_offset=100), want[100:103])


def test_bucket_function_worked_examples_and_errors():
    assert relative_position_bucket(np.array([-3, 0, 1, 200]), num_buckets=8, max_distance=20).tolist() == [2, 0, 5, 7]
    assert relative_position_bucket(np.array([-3, 0, 5]), bidirectional=False, num_buckets=8, max_distance=20).tolist() == [3, 0, 0]
    with pytest.raises(TypeError, match="integers, got dtype float64"):
        relative_position_bucket(np.array([1.0]))
    with pytest.raises(ValueError, match="num_buckets must be >= 4, got 2"):
        RelativePositionBias(2, 1)
    with pytest.raises(ValueError, match="q_len must be an int >= 0, got -1"):
        RelativePositionBias(8, 1)(-1, 3)


def test_relative_position_bias_values_and_gradcheck():
    bias = RelativePositionBias(8, 3, 16, bidirectional=True).double()
    out = bias(4, 5)
    assert out.shape == (1, 3, 4, 5)
    b = bias.buckets(4, 5)
    np.testing.assert_array_equal(out.data[0], bias.weight.data[b].transpose(2, 0, 1))
    gradcheck(lambda w: bias(3, 4), [bias.weight], name="RelativePositionBias")


# ------------------------------------------------------------------ layers
def test_t5_layernorm_is_rms_without_mean_or_bias():
    ln = T5LayerNorm(6, eps=1e-6).double()
    ln.weight.data[:] = np.arange(1, 7)
    x = np.random.default_rng(0).standard_normal((2, 6)) + 3.0  # a mean far from 0: LayerNorm would subtract it
    ref = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * np.arange(1, 7)
    np.testing.assert_allclose(ln(mi.tensor(x)).data, ref, rtol=1e-12)
    assert [n for n, _ in ln.named_parameters()] == ["weight"]


def test_attention_has_no_sqrt_d_scaling():
    """scores are exactly q·kᵀ + bias: compare with a NumPy reference that has no 1/√d."""
    c = cfg(d_model=8, d_kv=16, num_heads=2)
    attn = T5Attention(c, has_relative_attention_bias=True).double()
    for p in attn.parameters():
        nn.init.normal_(p, 0.0, 0.5)
    x = np.random.default_rng(0).standard_normal((1, 5, 8))
    pb = attn.relative_attention_bias(5, 5)
    out = attn(mi.tensor(x), position_bias=pb).data

    def ref(scale):
        W = lambda m: m.weight.data.T  # noqa: E731
        q = (x @ W(attn.q)).reshape(1, 5, 2, 16).transpose(0, 2, 1, 3)
        k = (x @ W(attn.k)).reshape(1, 5, 2, 16).transpose(0, 2, 1, 3)
        v = (x @ W(attn.v)).reshape(1, 5, 2, 16).transpose(0, 2, 1, 3)
        s = q @ k.transpose(0, 1, 3, 2) * scale + pb.data
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        return (p @ v).transpose(0, 2, 1, 3).reshape(1, 5, 32) @ W(attn.o)

    np.testing.assert_allclose(out, ref(1.0), rtol=1e-10, atol=1e-12)
    assert np.abs(out - ref(1 / math.sqrt(16))).max() > 1e-3  # the scaled version really is different


def test_init_folds_the_scaling_into_q():
    c = T5Config(vocab_size=100, d_model=256, d_kv=64, d_ff=512, num_layers=1, num_heads=4)
    a = T5ForConditionalGeneration(c).encoder.block[0].layer[0].SelfAttention
    assert a.q.weight.data.std() == pytest.approx((256 * 64) ** -0.5, rel=0.05)
    assert a.k.weight.data.std() == pytest.approx(256**-0.5, rel=0.05)
    assert a.o.weight.data.std() == pytest.approx(256**-0.5, rel=0.05)  # (num_heads·d_kv)^-1/2


@pytest.mark.parametrize("ff", ["relu", "gated-gelu"])
def test_block_gradcheck(ff):
    c = cfg(feed_forward_proj=ff, d_model=4, d_kv=2, d_ff=6)  # small: finite differences run 2 forwards per weight
    enc = T5Block(c, is_decoder=False, has_relative_attention_bias=True).double()
    dec = T5Block(c, is_decoder=True, has_relative_attention_bias=True).double()
    for p in [*enc.parameters(), *dec.parameters()]:
        nn.init.normal_(p, 0.0, 0.5)
    x = mi.randn(2, 3, 4, dtype=mi.float64, requires_grad=True)
    mem = mi.randn(2, 4, 4, dtype=mi.float64, requires_grad=True)
    bias = enc.layer[0].SelfAttention.relative_attention_bias
    gradcheck(lambda x, *p: enc(x, bias(3, 3), None), [x, *enc.parameters()], name=f"T5Block encoder {ff}")
    future = np.triu(np.ones((3, 3), dtype=bool), 1)[None, None]
    dbias = dec.layer[0].SelfAttention.relative_attention_bias
    gradcheck(lambda x, m, *p: dec(x, dbias(3, 3), future, m), [x, mem, *dec.parameters()], name=f"T5Block decoder {ff}")


@pytest.mark.parametrize("tie", [True, False])
def test_model_loss_gradcheck(tie):
    m = T5ForConditionalGeneration(cfg(num_layers=1, vocab_size=7, d_model=4, d_kv=2, d_ff=6, tie_word_embeddings=tie)).double()
    for p in m.parameters():
        nn.init.normal_(p, 0.0, 0.5)
    src = np.array([[2, 3, 4], [5, 6, 1]])
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    labels = np.array([[3, 1], [4, -100]])
    gradcheck(lambda *p: m(src, attention_mask=mask, labels=labels).loss, list(m.parameters()), name="T5 loss",
              directions=2)  # whole model: random directions; the blocks are checked element by element above


def test_gated_gelu_formula():
    c = cfg(feed_forward_proj="gated-gelu")
    ff = T5DenseGatedActDense(c).double()
    x = np.random.default_rng(0).standard_normal((2, 8))
    h0, h1 = x @ ff.wi_0.weight.data.T, x @ ff.wi_1.weight.data.T
    g = 0.5 * h0 * (1 + np.tanh(math.sqrt(2 / math.pi) * (h0 + 0.044715 * h0**3)))
    np.testing.assert_allclose(ff(mi.tensor(x)).data, (g * h1) @ ff.wo.weight.data.T, rtol=1e-10)


# ------------------------------------------------------------------ the model
def _model(**kw):
    m = T5ForConditionalGeneration(cfg(**kw)).double()
    for p in m.parameters():
        nn.init.normal_(p, 0.0, 0.4)
    return m


def test_encoder_is_bidirectional_and_decoder_causal():
    m = _model()
    src, tgt = ids(1, 6), ids(1, 6, seed=1)
    mem = m.encode(src).data
    src2 = src.copy()
    src2[0, -1] = (src2[0, -1] + 1) % V
    assert not np.allclose(m.encode(src2).data[0, 0], mem[0, 0])  # the first position sees the last
    base = m(src, decoder_input_ids=tgt).logits.data
    tgt2 = tgt.copy()
    tgt2[0, 3:] = (tgt2[0, 3:] + 1) % V
    got = m(src, decoder_input_ids=tgt2).logits.data
    np.testing.assert_allclose(got[0, :3], base[0, :3], atol=1e-12)
    assert not np.allclose(got[0, 3:], base[0, 3:])


def test_position_bias_is_computed_once_and_shared():
    m = _model(num_layers=3)
    owners = [n for n, _ in m.named_parameters() if "relative_attention_bias" in n]
    assert owners == ["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                      "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    # every encoder layer uses it: the gradient of the bias collects contributions from all layers
    out = m(ids(1, 4), labels=ids(1, 3, seed=2))
    out.loss.backward()
    assert np.abs(m.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.grad.data).sum() > 0


def test_cached_decoding_equals_full_recompute():
    m = _model(num_decoder_layers=3)
    src, tgt = ids(2, 5), ids(2, 7, seed=1)
    mask = np.array([[1] * 5, [1, 1, 1, 0, 0]])
    full = m(src, attention_mask=mask, decoder_input_ids=tgt).logits.data
    with mi.no_grad():
        mem = m.encode(src, mask)
        cache = m.new_kv_cache(2, 8)
        parts = [m.decode(tgt[:, :3], mem, mask, kv_cache=cache).data]
        for t in range(3, 7):
            parts.append(m.decode(tgt[:, t : t + 1], mem, mask, kv_cache=cache).data)
    np.testing.assert_allclose(np.concatenate(parts, 1), full, atol=1e-10)


def test_source_padding_does_not_change_real_positions():
    m = _model()
    src, tgt = ids(1, 4), ids(1, 3, seed=1)
    alone = m(src, decoder_input_ids=tgt).logits.data
    padded = np.concatenate([src, [[0, 0, 0]]], 1)
    got = m(padded, attention_mask=np.array([[1, 1, 1, 1, 0, 0, 0]]), decoder_input_ids=tgt).logits.data
    np.testing.assert_allclose(got, alone, atol=1e-10)


def test_labels_shift_right_and_loss():
    assert shift_right(np.array([[5, 6, 1, -100]]), 0, 0).tolist() == [[0, 5, 6, 1]]
    m = _model()
    src, labels = ids(2, 4), ids(2, 3, seed=3)
    labels[1, 2] = -100
    out = m(src, labels=labels)
    logits = m(src, decoder_input_ids=shift_right(labels, 0, 0)).logits.data
    keep = labels != -100
    lse = np.log(np.exp(logits).sum(-1))
    assert out.loss.item() == pytest.approx((lse[keep] - logits[keep, labels[keep]]).mean(), rel=1e-10)


def test_greedy_generate_equals_argmax_loop():
    m = _model()
    src = ids(1, 5)
    got = greedy_generate(m, src, max_new_tokens=5)[0]
    seq = [m.config.decoder_start_token_id]
    for _ in range(5):
        nxt = int(m(src, decoder_input_ids=np.array([seq])).logits.data[0, -1].argmax())
        if nxt == m.config.eos_token_id:
            break
        seq.append(nxt)
    assert got == seq[1:]


def test_greedy_generate_eos_override():
    m = _model()
    src = ids(1, 5)
    free = greedy_generate(m, src, max_new_tokens=6, eos_token_id=-1)[0]  # never stops: exactly 6 tokens
    assert len(free) == 6
    first = free[0]  # stopping at the first token's id returns nothing
    assert greedy_generate(m, src, max_new_tokens=6, eos_token_id=first)[0] == []
    with pytest.raises(TypeError, match="eos_token_id must be an int or None, got 1.5"):
        greedy_generate(m, src, max_new_tokens=2, eos_token_id=1.5)


def test_bad_input_raises_naming_the_value():
    m = _model()
    with pytest.raises(TypeError, match="input_ids must be integer token ids, got dtype float64"):
        m.encode(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(1, 3\)"):
        m.encode(ids(1, 3), np.ones((1, 4)))
    with pytest.raises((ValueError, IndexError), match=str(V)):
        m.encode(np.array([[1, V]]))
    with pytest.raises(ValueError, match=r"memory must be \(batch=1, src_len, d_model=8\)"):
        m.decode(ids(1, 2), mi.zeros(1, 3, 5))
    with pytest.raises(ValueError, match="pass labels or decoder_input_ids"):
        m(ids(1, 3))
    with pytest.raises(ValueError, match="kv_cache has 1 layers, the decoder has 2"):
        m.decode(ids(1, 1), m.encode(ids(1, 2)), kv_cache=m.new_kv_cache(1)[:1])
    with pytest.raises(ValueError, match="exceed the cache size 2"):
        m.decode(ids(1, 3), m.encode(ids(1, 2)), kv_cache=m.new_kv_cache(1, 2))
    with pytest.raises(ValueError, match="T5Config.feed_forward_proj"):
        cfg(feed_forward_proj="swiglu")
    with pytest.raises(ValueError, match="T5Config.eos_token_id must be an id in"):
        cfg(eos_token_id=V)


def test_encoder_decoder_protocol_and_save_load(tmp_path):
    from minillm.io import load_model, save_model

    m = _model()
    assert T5ForConditionalGeneration.is_encoder_decoder is True and m.config.max_seq_len == 16
    assert len(m.new_kv_cache(3)) == 2 and m.new_kv_cache(3)[0].k.shape == (3, 2, 16, 4)
    m = m.float()
    save_model(m, tmp_path / "t5")
    m2 = load_model(tmp_path / "t5")
    assert isinstance(m2, T5ForConditionalGeneration) and m2.config == m.config
    src, tgt = ids(2, 4), ids(2, 3, seed=1)
    np.testing.assert_array_equal(m2(src, decoder_input_ids=tgt).logits.data, m(src, decoder_input_ids=tgt).logits.data)
