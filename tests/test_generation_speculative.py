"""Speculative (assisted) decoding: greedy gives exactly the target's greedy tokens whatever
the draft; sampling keeps the target's distribution (the rejection rule, checked exactly on
fixed distributions and statistically end to end on a tiny vocabulary); errors."""
import itertools

import numpy as np
import pytest

import minillm as mi
from minillm.generation import AssistedStats, generate, next_token_probs, stream_generate
from minillm.generation.config import GenerationConfig
from minillm.generation.speculative import assisted_decode, speculative_accept
from minillm.models.llama import ModelConfig, Transformer
from _helpers import scramble


def make(V=40, seed=0, std=0.4, **kw):
    mi.manual_seed(seed)
    cfg = dict(dim=16, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=V, max_seq_len=48)
    cfg.update(kw)
    model = Transformer(ModelConfig(**cfg))
    return scramble(model, std).eval()


def copy_of(model):
    twin = Transformer(model.args)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


@pytest.mark.parametrize("k", [1, 3, 7])
def test_greedy_equals_the_targets_greedy(k):
    target = make(seed=0)
    prompts = [[1, 2, 3], [5], [7, 8, 9, 10, 11, 12]]
    for draft in (make(seed=1, n_layers=1), make(seed=2, dim=8, n_heads=1), copy_of(target)):
        for prompt in prompts:
            want = generate(target, prompt, 20, temperature=0)
            assert generate(target, prompt, 20, temperature=0, assistant_model=draft, num_assistant_tokens=k) == want
            eos = want[5]
            assert generate(target, prompt, 20, temperature=0, eos_token_id=eos, assistant_model=draft, num_assistant_tokens=k) == want[: want.index(eos)]
            rp = generate(target, prompt, 20, temperature=0, repetition_penalty=1.5)
            assert generate(target, prompt, 20, temperature=0, repetition_penalty=1.5, assistant_model=draft, num_assistant_tokens=k) == rp
    assert generate(target, prompts[0], 20, temperature=0, fused_decode=False, assistant_model=make(seed=1)) == generate(target, prompts[0], 20, temperature=0)
    assert list(stream_generate(target, prompts[0], 20, temperature=0, assistant_model=make(seed=1))) == generate(target, prompts[0], 20, temperature=0)


def test_a_perfect_draft_is_always_accepted():
    target = make(seed=0)
    stats = AssistedStats()
    cfg = GenerationConfig(max_new_tokens=21, temperature=0, num_assistant_tokens=4)
    with mi.no_grad():
        out = list(assisted_decode(target, copy_of(target), np.array([1, 2, 3]), cfg, np.random.default_rng(0), stats))
    assert out == generate(target, [1, 2, 3], 21, temperature=0)
    assert stats.acceptance_rate == 1.0 and stats.target_calls == 5  # 5 rounds of 4 drafts + 1 target token = 25 >= 21
    weak = AssistedStats()
    with mi.no_grad():
        list(assisted_decode(target, make(seed=5, n_layers=1), np.array([1, 2, 3]), cfg, np.random.default_rng(0), weak))
    assert weak.acceptance_rate < 1.0 and weak.target_calls > stats.target_calls


def test_rejection_rule_keeps_the_target_distribution_exactly():
    """On fixed distributions: the first emitted token is distributed as p[0], and when every
    draft is accepted the bonus token comes from p[k]."""
    rng = np.random.default_rng(0)
    V, k, N = 5, 2, 20000
    p = rng.dirichlet(np.ones(V), size=k + 1)  # (k+1, V) target
    q = rng.dirichlet(np.ones(V) * 0.5, size=k)  # (k, V) draft, quite different
    first = np.zeros(V)
    for _ in range(N):
        drafts = [int(rng.choice(V, p=q[i])) for i in range(k)]
        first[speculative_accept(p, q, drafts, rng)[0]] += 1
    assert 0.5 * np.abs(first / N - p[0]).sum() < 0.015  # sampling noise at N=20000 is ~0.006
    assert 0.5 * np.abs(q[0] - p[0]).sum() > 0.2  # sampling from the draft instead would fail this test
    # identical distributions: everything is accepted
    assert speculative_accept(p, p[:k], [1, 2], rng)[:2] == [1, 2]


def test_sampling_keeps_the_targets_distribution_end_to_end():
    """The first two new tokens over many seeds: their joint frequencies match the target's own
    sampling distribution (computed exactly by enumeration), not the draft's."""
    V, prompt = 4, [1, 2, 3]
    target, draft = make(V=V, seed=3, std=1.0, dim=8, n_layers=1), make(V=V, seed=4, std=1.0, dim=8, n_layers=1)
    temperature = 0.9

    def exact(model):
        probs = {}
        with mi.no_grad():
            p1 = next_token_probs(model(np.array([prompt])).logits.data[:, -1], temperature)[0]
            for a in range(V):
                p2 = next_token_probs(model(np.array([prompt + [a]])).logits.data[:, -1], temperature)[0]
                for b in range(V):
                    probs[a, b] = p1[a] * p2[b]
        return np.array([probs[ab] for ab in itertools.product(range(V), repeat=2)])

    N = 1500
    counts = np.zeros(V * V)
    for seed in range(N):
        a, b = generate(target, prompt, 2, temperature=temperature, seed=seed, assistant_model=draft, num_assistant_tokens=2)[:2]
        counts[a * V + b] += 1
    want, other = exact(target), exact(draft)
    tv = 0.5 * np.abs(counts / N - want).sum()
    assert tv < 0.05, tv  # sampling noise at N=1500 over 16 outcomes is ~0.03
    assert 0.5 * np.abs(other - want).sum() > 0.2  # the draft alone is far off


def test_assisted_errors():
    target = make()
    with pytest.raises(ValueError, match="vocab_size 30 differs from the model's 40"):
        generate(target, [1, 2], 5, assistant_model=make(V=30))
    with pytest.raises(ValueError, match="one prompt, got a batch of 2"):
        generate(target, [[1, 2], [3]], 5, assistant_model=make())
    with pytest.raises(ValueError, match="num_beams and num_return_sequences must be 1"):
        generate(target, [1, 2], 5, num_beams=2, assistant_model=make())
    with pytest.raises(ValueError, match=r"prompt \(2\) \+ max_new_tokens \(47\) must be <= max_seq_len \(48\)"):
        generate(target, [1, 2], 47, assistant_model=make())
    with pytest.raises(ValueError, match="needs the KV cache"):
        generate(target, [1, 2], 5, use_cache=False, assistant_model=make())
    with pytest.raises(IndexError, match="token id 40"):
        generate(target, [1, 40], 5, assistant_model=make())
