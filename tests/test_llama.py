"""LLaMA2 of Happy LLM 5.1, one test group per subsection (5.1.1 ... 5.1.6)."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minillm as mi
import minillm.nn.functional as F
from minillm.models.llama import (
    MLP, PRESETS, Attention, DecoderLayer, ModelConfig, RMSNorm, Transformer, apply_rotary_emb, precompute_freqs_cis,
    repeat_kv,
)
from minillm.testing import gradcheck
from _helpers import scramble as _scramble

V = 64


pytestmark = pytest.mark.usefixtures("one_numba_thread")  # thousands of tiny passes: see conftest


def cfg(**kw):
    """A very small config: fast tests."""
    return ModelConfig(**{**dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=V, max_seq_len=32), **kw})


def scramble(model, std=0.3):
    """Larger random weights than the 0.02 init, so outputs depend strongly on every input."""
    return _scramble(model, std)


def ids(B, T, vocab=V, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, size=(B, T))


# =============================================================================== 5.1.1
def test_config_defaults_are_the_books():
    c = ModelConfig()
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.hidden_dim, c.multiple_of) == (768, 12, 16, 8, 6144, None, 64)
    assert (c.norm_eps, c.max_seq_len, c.dropout, c.tie_word_embeddings, c.flash_attn) == (1e-5, 512, 0.0, True, True)
    assert c.head_dim == 48 and c.ffn_hidden_dim == 2048
    assert ModelConfig(n_kv_heads=None).n_kv_heads == 16
    assert ModelConfig.from_dict(c.to_dict()) == c


def test_book_model_parameter_count():
    # The book prints "Number of parameters: 82594560" for Transformer(ModelConfig()) in 5.1.6.
    assert Transformer(ModelConfig()).num_parameters() == 82_594_560


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(dim=100, n_heads=16), "dim"),
        (dict(n_heads=16, n_kv_heads=5), "n_kv_heads"),
        (dict(dim=0), "dim"),
        (dict(n_layers=-1), "n_layers"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(max_seq_len=0), "max_seq_len"),
        (dict(hidden_dim=0), "hidden_dim"),
        (dict(n_heads=2.5), "n_heads"),
        (dict(dropout=1.0), "dropout"),
        (dict(norm_eps=0.0), "norm_eps"),
        (dict(dim=24, n_heads=8, n_kv_heads=8), "n_heads"),  # head_dim 3 is odd: no RoPE pairs
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field}\b"):
        ModelConfig(**kwargs)


def test_config_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown field.*n_layer"):
        ModelConfig.from_dict({"n_layer": 3})


def test_presets():
    tiny = ModelConfig.preset("tiny", vocab_size=512)
    assert (tiny.dim, tiny.n_layers, tiny.n_heads, tiny.n_kv_heads, tiny.vocab_size) == (128, 4, 4, 2, 512)
    small = ModelConfig.preset("small", vocab_size=512)
    assert (small.dim, small.n_layers, small.n_heads, small.ffn_hidden_dim) == (288, 6, 6, 768)  # llama2.c stories15M
    assert ModelConfig.preset("book") == ModelConfig()
    assert ModelConfig.preset("tiny", max_seq_len=128).max_seq_len == 128
    assert set(PRESETS) >= {"tiny", "small"}
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        ModelConfig.preset("huge")
    # tiny: 4 layers × (attention 49,152 + MLP 147,456 + norms 256) + embedding 512·128 + final norm 128
    assert Transformer(tiny).num_parameters() == 4 * (49152 + 147456 + 256) + 512 * 128 + 128


# =============================================================================== 5.1.2
def test_rmsnorm_fused_equals_book_formula(backend):
    norm = RMSNorm(8, eps=1e-5).double()
    norm.weight.data[...] = np.linspace(0.5, 2.0, 8)
    x = mi.randn(2, 3, 8, dtype=mi.float64, requires_grad=True)
    book = norm._norm(x) * norm.weight  # the book's x·rsqrt(mean(x²)+eps)·γ from primitive ops
    np.testing.assert_allclose(norm(x).data, book.data, rtol=1e-12)
    gradcheck(lambda x, w: norm(x), [x, norm.weight], name="RMSNorm")
    assert norm(mi.randn(1, 50, 8)).shape == (1, 50, 8)  # the book's shape check


# =============================================================================== 5.1.3.1
def test_repeat_kv():
    x = mi.randn(2, 5, 3, 4)
    y = repeat_kv(x, 2)
    assert y.shape == (2, 5, 6, 4)
    np.testing.assert_array_equal(y.data, np.repeat(x.data, 2, axis=2))  # head h reads kv head h // 2
    assert repeat_kv(x, 1) is x


# =============================================================================== 5.1.3.2
def test_precompute_freqs_cis():
    cos, sin = precompute_freqs_cis(288 // 6, 50)
    assert cos.shape == sin.shape == (50, 24) and cos.dtype == np.float32  # the book prints (50, 24)
    t, i = 7, 5
    angle = t * 10000.0 ** (-2 * i / 48)
    assert cos.data[t, i] == pytest.approx(math.cos(angle), abs=1e-7)
    assert sin.data[t, i] == pytest.approx(math.sin(angle), abs=1e-7)


def test_apply_rotary_emb_book_equals_fused(backend):
    xq = mi.randn(1, 50, 6, 48, dtype=mi.float64)
    xk = mi.randn(1, 50, 3, 48, dtype=mi.float64)
    cos, sin = precompute_freqs_cis(48, 50)
    q_out, k_out = apply_rotary_emb(xq, xk, cos, sin)
    assert q_out.shape == (1, 50, 6, 48) and k_out.shape == (1, 50, 3, 48)
    np.testing.assert_allclose(q_out.data, F.rotary_embedding(xq, cos, sin).data, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(k_out.data, F.rotary_embedding(xk, cos, sin).data, rtol=1e-6, atol=1e-6)
    # adjacent pairs are rotated: dims (0, 1) at position t turn by angle t·θ_0 = t radians
    t = 3
    x0, x1 = xq.data[0, t, 0, 0], xq.data[0, t, 0, 1]
    np.testing.assert_allclose(q_out.data[0, t, 0, :2], [x0 * math.cos(t) - x1 * math.sin(t), x0 * math.sin(t) + x1 * math.cos(t)], rtol=1e-6)
    # a rotation keeps lengths
    np.testing.assert_allclose(np.linalg.norm(q_out.data, axis=-1), np.linalg.norm(xq.data, axis=-1), rtol=1e-6)


def test_rope_scores_depend_only_on_relative_position():
    cos, sin = precompute_freqs_cis(16, 40)
    q = np.random.default_rng(1).standard_normal((1, 1, 1, 16))
    k = np.random.default_rng(2).standard_normal((1, 1, 1, 16))

    def score(m, n):
        rq = F.rotary_embedding(mi.tensor(q), cos.data[m : m + 1], sin.data[m : m + 1]).data
        rk = F.rotary_embedding(mi.tensor(k), cos.data[n : n + 1], sin.data[n : n + 1]).data
        return float((rq * rk).sum())

    assert score(10, 4) == pytest.approx(score(30, 24), rel=1e-5)


# =============================================================================== 5.1.3.3
def _attn_pair(n_kv_heads=2, dtype=mi.float64):
    fused = Attention(cfg(n_kv_heads=n_kv_heads)).to(dtype)
    manual = Attention(cfg(n_kv_heads=n_kv_heads, flash_attn=False)).to(dtype)
    manual.load_state_dict(fused.state_dict())
    return fused, manual


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_attention_fused_equals_book_path(backend, n_kv_heads):
    fused, manual = _attn_pair(n_kv_heads)
    cos, sin = precompute_freqs_cis(8, 6)
    x = mi.randn(2, 6, 32, dtype=mi.float64)
    out_f, out_m = fused(x, cos.double(), sin.double()), manual(x, cos.double(), sin.double())
    assert out_f.shape == (2, 6, 32)
    np.testing.assert_allclose(out_f.data, out_m.data, rtol=1e-9, atol=1e-12)
    # gradients of every weight agree too
    out_f.sum().backward()
    out_m.sum().backward()
    for (name, pf), (_, pm) in zip(fused.named_parameters(), manual.named_parameters()):
        np.testing.assert_allclose(pf.grad.data, pm.grad.data, rtol=1e-8, atol=1e-12, err_msg=name)


def test_attention_gradcheck(backend):
    attn = Attention(cfg(dim=8, n_heads=2, n_kv_heads=1)).double()
    scramble(attn, 0.5)
    cos, sin = precompute_freqs_cis(4, 3)
    x = mi.randn(1, 3, 8, dtype=mi.float64, requires_grad=True)
    ps = list(attn.parameters())
    gradcheck(lambda x, *p: attn(x, cos.double(), sin.double()), [x, *ps], name="Attention")


def test_mha_equals_plain_numpy_attention():
    """n_kv_heads == n_heads is ordinary multi-head attention: compare with a NumPy reference."""
    attn = Attention(cfg(n_kv_heads=4)).double()
    scramble(attn, 0.2)
    B, T, H, D = 2, 5, 4, 8
    x = np.random.default_rng(0).standard_normal((B, T, 32))
    cos, sin = precompute_freqs_cis(D, T)
    out = attn(mi.tensor(x), cos.double(), sin.double()).data

    def rope(z):  # (B, T, H, D), adjacent pairs
        c, s = cos.data[None, :, None, :].astype(np.float64), sin.data[None, :, None, :].astype(np.float64)
        r = np.empty_like(z)
        r[..., 0::2] = z[..., 0::2] * c - z[..., 1::2] * s
        r[..., 1::2] = z[..., 0::2] * s + z[..., 1::2] * c
        return r

    q = rope((x @ attn.wq.weight.data.T).reshape(B, T, H, D)).transpose(0, 2, 1, 3)
    k = rope((x @ attn.wk.weight.data.T).reshape(B, T, H, D)).transpose(0, 2, 1, 3)
    v = (x @ attn.wv.weight.data.T).reshape(B, T, H, D).transpose(0, 2, 1, 3)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D) + np.triu(np.full((T, T), -np.inf), 1)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, H * D) @ attn.wo.weight.data.T
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12)


def test_gqa_equals_mha_with_repeated_kv_weights(backend):
    """GQA (2 kv heads for 4 query heads) = MHA whose wk/wv repeat each kv head's rows."""
    gqa = scramble(Transformer(cfg(n_kv_heads=2)), 0.2)
    mha = Transformer(cfg(n_kv_heads=4))
    state = {k: v.data.copy() for k, v in gqa.state_dict().items()}
    for i in range(2):
        for w in ("wk", "wv"):
            key = f"layers.{i}.attention.{w}.weight"
            state[key] = np.repeat(state[key].reshape(2, 8, 32), 2, axis=0).reshape(32, 32)
    mha.load_state_dict(state)
    x = ids(2, 10)
    np.testing.assert_allclose(gqa(x).logits.data, mha(x).logits.data, rtol=1e-4, atol=1e-5)


# =============================================================================== 5.1.4
def test_mlp_hidden_dim_and_swiglu(backend):
    assert MLP(768, None, 64, 0.0).w1.out_features == 2048  # int(2·4·768/3) = 2048
    assert MLP(288, None, 32, 0.0).w1.out_features == 768
    assert MLP(100, None, 64, 0.0).w1.out_features == 320  # int(266.7) = 266 -> rounded up to 320
    assert MLP(32, 48, 64, 0.0).w1.out_features == 48  # an explicit hidden_dim is kept
    mlp = MLP(8, 12, 4, 0.0).double()
    x = mi.randn(2, 3, 8, dtype=mi.float64, requires_grad=True)
    book = mlp.w2(F.silu(mlp.w1(x)) * mlp.w3(x))  # the book's forward
    np.testing.assert_allclose(mlp(x).data, book.data, rtol=1e-12)
    gradcheck(lambda x, *p: mlp(x), [x, *mlp.parameters()], name="MLP")


# =============================================================================== 5.1.5
def test_decoder_layer_is_pre_norm_residual(backend):
    c = cfg(dim=8, n_heads=2, n_kv_heads=1, hidden_dim=8)
    layer = scramble(DecoderLayer(0, c).double(), 0.4)
    cos, sin = precompute_freqs_cis(4, 3)
    cos, sin = cos.double(), sin.double()
    x = mi.randn(1, 3, 8, dtype=mi.float64, requires_grad=True)
    h = x + layer.attention(layer.attention_norm(x), cos, sin)
    ref = h + layer.feed_forward(layer.ffn_norm(h))
    np.testing.assert_allclose(layer(x, cos, sin).data, ref.data, rtol=1e-12)
    gradcheck(lambda x, *p: layer(x, cos, sin), [x, *layer.parameters()], name="DecoderLayer")


# =============================================================================== 5.1.6
BOOK_NAMES = [
    "tok_embeddings.weight",
    *[f"layers.{i}.{n}" for i in range(2) for n in (
        "attention.wq.weight", "attention.wk.weight", "attention.wv.weight", "attention.wo.weight",
        "feed_forward.w1.weight", "feed_forward.w2.weight", "feed_forward.w3.weight",
        "attention_norm.weight", "ffn_norm.weight",
    )],
    "norm.weight",
]


def test_parameter_names_follow_the_book_and_tying():
    tied = Transformer(cfg())
    assert [n for n, _ in tied.named_parameters()] == BOOK_NAMES  # output.weight is the embedding: listed once
    assert tied.output.weight is tied.tok_embeddings.weight
    assert list(tied.state_dict()) == BOOK_NAMES + ["output.weight"]  # state_dict names both, as PyTorch does
    untied = Transformer(cfg(tie_word_embeddings=False))
    assert [n for n, _ in untied.named_parameters()] == BOOK_NAMES + ["output.weight"]
    assert untied.num_parameters() == tied.num_parameters() + V * 32
    assert "freqs_cos" not in tied.state_dict()  # RoPE tables are non-persistent buffers


def test_init_std():
    mi.manual_seed(0)
    c = ModelConfig(dim=256, n_layers=8, n_heads=4, n_kv_heads=4, vocab_size=512, max_seq_len=16)
    model = Transformer(c)
    resid = 0.02 / math.sqrt(2 * 8)
    for name, p in model.named_parameters():
        if name.endswith(("wo.weight", "w2.weight")):
            assert abs(p.data.std() - resid) < 0.1 * resid, name
        elif p.ndim == 2:
            assert abs(p.data.std() - 0.02) < 0.002, name
        else:
            assert np.all(p.data == 1.0), name  # RMSNorm weights start at 1


def test_forward_shapes_and_loss_at_init(backend):
    model = Transformer(cfg(vocab_size=128))
    x, y = ids(4, 16, 128, seed=1), ids(4, 16, 128, seed=2)
    out = model(x)
    assert out.logits.shape == (4, 16, 128) and out.loss is None and out["logits"] is out.logits
    loss = model(x, targets=y).loss
    assert loss.shape == () and abs(loss.item() - math.log(128)) < 0.05 * math.log(128)
    assert model(mi.tensor(x), logits_to_keep=1).logits.shape == (4, 1, 128)


def test_loss_ignores_minus_100(backend):
    model = scramble(Transformer(cfg()), 0.1)
    x, y = ids(2, 8, seed=3), ids(2, 8, seed=4)
    y_masked = y.copy()
    y_masked[:, :3] = -100
    logits = model(x).logits.data.astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    nll = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    assert model(x, targets=y_masked).loss.item() == pytest.approx(nll[:, 3:].mean(), rel=1e-4)


def test_book_path_model_equals_fused_model(backend):
    fused = scramble(Transformer(cfg()), 0.2)
    book = Transformer(cfg(flash_attn=False))
    book.load_state_dict(fused.state_dict())
    x, y = ids(2, 12, seed=5), ids(2, 12, seed=6)
    lf, lb = fused(x, targets=y), book(x, targets=y)
    np.testing.assert_allclose(lf.logits.data, lb.logits.data, rtol=1e-4, atol=1e-5)
    lf.loss.backward()
    lb.loss.backward()
    for (n, pf), (_, pb) in zip(fused.named_parameters(), book.named_parameters()):
        np.testing.assert_allclose(pf.grad.data, pb.grad.data, rtol=1e-3, atol=1e-6, err_msg=n)


def test_transformer_gradcheck(backend):
    c = ModelConfig(dim=8, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=7, max_seq_len=8, hidden_dim=8, tie_word_embeddings=False)
    model = scramble(Transformer(c).double(), 0.4)
    x, y = ids(2, 4, 7, seed=7), ids(2, 4, 7, seed=8)
    gradcheck(lambda *p: model(x, targets=y).loss, list(model.parameters()), name="Transformer loss")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_causal_future_tokens_never_change_past_logits(backend, data):
    model = _causal_model()
    T = data.draw(st.integers(2, 12), label="T")
    t = data.draw(st.integers(0, T - 2), label="t")
    x = np.array(data.draw(st.lists(st.integers(0, V - 1), min_size=T, max_size=T), label="x"))[None]
    suffix = data.draw(st.lists(st.integers(0, V - 1), min_size=T - t - 1, max_size=T - t - 1), label="suffix")
    x2 = x.copy()
    x2[0, t + 1 :] = suffix
    a, b = model(x).logits.data, model(x2).logits.data
    np.testing.assert_allclose(a[:, : t + 1], b[:, : t + 1], rtol=1e-5, atol=1e-6)


_CAUSAL = {}


def _causal_model():
    if "m" not in _CAUSAL:
        mi.manual_seed(3)
        _CAUSAL["m"] = scramble(Transformer(cfg()), 0.3)
    return _CAUSAL["m"]


def test_left_padding_mask_and_positions(backend):
    model = scramble(Transformer(cfg()), 0.2)
    prompt = ids(1, 7, seed=9)
    alone = model(prompt).logits.data[0]
    padded = np.concatenate([np.zeros((1, 3), dtype=np.int64), prompt], axis=1)  # 3 padding tokens on the left
    mask = np.array([[0, 0, 0] + [1] * 7])
    pos = np.array([[0, 0, 0, 0, 1, 2, 3, 4, 5, 6]])
    with_pos = model(padded, attention_mask=mask, position_ids=pos).logits.data[0, 3:]
    np.testing.assert_allclose(with_pos, alone, rtol=1e-4, atol=1e-5)
    # RoPE only sees relative positions, so even default positions give the same numbers (up to rounding)
    np.testing.assert_allclose(model(padded, attention_mask=mask).logits.data[0, 3:], alone, rtol=1e-3, atol=1e-4)
    # without the mask the padding leaks into the real tokens
    assert np.abs(model(padded).logits.data[0, 3:] - alone).max() > 1e-3
    # the step-by-step path agrees
    book = Transformer(cfg(flash_attn=False))
    book.load_state_dict(model.state_dict())
    np.testing.assert_allclose(book(padded, attention_mask=mask, position_ids=pos).logits.data[0, 3:], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("flash", [True, False])
def test_kv_cache_matches_full_recompute(backend, flash):
    model = scramble(Transformer(cfg(flash_attn=flash)), 0.2)
    x = ids(2, 12, seed=10)
    full = model(x).logits.data
    cache = model.new_kv_cache(batch_size=2)
    with mi.no_grad():
        steps = [model(x[:, :5], kv_cache=cache).logits.data]  # prefill 5 tokens
        for t in range(5, 12):  # then one token at a time
            steps.append(model(x[:, t : t + 1], kv_cache=cache).logits.data)
    assert cache[0].length == 12
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-4, atol=1e-5)


def test_kv_cache_needs_no_grad():
    model = Transformer(cfg())
    with pytest.raises(RuntimeError, match="no_grad"):
        model(ids(1, 3), kv_cache=model.new_kv_cache(1))
    cache = model.new_kv_cache(1, max_len=4)
    with mi.no_grad(), pytest.raises(ValueError, match="longer than max_seq_len|exceed"):
        model(ids(1, 5), kv_cache=cache)


def test_dropout_only_in_training():
    model = Transformer(cfg(dropout=0.3))
    x = ids(1, 8)
    assert not np.allclose(model(x).logits.data, model(x).logits.data)
    model.eval()
    np.testing.assert_array_equal(model(x).logits.data, model(x).logits.data)


def test_bad_inputs_raise_clear_errors():
    model = Transformer(cfg())
    with pytest.raises(IndexError, match=r"Transformer: input_ids 64 at position \(0, 2\) is outside the valid range \[0, 64\)"):
        model(np.array([[1, 2, 64]]))
    with pytest.raises(IndexError, match=r"input_ids -1 at position \(0, 0\) is outside"):
        model(np.array([[-1, 2]]))
    with pytest.raises(TypeError, match="integer token ids.*float32"):
        model(mi.randn(1, 4))
    with pytest.raises(ValueError, match="33 tokens is longer than max_seq_len=32"):
        model(ids(1, 33))
    with pytest.raises(ValueError, match=r"shape \(batch, seq_len\)"):
        model(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="targets must have the shape"):
        model(ids(1, 4), targets=ids(1, 3))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(ids(1, 4), attention_mask=np.ones((1, 5)))
    with pytest.raises(TypeError, match="expected a ModelConfig"):
        Transformer({"dim": 32})


def test_tiny_model_overfits_one_batch():
    from minillm.optim import AdamW

    mi.manual_seed(0)
    model = Transformer(cfg())
    data = ids(4, 17, seed=11)  # 4 random sequences of 16 next-token pairs: pure memorisation
    x, y = data[:, :-1], data[:, 1:]
    opt = AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0)
    first = None
    for step in range(300):
        loss = model(x, targets=y).loss
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
        opt.zero_grad()
        if loss.item() < 0.1:
            break
    assert first > 3.5 and loss.item() < 0.1, (first, step, loss.item())
