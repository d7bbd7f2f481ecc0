"""1.4.4 ELMo: scalar mix gradcheck, the biLM's two directions, training, probes on frozen features."""
import numpy as np
import pytest

import minillm as mi
from minillm.classic.data import TAGS, segmented_stories
from minillm.classic.elmo import (
    BiLM, ELMoConfig, ScalarMix, WordVocab, _reverse_index, bilm_perplexity, elmo_layers, train_bilm, train_probe,
)
from minillm.testing import gradcheck


def test_scalar_mix_formula_and_gradcheck():
    mix = ScalarMix(3, dtype=np.float64)
    mix.scalar_parameters.data[...] = [0.5, -1.0, 2.0]
    mix.gamma.data[...] = 1.5
    rng = np.random.default_rng(0)
    layers = [rng.normal(size=(2, 4)) for _ in range(3)]
    w = np.exp([0.5, -1.0, 2.0])
    w /= w.sum()
    expect = 1.5 * sum(wj * h for wj, h in zip(w, layers))
    np.testing.assert_allclose(mix([mi.tensor(h) for h in layers]).data, expect, atol=1e-12)

    def f(s, g, a, b, c):
        mix._parameters["scalar_parameters"], mix._parameters["gamma"] = s, g
        return mix([a, b, c])

    gradcheck(f, [np.array([0.5, -1.0, 2.0]), np.array([1.5])] + layers)


def _tiny():
    data = list(segmented_stories(40))
    vocab = WordVocab([w for w, _ in data])
    mi.manual_seed(0)
    model = BiLM(ELMoConfig(len(vocab), dim=8, dropout=0.0), dtype=np.float64)
    return data, vocab, model


def test_each_direction_sees_only_its_side():
    _, vocab, model = _tiny()
    ids = np.array([vocab.encode(["汤姆", "去", "了", "公园", "。"])])
    lengths = np.array([ids.shape[1]])
    changed = ids.copy()
    changed[0, 3] = vocab.stoi["学校"]  # change the word at position 3
    with mi.no_grad():
        a, _, _ = model(ids, lengths)
        b, _, _ = model(changed, lengths)
    D = 8
    for layer in (1, 2):
        fa, fb = a[layer].data[0, :, :D], b[layer].data[0, :, :D]
        ba, bb = a[layer].data[0, :, D:], b[layer].data[0, :, D:]
        np.testing.assert_array_equal(fa[:3], fb[:3])  # forward LM: positions before 3 unchanged
        assert not np.allclose(fa[3:], fb[3:])
        np.testing.assert_array_equal(ba[4:], bb[4:])  # backward LM: positions after 3 unchanged
        assert not np.allclose(ba[:4], bb[:4])
    # padding does not change a sequence's features (the backward LM reverses each row by its length)
    padded = np.concatenate([ids, np.zeros((1, 3), dtype=np.int64)], axis=1)
    with mi.no_grad():
        c, _, _ = model(padded, lengths)
    np.testing.assert_allclose(c[2].data[0, :7], a[2].data[0], atol=1e-12)
    assert _reverse_index(np.array([2]), 4).tolist() == [[1, 0, 2, 3]]


def test_bilm_learns_and_features_have_the_elmo_shape():
    data, vocab, model = _tiny()
    seqs = [vocab.encode(w) for w, _ in data]
    before = bilm_perplexity(model, seqs)
    losses = train_bilm(model, seqs, steps=30, batch_size=8, lr=1e-2, seed=0)
    after = bilm_perplexity(model, seqs)
    assert after["forward_ppl"] < 0.5 * before["forward_ppl"] and after["backward_ppl"] < 0.5 * before["backward_ppl"]
    assert losses[-1] < losses[0]
    feats = elmo_layers(model, seqs[:3])
    assert [f.shape for f in feats] == [(len(w), 3, 16) for w, _ in data[:3]]


def test_probe_learns_a_separable_task_and_mixes_layers():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=300)
    noise = rng.normal(size=(300, 2, 4))
    noise[:, 1, :3] += 4 * np.eye(3)[y]  # only layer 1 knows the label
    probe = train_probe(noise, y, 3, steps=150, lr=0.05)
    assert (probe.predict(noise) == y).mean() > 0.95
    w = mi.softmax(probe.mix.scalar_parameters, dim=0).data
    assert w[1] > w[0]  # the mix learned to prefer the informative layer


def test_bad_inputs():
    with pytest.raises(ValueError, match="ELMoConfig.dim must be >= 1"):
        ELMoConfig(vocab_size=10, dim=0)
    _, vocab, model = _tiny()
    with pytest.raises(ValueError, match="lengths must be in"):
        model(np.array([[2, 3]]), np.array([5]))
    with pytest.raises(ValueError, match=r"ids \(B, T\)"):
        model(np.array([2, 3]), np.array([2]))
    with pytest.raises(ValueError, match="expected 3 layers, got 2"):
        ScalarMix(3)([mi.zeros(2), mi.zeros(2)])
    with pytest.raises(ValueError, match="N = len"):
        train_probe(np.zeros((4, 2)), np.zeros(3, dtype=np.int64), 2)
    assert vocab.encode(["不存在的词"]).tolist() == [2, 1, 3]
    assert len(TAGS) == 7
