"""Shared Transformer blocks of ``minillm.nn`` (Happy LLM 2.1-2.3): MultiHeadAttention with masks
and a KV cache, sinusoidal / learned positions, the ReLU/GELU feed-forward network."""
import math

import numpy as np
import pytest

import minillm as mi
import minillm.nn as nn
from minillm.nn.positional import sinusoidal_table
from minillm.testing import gradcheck


pytestmark = pytest.mark.usefixtures("one_numba_thread")  # thousands of tiny passes: see conftest


def scramble(module, std=0.4):
    for p in module.parameters():
        nn.init.normal_(p, 0.0, std)
    return module


def mha(C=8, H=2, flash=True, **kw):
    return scramble(nn.MultiHeadAttention(C, H, flash_attn=flash, **kw).double())


def rand(*shape, seed=0, grad=False):
    return mi.tensor(np.random.default_rng(seed).normal(size=shape), dtype=mi.float64, requires_grad=grad)


def numpy_mha(m, q, k, v, allowed):
    """Plain NumPy multi-head attention; ``allowed`` (B, Tq, Tk) bool."""
    def lin(x, layer):
        y = x @ layer.weight.data.T
        return y if layer.bias is None else y + layer.bias.data

    B, Tq, C = q.shape
    Tk, H, D = k.shape[1], m.n_heads, m.head_dim
    Q = lin(q, m.wq).reshape(B, Tq, H, D).transpose(0, 2, 1, 3)
    K = lin(k, m.wk).reshape(B, Tk, H, D).transpose(0, 2, 1, 3)
    V = lin(v, m.wv).reshape(B, Tk, H, D).transpose(0, 2, 1, 3)
    s = Q @ K.transpose(0, 1, 3, 2) / math.sqrt(D)
    s = np.where(allowed[:, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = (p @ V).transpose(0, 2, 1, 3).reshape(B, Tq, C)
    return lin(out, m.wo)


# ------------------------------------------------------------------ MultiHeadAttention
@pytest.mark.parametrize("flash", [True, False])
def test_self_and_cross_attention_equal_numpy_reference(backend, flash):
    m = mha(flash=flash)
    x, mem = rand(2, 5, 8, seed=1), rand(2, 3, 8, seed=2)
    pad = np.array([[False] * 5, [False, False, False, True, True]])  # row 1: last two keys are padding
    out = m(x, key_padding_mask=pad, is_causal=True).data
    allowed = ~pad[:, None, :] & np.tril(np.ones((5, 5), bool))[None]
    np.testing.assert_allclose(out, numpy_mha(m, x.data, x.data, x.data, allowed), rtol=1e-10, atol=1e-12)
    cross = m(x, mem, mem, is_causal=False).data  # keys have length 3, queries 5
    np.testing.assert_allclose(cross, numpy_mha(m, x.data, mem.data, mem.data, np.ones((2, 5, 3), bool)), rtol=1e-10, atol=1e-12)


def test_fused_and_book_paths_agree_values_and_grads(backend):
    fused, book = mha(flash=True), mha(flash=False)
    book.load_state_dict(fused.state_dict())
    x = rand(2, 6, 8, seed=3)
    pad = np.zeros((2, 6), bool)
    pad[1, 4:] = True
    attn_mask = np.random.default_rng(0).normal(size=(6, 6))  # a float mask is added to the scores
    outs = []
    for m in (fused, book):
        xi = mi.tensor(x.data.copy(), requires_grad=True)
        y = m(xi, key_padding_mask=pad, attn_mask=attn_mask, is_causal=True)
        (y * y).sum().backward()
        outs.append((y.data, xi.grad.data, [p.grad.data for p in m.parameters()]))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-9, atol=1e-12)
    for a, b in zip(outs[0][2], outs[1][2]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("flash", [True, False])
def test_mha_gradcheck(backend, flash):
    m = mha(C=4, H=2, flash=flash)
    x, mem = rand(2, 3, 4, seed=4, grad=True), rand(2, 2, 4, seed=5, grad=True)
    pad = np.array([[False, False], [False, True]])
    gradcheck(lambda x, *p: m(x, is_causal=True), [x, *m.parameters()], name="causal self-attention")
    gradcheck(lambda x, mem, *p: m(x, mem, mem, key_padding_mask=pad), [x, mem, *m.parameters()], name="cross-attention")


def test_bool_mask_conventions_follow_torch_multihead_attention():
    m = mha()
    x = rand(1, 4, 8, seed=6)
    pad = np.array([[False, False, True, False]])  # key 2 is padding
    base = m(x, key_padding_mask=pad).data
    x2 = x.data.copy()
    x2[0, 2] += 5.0  # change the padded token: only its own (query) row may change
    out = m(mi.tensor(x2), key_padding_mask=pad).data
    np.testing.assert_allclose(np.delete(out, 2, axis=1), np.delete(base, 2, axis=1), rtol=1e-10, atol=1e-12)
    # attn_mask True = may not attend: masking everything above the diagonal is is_causal
    future = np.triu(np.ones((4, 4), bool), k=1)
    np.testing.assert_allclose(m(x, attn_mask=future).data, m(x, is_causal=True).data, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("flash", [True, False])
def test_query_with_no_visible_key_gives_zeros_not_nan(backend, flash):
    m = mha(flash=flash, bias=False)
    x = rand(1, 3, 8, seed=7)
    out = m(x, key_padding_mask=np.array([[True, True, True]])).data
    np.testing.assert_array_equal(out, np.zeros_like(out))  # zero attention output, no bias: wo(0) = 0


@pytest.mark.parametrize("flash", [True, False])
def test_kv_cache_decoding_equals_full_causal_pass(backend, flash):
    m = mha(flash=flash)
    x = rand(2, 7, 8, seed=8)
    pad = np.zeros((2, 7), bool)
    pad[1, 1] = True  # a padded key in the middle of row 1
    full = m(x, key_padding_mask=pad, is_causal=True).data
    cache = nn.KVCache(2, m.n_heads, m.head_dim, 7, dtype=np.float64)
    with mi.no_grad():
        steps = [m(x[:, :3], key_padding_mask=pad[:, :3], is_causal=True, kv_cache=cache).data]
        for t in range(3, 7):
            steps.append(m(x[:, t : t + 1], key_padding_mask=pad[:, : t + 1], is_causal=True, kv_cache=cache).data)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-10, atol=1e-12)


def test_rotary_hook_turns_queries_and_keys_before_the_scores_and_the_cache():
    """``rotary`` sees (B, H, T, D) queries and keys: the result is the NumPy reference run on the
    turned q/k, and the cache stores turned keys (each step turns only its own tokens)."""
    m = mha()
    x = rand(2, 5, 8, seed=3)
    turn = np.random.default_rng(4).normal(size=(5, 4, 4))  # one (D, D) matrix per position

    def rotary_for(t0, t1):
        return lambda q, k: tuple(mi.tensor(np.einsum("bhtd,ted->bhte", a.data, turn[t0:t1])) for a in (q, k))

    full = m(x, is_causal=True, rotary=rotary_for(0, 5)).data
    # reference: the same attention with wq/wk outputs turned per position by hand
    def lin(z, layer):
        return z @ layer.weight.data.T + layer.bias.data
    Q = np.einsum("bhtd,ted->bhte", lin(x.data, m.wq).reshape(2, 5, 2, 4).transpose(0, 2, 1, 3), turn)
    K = np.einsum("bhtd,ted->bhte", lin(x.data, m.wk).reshape(2, 5, 2, 4).transpose(0, 2, 1, 3), turn)
    V = lin(x.data, m.wv).reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)
    s = np.where(np.tril(np.ones((5, 5), bool)), Q @ K.transpose(0, 1, 3, 2) / 2.0, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = lin((p @ V).transpose(0, 2, 1, 3).reshape(2, 5, 8), m.wo)
    np.testing.assert_allclose(full, ref, rtol=1e-10, atol=1e-12)
    cache = nn.KVCache(2, m.n_heads, m.head_dim, 5, dtype=np.float64)
    with mi.no_grad():
        steps = [m(x[:, :2], is_causal=True, kv_cache=cache, rotary=rotary_for(0, 2)).data]
        steps += [m(x[:, t : t + 1], is_causal=True, kv_cache=cache, rotary=rotary_for(t, t + 1)).data for t in range(2, 5)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-10, atol=1e-12)


def test_need_weights_are_the_attention_probabilities(backend):
    fused, book = mha(flash=True), mha(flash=False)
    book.load_state_dict(fused.state_dict())
    x, mem = rand(2, 4, 8, seed=9), rand(2, 5, 8, seed=10)
    pad = np.zeros((2, 5), bool)
    pad[0, 3:] = True
    (_, w1), (_, w2) = fused(x, mem, mem, key_padding_mask=pad, need_weights=True), book(x, mem, mem, key_padding_mask=pad, need_weights=True)
    assert w1.shape == (2, 2, 4, 5)
    np.testing.assert_allclose(w1.data, w2.data, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w1.data.sum(-1), 1.0, rtol=1e-12)
    assert np.all(w1.data[0, :, :, 3:] == 0)  # padding gets no weight


def test_mha_bad_inputs_name_the_problem():
    m = nn.MultiHeadAttention(8, 2)
    x = mi.randn(2, 4, 8)
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(2, 4\), got \(2, 5\)"):
        m(x, key_padding_mask=np.zeros((2, 5), bool))
    with pytest.raises(ValueError, match=r"attn_mask must have shape \(4, 4\) or \(2, 4, 4\), got \(3, 3\)"):
        m(x, attn_mask=np.zeros((3, 3), bool))
    with pytest.raises(TypeError, match="must be bool.*got dtype int64"):
        m(x, key_padding_mask=np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match="3-D Tensor"):
        m(mi.randn(4, 8))
    with pytest.raises(ValueError, match="share the batch size"):
        m(x, mi.randn(3, 4, 8), mi.randn(3, 4, 8))
    with pytest.raises(ValueError, match=r"embed_dim \(10\) must be divisible by num_heads \(4\)"):
        nn.MultiHeadAttention(10, 4)
    with mi.no_grad(), pytest.raises(ValueError, match="kv_cache is for self-attention"):
        m(x, mi.randn(2, 3, 8), kv_cache=nn.KVCache(2, 2, 4, 8))


def test_mha_matches_torch_multihead_attention():
    torch = pytest.importorskip("torch")
    m = mha(C=8, H=2)
    t = torch.nn.MultiheadAttention(8, 2, bias=True, batch_first=True).double()
    with torch.no_grad():
        t.in_proj_weight.copy_(torch.from_numpy(np.concatenate([m.wq.weight.data, m.wk.weight.data, m.wv.weight.data])))
        t.in_proj_bias.copy_(torch.from_numpy(np.concatenate([m.wq.bias.data, m.wk.bias.data, m.wv.bias.data])))
        t.out_proj.weight.copy_(torch.from_numpy(m.wo.weight.data))
        t.out_proj.bias.copy_(torch.from_numpy(m.wo.bias.data))
    x, mem = rand(2, 4, 8, seed=11), rand(2, 6, 8, seed=12)
    pad = np.zeros((2, 6), bool)
    pad[1, 2:] = True
    causal = np.triu(np.ones((4, 4), bool), k=1)
    ref, _ = t(torch.from_numpy(x.data), torch.from_numpy(mem.data), torch.from_numpy(mem.data), key_padding_mask=torch.from_numpy(pad))
    np.testing.assert_allclose(m(x, mem, mem, key_padding_mask=pad).data, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    ref, _ = t(*(torch.from_numpy(x.data),) * 3, attn_mask=torch.from_numpy(causal))
    np.testing.assert_allclose(m(x, attn_mask=causal).data, ref.detach().numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ positions
def test_sinusoidal_table_is_the_papers_formula():
    pe = sinusoidal_table(50, 6)
    for pos in (0, 1, 7, 49):
        for i in range(3):
            angle = pos / 10000 ** (2 * i / 6)
            assert pe[pos, 2 * i] == pytest.approx(math.sin(angle), abs=1e-12)
            assert pe[pos, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-12)
    assert sinusoidal_table(4, 5).shape == (4, 5)  # an odd width gets one more sine column


def test_positional_encodings_add_the_right_rows():
    sin = nn.SinusoidalPositionalEncoding(6, 10).double()
    x = rand(2, 3, 6, seed=13, grad=True)
    np.testing.assert_allclose(sin(x, start=4).data - x.data, np.broadcast_to(sinusoidal_table(10, 6)[4:7], (2, 3, 6)))
    assert sin.state_dict() == {}  # the table is recomputed, never saved
    gradcheck(lambda x: sin(x, 2), [x], name="SinusoidalPositionalEncoding")
    learned = nn.LearnedPositionalEmbedding(10, 6).double()
    np.testing.assert_allclose(learned(x, start=1).data - x.data, np.broadcast_to(learned.weight.data[1:4], (2, 3, 6)))
    gradcheck(lambda x, w: learned(x, 5), [x, learned.weight], name="LearnedPositionalEmbedding")
    for pe in (sin, learned):
        with pytest.raises(ValueError, match=r"positions 8..10 exceed the table of max_len=10"):
            pe(x, start=8)
        with pytest.raises(ValueError, match=r"must be \(batch, seq_len, 6\)"):
            pe(mi.randn(2, 3, 5))


def test_rope_helpers_live_once_and_per_row_positions_equal_the_shared_table(backend):
    """precompute_freqs_cis / apply_rope sit in nn/positional.py, used by LLaMA and DeepSeek alike."""
    from minillm.models import deepseek, llama
    from minillm.nn.positional import apply_rope, precompute_freqs_cis

    assert llama.precompute_freqs_cis is deepseek.precompute_freqs_cis is precompute_freqs_cis
    assert deepseek.apply_rope is apply_rope
    cos, sin = precompute_freqs_cis(8, 12)  # (12, 4) each
    x = rand(2, 5, 3, 8, seed=21, grad=True)  # (B, T, H, D)
    shared = apply_rope(x, cos.data[3:8], sin.data[3:8])  # both rows at positions 3..7
    # per-row tables: row 0 at 3..7 (the same), row 1 at 0..4 (a left-padded row counts from 0)
    pos = np.array([np.arange(3, 8), np.arange(0, 5)])  # (B, T)
    per_row = apply_rope(x, cos.data[pos], sin.data[pos])
    np.testing.assert_allclose(per_row.data[0], shared.data[0], atol=1e-6)
    np.testing.assert_allclose(per_row.data[1], apply_rope(x, cos.data[0:5], sin.data[0:5]).data[1], atol=1e-6)
    book_q, _ = llama.apply_rotary_emb(x, x, cos.data[pos], sin.data[pos])  # the book's step-by-step version
    np.testing.assert_allclose(per_row.data, book_q.data, atol=1e-6)
    gradcheck(lambda x: apply_rope(x, cos.data[pos].astype(np.float64), sin.data[pos].astype(np.float64)), [x],
              name="apply_rope per row")
    with pytest.raises(ValueError, match=r"per-row cos/sin must be .* = \(2, 5, 4\), got \(1, 5, 4\)"):
        apply_rope(x, cos.data[None, 3:8], sin.data[None, 3:8])


# ------------------------------------------------------------------ feed-forward
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_feed_forward(activation):
    ffn = scramble(nn.FeedForward(4, 16, activation=activation).double())
    x = rand(2, 3, 4, seed=14, grad=True)
    h = x.data @ ffn.w1.weight.data.T + ffn.w1.bias.data
    if activation == "relu":
        h = np.maximum(h, 0)
    else:  # exact GELU, x·Φ(x)
        h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))
    np.testing.assert_allclose(ffn(x).data, h @ ffn.w2.weight.data.T + ffn.w2.bias.data, rtol=1e-6, atol=1e-8)
    gradcheck(lambda x, *p: ffn(x), [x, *ffn.parameters()], name=f"FeedForward({activation})")
    with pytest.raises(ValueError, match="activation must be one of"):
        nn.FeedForward(4, 8, activation="swish")
