"""minillm.generation: greedy / temperature / top-k / top-p sampling, EOS, KV cache, cropping, batches, streaming."""
import numpy as np
import pytest

import minillm as mi
from minillm.generation import generate, left_pad, sample_next_token, stream_generate
from minillm.models.llama import ModelConfig, Transformer
from _helpers import scramble

V = 64


pytestmark = pytest.mark.usefixtures("one_numba_thread")  # thousands of tiny passes: see conftest


def make_model(flash=True, max_seq_len=24, seed=0):
    mi.manual_seed(seed)
    model = Transformer(ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=V, max_seq_len=max_seq_len, flash_attn=flash))
    return scramble(model, 0.3)  # larger weights than the init: varied, prompt-dependent greedy outputs


@pytest.fixture(scope="module")
def model():
    return make_model()


def book_generate(model, prompt, max_new_tokens):
    """The book's Transformer.generate at temperature 0: recompute the (cropped) prefix every step."""
    idx = np.array([prompt])
    out = []
    for _ in range(max_new_tokens):
        cond = idx[:, -model.args.max_seq_len :]
        nxt = int(model(cond).logits.data[0, -1].argmax())
        out.append(nxt)
        idx = np.concatenate([idx, [[nxt]]], axis=1)
    return out


P1, P2, P3 = [1, 2, 3, 4, 5], [9, 8], [7, 7, 30, 31, 2, 3, 4, 50]


def test_greedy_equals_the_books_loop(backend, model):
    got = generate(model, P1, 12, temperature=0)
    assert got == book_generate(model, P1, 12)
    assert len(set(got)) > 2  # not a degenerate repeat of one token


@pytest.mark.parametrize("flash", [True, False])
def test_kv_cache_equals_recompute_also_past_max_seq_len(backend, flash):
    m = make_model(flash=flash)
    # 8-token prompt + 30 new tokens > max_seq_len 24: the context is cropped on the way
    with_cache = generate(m, P3, 30, temperature=0)
    assert with_cache == generate(m, P3, 30, temperature=0, use_cache=False)
    assert with_cache == book_generate(m, P3, 30)


def test_kv_cache_logits_equal_full_prefix(model):
    """Decoding step by step against the cache reproduces every logit of one full forward pass."""
    seq = np.array([P3 + [11, 12, 13, 14]])
    full = model(seq).logits.data
    cache = model.new_kv_cache(1)
    with mi.no_grad():
        logits = [model(seq[:, :4], kv_cache=cache).logits.data]
        for t in range(4, seq.shape[1]):
            logits.append(model(seq[:, t : t + 1], kv_cache=cache).logits.data)
    np.testing.assert_allclose(np.concatenate(logits, axis=1), full, rtol=1e-4, atol=1e-5)


def test_left_padded_batch_equals_each_prompt_alone(backend, model):
    batch = generate(model, [P1, P2, P3], 10, temperature=0)
    assert batch == [generate(model, p, 10, temperature=0) for p in (P1, P2, P3)]
    # an array batch with an explicit left-padding mask gives the same
    ids, mask = left_pad([P1, P2, P3], pad_token_id=0)
    assert generate(model, ids, 10, temperature=0, attention_mask=mask) == batch
    assert generate(model, mi.tensor(np.array(P1)), 10, temperature=0) == batch[0]


def test_eos_stops_and_is_not_returned(model):
    free = generate(model, P1, 10, temperature=0)
    eos = free[3]
    first = free.index(eos)
    assert generate(model, P1, 10, temperature=0, eos_token_id=eos) == free[:first]
    # in a batch, a finished row stops while the others go on
    out = generate(model, [P1, P2], 10, temperature=0, eos_token_id=eos)
    assert out[0] == free[:first]
    alone = generate(model, P2, 10, temperature=0, eos_token_id=eos)
    assert out[1] == alone


def test_stream_yields_the_same_tokens(model):
    stream = stream_generate(model, P1, 10, temperature=0)
    first = next(stream)
    assert mi.is_grad_enabled()  # no-grad mode does not leak into the caller between tokens
    assert [first, *stream] == generate(model, P1, 10, temperature=0)
    eos = generate(model, P1, 10, temperature=0)[4]
    assert list(stream_generate(model, P1, 10, temperature=0, eos_token_id=eos)) == generate(model, P1, 10, temperature=0, eos_token_id=eos)
    with pytest.raises(ValueError, match="one prompt"):
        list(stream_generate(model, [P1, P2], 3))


def test_sampling_is_seeded_and_varied(model):
    a = generate(model, P1, 15, temperature=1.0, seed=1)
    assert a == generate(model, P1, 15, temperature=1.0, seed=1)
    assert a != generate(model, P1, 15, temperature=1.0, seed=2)
    mi.manual_seed(5)
    b = generate(model, P1, 15, temperature=1.0)
    mi.manual_seed(5)
    assert b == generate(model, P1, 15, temperature=1.0)  # default: the library's generator
    assert all(0 <= t < V for t in a + b)


def test_top_k_1_and_tiny_top_p_are_greedy(model):
    greedy = generate(model, P2, 10, temperature=0)
    assert generate(model, P2, 10, temperature=1.5, top_k=1, seed=3) == greedy
    assert generate(model, P2, 10, temperature=1.5, top_p=1e-6, seed=3) == greedy


def test_sample_next_token_filters():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    draws = np.concatenate([sample_next_token(logits, 1.0, rng=rng) for _ in range(4000)])
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 4000, [0.5, 0.3, 0.15, 0.05], atol=0.03)
    topk = np.concatenate([sample_next_token(logits, 1.0, top_k=2, rng=rng) for _ in range(2000)])
    assert set(topk) == {0, 1} and abs((topk == 0).mean() - 0.5 / 0.8) < 0.04
    # top_p=0.7: 0.5 alone is not enough, 0.5 + 0.3 is -> tokens {0, 1}
    topp = np.concatenate([sample_next_token(logits, 1.0, top_p=0.7, rng=rng) for _ in range(2000)])
    assert set(topp) == {0, 1}
    topp = np.concatenate([sample_next_token(logits, 1.0, top_p=0.85, rng=rng) for _ in range(2000)])
    assert set(topp) == {0, 1, 2}
    # low temperature sharpens towards the argmax
    cold = np.concatenate([sample_next_token(logits, 0.05, rng=rng) for _ in range(500)])
    assert (cold == 0).mean() > 0.99
    assert sample_next_token(np.array([[0.0, 3.0, 1.0], [5.0, 0.0, 1.0]]), 0).tolist() == [1, 0]


def test_repetition_penalty_discourages_repeats(model):
    plain = generate(model, P1, 20, temperature=0)
    penalised = generate(model, P1, 20, temperature=0, repetition_penalty=3.0)
    repeats = lambda toks: len(toks) - len(set(toks))  # noqa: E731
    assert penalised != plain and repeats(penalised) < repeats(plain)


def test_model_generate_method_and_train_mode_restored(model):
    model.train()
    assert model.generate(np.array([P1]), max_new_tokens=5, temperature=0) == [generate(model, P1, 5, temperature=0)]
    assert model.training
    model.eval()


def test_prompt_longer_than_max_seq_len_is_cropped(model):
    long = list(range(40))  # > max_seq_len 24
    assert generate(model, long, 5, temperature=0) == generate(model, long[-24:], 5, temperature=0)


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="temperature"):
        generate(model, P1, 3, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, P1, 3, top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, P1, 3, top_p=1.5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, P1, -1)
    with pytest.raises(IndexError, match=r"generate: token id 64 at position \(0, 1\) is outside the valid range \[0, 64\)"):
        generate(model, [1, 64], 3)
    with pytest.raises(TypeError, match="integer token ids"):
        generate(model, np.array([1.0, 2.0]), 3)
    with pytest.raises(TypeError, match="token ids must be ints"):
        generate(model, [1, 2.5], 3)
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [], 3)
    with pytest.raises(ValueError, match="padding must be on the left"):
        generate(model, np.array([[1, 2, 0]]), 3, attention_mask=np.array([[1, 1, 0]]))
    assert generate(model, P1, 0) == []
