"""The Transformer of Happy LLM chapter 2 (``minillm/models/transformer.py``), one group per section."""
import math

import numpy as np
import pytest

import minillm as mi
import minillm.nn as nn
from minillm.models.transformer import (
    MLP, Decoder, DecoderLayer, Encoder, EncoderLayer, LayerNorm, ModelArgs, MultiHeadAttention, PositionalEncoding,
    Transformer,
)
from minillm.testing import gradcheck

SV, TV = 23, 19  # source / target vocabularies (different, so mix-ups fail)


pytestmark = pytest.mark.usefixtures("one_numba_thread")  # thousands of tiny passes: see conftest


def args(**kw):
    return ModelArgs(**{**dict(dim=16, n_heads=4, n_layer=2, dropout=0.0, max_seq_len=12, vocab_size=SV,
                               src_vocab_size=SV, tgt_vocab_size=TV), **kw})


def scramble(module, std=0.3):
    for name, p in module.named_parameters():
        if p.ndim == 2:
            nn.init.normal_(p, 0.0, std)
        elif "norm" in name:  # LayerNorm gains/biases: away from 1/0 so a mix-up shows
            nn.init.normal_(p, 1.0 if name.endswith("weight") else 0.0, 0.2)
        else:
            nn.init.normal_(p, 0.0, 0.1)
    return module


def model(seed=0, **kw):
    mi.manual_seed(seed)
    return scramble(Transformer(args(**kw)).double())


def ids(B, T, vocab, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, size=(B, T))


def rand(*shape, seed=0, grad=False):
    return mi.tensor(np.random.default_rng(seed).normal(size=shape), dtype=mi.float64, requires_grad=grad)


# =============================================================================== ModelArgs (2.3.3)
def test_model_args_defaults_and_aliases():
    a = ModelArgs()
    assert (a.n_embd, a.dim, a.block_size, a.max_seq_len, a.hidden_dim) == (128, 128, 128, 128, 512)
    assert (a.src_vocab_size, a.tgt_vocab_size, a.norm_first) == (1000, 1000, True)
    assert ModelArgs(block_size=64).max_seq_len == 64 and ModelArgs(max_seq_len=64).block_size == 64


def test_model_args_reject_the_books_inconsistencies():
    with pytest.raises(ValueError, match=r"n_embd \(100\) must equal dim \(64\)"):
        ModelArgs(n_embd=100, dim=64, n_heads=4)
    # the book's own call: block_size 1000 vs max_seq_len 512
    with pytest.raises(ValueError, match=r"block_size \(1000\) must equal max_seq_len \(512\)"):
        ModelArgs(100, 10, 100, 0.1, 512, 1000, 1000, 2)
    assert ModelArgs(100, 10, 100, 0.1, 512, 1000, None, 2).n_layer == 2


@pytest.mark.parametrize("kw, field", [
    (dict(dim=30, n_heads=4), "dim"), (dict(n_heads=0), "n_heads"), (dict(dropout=1.0), "dropout"),
    (dict(vocab_size=0), "vocab_size"), (dict(norm_first="yes"), "norm_first"), (dict(norm_eps=0), "norm_eps"),
    (dict(pad_token_id=1000), "pad_token_id"), (dict(n_layer=1.5), "n_layer"),
])
def test_model_args_validation_names_the_field(kw, field):
    with pytest.raises(ValueError, match=rf"ModelArgs\.{field}"):
        ModelArgs(**kw)


def test_model_args_round_trip_and_unknown_fields():
    a = args(norm_first=False, pad_token_id=0)
    assert ModelArgs.from_dict(a.to_dict()) == a
    with pytest.raises(ValueError, match="unknown field"):
        ModelArgs.from_dict({"n_embed": 3})


# =============================================================================== 2.1 attention
def test_book_multihead_attention_is_the_nn_block():
    attn = MultiHeadAttention(args(bias=False), is_causal=True)
    assert isinstance(attn, nn.MultiHeadAttention) and attn.is_causal
    assert sorted(n for n, _ in attn.named_parameters()) == ["wk.weight", "wo.weight", "wq.weight", "wv.weight"]
    attn = scramble(attn.double())
    x, mem = rand(2, 5, 16, seed=1, grad=True), rand(2, 3, 16, seed=2, grad=True)
    assert attn(x, mem, mem).shape == (2, 5, 16)  # cross-attention: keys of another length (the book's view() fails here)
    gradcheck(lambda x, mem, *p: attn(x, mem, mem), [x, mem, *attn.parameters()], name="MultiHeadAttention")


# =============================================================================== 2.2.2 MLP
def test_mlp_is_relu_ffn_of_four_times_dim(backend):
    m = Transformer(args())
    ffn = m.transformer.encoder.layers[0].feed_forward
    assert isinstance(ffn, MLP) and ffn.w1.weight.shape == (64, 16) and ffn.w2.weight.shape == (16, 64)
    mlp = scramble(MLP(4, 8, 0.0).double())
    x = rand(2, 3, 4, seed=3, grad=True)
    ref = np.maximum(x.data @ mlp.w1.weight.data.T, 0) @ mlp.w2.weight.data.T
    np.testing.assert_allclose(mlp(x).data, ref, rtol=1e-12)
    gradcheck(lambda x, *p: mlp(x), [x, *mlp.parameters()], name="MLP")


# =============================================================================== 2.2.3 LayerNorm
def test_layernorm_pytorch_formula_and_the_books_variant():
    C = 8
    x = rand(3, C, seed=4, grad=True)
    pt, book = LayerNorm(C, eps=1e-5).double(), LayerNorm(C, eps=1e-6, book_formula=True).double()
    for ln in (pt, book):
        ln.weight.data[:] = np.linspace(0.5, 1.5, C)
        ln.bias.data[:] = np.linspace(-0.2, 0.2, C)
    xc = x.data - x.data.mean(-1, keepdims=True)
    w, b = pt.weight.data, pt.bias.data
    np.testing.assert_allclose(pt(x).data, w * xc / np.sqrt(x.data.var(-1, keepdims=True) + 1e-5) + b, rtol=1e-12)
    np.testing.assert_allclose(book(x).data, w * xc / (x.data.std(-1, ddof=1, keepdims=True) + 1e-6) + b, rtol=1e-12)
    # with eps -> 0 they differ only by biased vs unbiased variance: a constant factor sqrt((C-1)/C)
    pt0, book0 = LayerNorm(C, eps=1e-300).double(), LayerNorm(C, eps=0.0, book_formula=True).double()
    np.testing.assert_allclose(book0(x).data, pt0(x).data * math.sqrt((C - 1) / C), rtol=1e-12)
    gradcheck(lambda x, *p: pt(x), [x, pt.weight, pt.bias], name="LayerNorm")
    gradcheck(lambda x, *p: book(x), [x, book.weight, book.bias], name="LayerNorm(book_formula)")
    with pytest.raises(ValueError, match=r"last dim must be 8, got shape \(3, 4\)"):
        pt(mi.randn(3, 4))


def test_model_uses_the_book_layernorm_when_asked():
    m = Transformer(args(book_layernorm=True))
    assert all(mod.book_formula for mod in m.modules() if isinstance(mod, LayerNorm))


# =============================================================================== 2.2.4-2.2.6 layers
@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_layer_residual_placement(backend, norm_first):
    layer = scramble(EncoderLayer(args(norm_first=norm_first)).double())
    x = rand(2, 4, 16, seed=5)
    attn = layer.attention(x, x, x) if not norm_first else None
    if norm_first:
        n = layer.attention_norm(x)
        h = x + layer.attention(n, n, n)
        ref = h + layer.feed_forward(layer.ffn_norm(h))
    else:
        h = layer.attention_norm(x + attn)
        ref = layer.ffn_norm(h + layer.feed_forward(h))
    np.testing.assert_allclose(layer(x).data, ref.data, rtol=1e-12)


@pytest.mark.parametrize("norm_first", [True, False])
def test_layers_gradcheck(backend, norm_first):
    a = args(dim=8, n_heads=2, n_layer=1, hidden_dim=8, norm_first=norm_first, bias=True)
    enc, dec = scramble(EncoderLayer(a).double()), scramble(DecoderLayer(a).double())
    x, mem = rand(2, 3, 8, seed=6, grad=True), rand(2, 2, 8, seed=7, grad=True)
    src_pad = np.array([[False, False], [False, True]])
    gradcheck(lambda x, *p: enc(x, np.array([[False] * 3, [False, False, True]])), [x, *enc.parameters()], name="EncoderLayer")
    gradcheck(lambda x, mem, *p: dec(x, mem, src_pad), [x, mem, *dec.parameters()], name="DecoderLayer")


def test_encoder_decoder_stacks_end_with_a_norm(backend):
    a = args()
    enc, dec = scramble(Encoder(a).double()), scramble(Decoder(a).double())
    x, y = rand(1, 4, 16, seed=8), rand(1, 3, 16, seed=9)
    h = x
    for layer in enc.layers:
        h = layer(h)
    np.testing.assert_allclose(enc(x).data, enc.norm(h).data, rtol=1e-12)
    assert dec(y, enc(x)).shape == (1, 3, 16)


def test_positional_encoding_uses_block_size():
    pe = PositionalEncoding(args(max_seq_len=12))
    assert pe.pe.shape == (12, 16)
    with pytest.raises(ValueError, match="max_len=12"):
        pe(mi.randn(1, 13, 16))


# =============================================================================== 2.3.3 Transformer
def test_parameter_names_and_counts():
    m = Transformer(args())
    names = [n for n, _ in m.named_parameters()]
    assert "transformer.wte.weight" in names and "transformer.tgt_wte.weight" in names and "lm_head.weight" in names
    assert "transformer.decoder.layers.1.mask_attention.wq.weight" in names
    assert "transformer.encoder.layers.0.ffn_norm.bias" in names
    # per layer: 4 attention matrices (3 in the decoder: 8) + MLP 2·16·64 + 2 (3) LayerNorms
    enc_layer = 4 * 16 * 16 + 2 * 16 * 64 + 2 * 32
    dec_layer = 8 * 16 * 16 + 2 * 16 * 64 + 3 * 32
    expected = SV * 16 + TV * 16 + 2 * enc_layer + 2 * dec_layer + 2 * 32 + TV * 16
    assert m.get_num_params() == expected
    assert m.get_num_params(non_embedding=True) == expected - (SV + TV) * 16
    assert Transformer.is_encoder_decoder and m.config is m.args


def test_init_std():
    mi.manual_seed(0)
    m = Transformer(args(dim=64, n_heads=4, vocab_size=500, src_vocab_size=500, tgt_vocab_size=500))
    assert m.transformer.wte.weight.data.std() == pytest.approx(0.02, rel=0.05)
    assert m.lm_head.weight.data.std() == pytest.approx(0.02, rel=0.05)


def test_forward_loss_unpacks_like_the_book_and_ignores_minus_100(backend):
    m = model()
    src, tgt, y = ids(2, 5, SV, 1), ids(2, 4, TV, 2), ids(2, 4, TV, 3)
    logits, loss = m(src, tgt, targets=y)
    assert logits.shape == (2, 4, TV)
    lp = logits.data - np.log(np.exp(logits.data).sum(-1, keepdims=True))
    nll = -np.take_along_axis(lp, y[..., None], -1)[..., 0]
    assert loss.item() == pytest.approx(nll.mean(), rel=1e-10)
    y2 = y.copy()
    y2[1, 2:] = -100
    keep = y2 != -100
    assert m(src, tgt, targets=y2).loss.item() == pytest.approx(nll[keep].mean(), rel=1e-10)
    assert m(src, tgt).loss is None and m(src, tgt)["logits"].shape == (2, 4, TV)


@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_loss_gradcheck(norm_first):  # (default kernels; the layer gradchecks above run both backends)
    mi.manual_seed(1)
    a = ModelArgs(dim=8, n_heads=2, n_layer=1, hidden_dim=8, dropout=0.0, max_seq_len=6, vocab_size=5, norm_first=norm_first)
    m = scramble(Transformer(a).double())
    src, tgt, y = ids(2, 3, 5, 4), ids(2, 2, 5, 5), ids(2, 2, 5, 6)
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    gradcheck(lambda *p: m(src, tgt, targets=y, src_mask=mask).loss, list(m.parameters()), name="Transformer loss",
              directions=2)  # whole model: random directions; each layer above is checked element by element


@pytest.mark.parametrize("norm_first", [True, False])
def test_fused_attention_model_equals_book_path_model(backend, norm_first):
    fused = model(norm_first=norm_first)
    book = Transformer(args(norm_first=norm_first, flash_attn=False)).double()
    book.load_state_dict(fused.state_dict())
    src, tgt = ids(2, 6, SV, 7), ids(2, 5, TV, 8)
    mask = np.array([[1] * 6, [1, 1, 1, 1, 0, 0]])
    outs = []
    for m in (fused, book):
        out = m(src, tgt, targets=tgt, src_mask=mask)
        out.loss.backward()
        outs.append((out.logits.data, [p.grad.data for p in m.parameters()]))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-9, atol=1e-12)
    for a, b in zip(outs[0][1], outs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)


# ------------------------------------------------------------------ proofs of the masks
@pytest.mark.parametrize("norm_first", [True, False])
def test_causality_future_targets_never_change_earlier_outputs(backend, norm_first):
    m = model(norm_first=norm_first)
    src = ids(1, 6, SV, 9)
    rng = np.random.default_rng(10)
    for t in range(0, 7):
        tgt = rng.integers(0, TV, size=(1, 8))
        tgt2 = tgt.copy()
        tgt2[0, t + 1 :] = rng.integers(0, TV, size=7 - t)
        a, b = m(src, tgt).logits.data, m(src, tgt2).logits.data
        np.testing.assert_allclose(a[:, : t + 1], b[:, : t + 1], rtol=1e-10, atol=1e-12)
        if t < 6:
            assert np.abs(a[:, t + 1 :] - b[:, t + 1 :]).max() > 1e-6  # and later outputs do see them


@pytest.mark.parametrize("norm_first", [True, False])
def test_masking_a_source_token_removes_its_influence(backend, norm_first):
    m = model(norm_first=norm_first)
    src, tgt = ids(1, 6, SV, 11), ids(1, 5, TV, 12)
    src2 = src.copy()
    src2[0, 3] = (src[0, 3] + 1) % SV  # change source token 3
    mask = np.array([[1, 1, 1, 0, 1, 1]])  # ... and mask it out
    np.testing.assert_allclose(m(src, tgt, src_mask=mask).logits.data, m(src2, tgt, src_mask=mask).logits.data, rtol=1e-10, atol=1e-12)
    assert np.abs(m(src, tgt).logits.data - m(src2, tgt).logits.data).max() > 1e-4  # unmasked it matters


@pytest.mark.parametrize("norm_first", [True, False])
def test_padded_batch_equals_each_sequence_alone(backend, norm_first):
    m = model(norm_first=norm_first)
    PAD = 0
    def real(n, vocab, seed):  # ids 1.., never the padding id
        return np.random.default_rng(seed).integers(1, vocab, size=n)

    pairs = [(real(6, SV, 13), real(3, TV, 14)), (real(2, SV, 15), real(7, TV, 16)), (real(4, SV, 17), real(5, TV, 18))]
    S, T = max(len(s) for s, _ in pairs), max(len(t) for _, t in pairs)
    src = np.full((3, S), PAD)
    tgt = np.full((3, T), PAD)
    src_mask, tgt_mask = np.zeros((3, S), int), np.zeros((3, T), int)
    for i, (s, t) in enumerate(pairs):
        src[i, : len(s)], tgt[i, : len(t)] = s, t
        src_mask[i, : len(s)], tgt_mask[i, : len(t)] = 1, 1
    batch = m(src, tgt, src_mask=src_mask, tgt_mask=tgt_mask).logits.data
    for i, (s, t) in enumerate(pairs):
        alone = m(s[None], t[None]).logits.data[0]
        np.testing.assert_allclose(batch[i, : len(t)], alone, rtol=1e-10, atol=1e-12)
    # pad_token_id gives the same masks without passing them
    m.args.pad_token_id = PAD
    try:
        np.testing.assert_allclose(m(src, tgt).logits.data, batch, rtol=1e-12)
    finally:
        m.args.pad_token_id = None


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("flash", [True, False])
def test_cached_decoding_equals_full_recompute(backend, norm_first, flash):
    m = model(norm_first=norm_first, flash_attn=flash)
    src, tgt = ids(2, 6, SV, 19), ids(2, 9, TV, 20)
    src_mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0]])
    full = m(src, tgt, src_mask=src_mask).logits.data
    with mi.no_grad():
        memory = m.encode(src, src_mask)
        np.testing.assert_allclose(memory.data[1:], m.encode(src[1:], src_mask[1:]).data, rtol=1e-12)
        cache = m.new_kv_cache(2, max_len=9)
        steps = [m.decode(tgt[:, :4], memory, src_mask, kv_cache=cache).data]  # prefill 4 target tokens
        for t in range(4, 9):
            steps.append(m.decode(tgt[:, t : t + 1], memory, src_mask, kv_cache=cache).data)
    assert cache[0].length == 9 and len(cache) == 2
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-10, atol=1e-12)
    with mi.no_grad(), pytest.raises(ValueError, match="exceed"):
        m.decode(tgt[:, :1], memory, src_mask, kv_cache=cache)


def test_dropout_only_in_training():
    m = Transformer(args(dropout=0.3))
    src, tgt = ids(1, 5, SV), ids(1, 5, TV)
    assert not np.allclose(m(src, tgt).logits.data, m(src, tgt).logits.data)
    with m.mode(training=False):
        np.testing.assert_array_equal(m(src, tgt).logits.data, m(src, tgt).logits.data)


def test_bad_inputs_raise_clear_errors():
    m = Transformer(args())
    src, tgt = ids(2, 5, SV), ids(2, 4, TV)
    with pytest.raises(ValueError, match="src has batch size 2 but tgt has 3"):
        m(src, ids(3, 4, TV))
    with pytest.raises(IndexError, match=r"Transformer: src 23 at position \(0, 1\) is outside the valid range \[0, 23\)"):
        m(np.array([[1, 23, 2]]), tgt[:1])
    with pytest.raises(IndexError, match=r"Transformer: tgt 19 at position \(0, 0\) is outside the valid range \[0, 19\)"):
        m(src[:1], np.array([[19, 1]]))
    with pytest.raises(IndexError, match=r"src -1 at position \(0, 0\) is outside"):
        m(np.array([[-1, 2]]), tgt[:1])
    with pytest.raises(ValueError, match="src has 13 tokens, longer than max_seq_len=12"):
        m(ids(1, 13, SV), tgt[:1])
    with pytest.raises(ValueError, match="tgt has 13 tokens, longer than max_seq_len=12"):
        m(src[:1], ids(1, 13, TV))
    with pytest.raises(ValueError, match=r"src_mask must have shape \(2, 5\).*got \(2, 4\)"):
        m(src, tgt, src_mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"tgt_mask must have shape \(2, 4\).*got \(4,\)"):
        m(src, tgt, tgt_mask=np.ones(4))
    with pytest.raises(TypeError, match="src must be integer token ids.*float32"):
        m(mi.randn(2, 5), tgt)
    with pytest.raises(ValueError, match=r"shape \(batch, seq_len\)"):
        m(np.array([1, 2]), tgt)
    with pytest.raises(ValueError, match="targets must have the shape of tgt"):
        m(src, tgt, targets=ids(2, 3, TV))
    with pytest.raises(ValueError, match=r"memory must be \(batch=2, src_len, dim=16\)"):
        m.decode(tgt, mi.randn(3, 5, 16))
    with pytest.raises(ValueError, match="kv_cache has 1 layers, the decoder has 2"):
        m.decode(tgt, mi.randn(2, 5, 16), kv_cache=m.new_kv_cache(2)[:1])
    with pytest.raises(TypeError, match="expected a ModelArgs"):
        Transformer({"dim": 16})


def test_a_tiny_model_learns_to_reverse_sequences():
    """Training works end to end: reversing 4 tokens needs the cross-attention to read the source."""
    from minillm.optim import AdamW

    mi.manual_seed(0)
    a = ModelArgs(dim=32, n_heads=4, n_layer=1, dropout=0.0, max_seq_len=6, vocab_size=10)
    m = Transformer(a)
    opt = AdamW(m.parameters(), lr=5e-3, weight_decay=0.0)
    rng = np.random.default_rng(0)
    BOS = 1
    losses = []
    for _ in range(120):
        src = rng.integers(2, 10, size=(24, 4))
        tgt = src[:, ::-1]
        dec_in = np.concatenate([np.full((24, 1), BOS), tgt[:, :-1]], axis=1)
        loss = m(src, dec_in, targets=tgt).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert np.mean(losses[:5]) > 1.8 and np.mean(losses[-5:]) < 0.2, (losses[:5], losses[-5:])
