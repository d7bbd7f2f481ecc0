"""1.4.3 Word2Vec: the engine, the Numba kernel and its NumPy twin agree; gradcheck; evaluation helpers."""
import numpy as np
import pytest

import minillm as mi
from minillm.plot import encode_png, scatter_png
from minillm.classic.data import segmented_stories
from minillm.classic.word2vec import (
    Vocab, Word2Vec, Word2VecConfig, analogy, analogy_accuracy, make_plan, most_similar, negative_sampling_loss,
    pca_2d, train, train_autograd,
)
from minillm.testing import gradcheck

SENTS = [w for w, _ in segmented_stories(8)]


@pytest.mark.parametrize("sg", [1, 0])
def test_engine_kernel_and_reference_agree(sg):
    cfg = Word2VecConfig(sg=sg, dim=8, epochs=2, window=2, negative=3, seed=5)
    eng = train_autograd(SENTS, cfg, batch_size=1)
    ker = train(SENTS, cfg, dtype=np.float64)
    with_backend = mi.get_kernels()
    mi.set_kernels("numpy")
    try:
        ref = train(SENTS, cfg, dtype=np.float64)
    finally:
        mi.set_kernels(with_backend)
    assert eng.stats["examples"] == ker.stats["examples"] > 100
    np.testing.assert_allclose(ker.wv, ref.wv, atol=1e-12)
    np.testing.assert_allclose(ker.W_out, ref.W_out, atol=1e-12)
    np.testing.assert_allclose(eng.wv, ker.wv, atol=1e-10)
    np.testing.assert_allclose(eng.W_out, ker.W_out, atol=1e-10)
    assert eng.stats["loss"] == pytest.approx(ker.stats["loss"], rel=1e-9)
    assert not np.allclose(ker.wv, train(SENTS, Word2VecConfig(sg=sg, dim=8, epochs=2, window=2, negative=3, seed=6),
                                          dtype=np.float64).wv)  # another seed, other vectors


@pytest.mark.parametrize("sg", [1, 0])
def test_negative_sampling_loss_gradcheck(sg):
    rng = np.random.default_rng(0)
    W_in, W_out = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    inputs = np.array([[1], [4]]) if sg else np.array([[1, 2, -1], [0, -1, -1]])
    outputs = np.array([[2, 3, 5], [0, 0, 1]])  # a repeated negative on purpose
    weights = np.array([[1.0, 1.0, 0.0], [0.5, 0.5, 0.5]])
    gradcheck(lambda a, b: negative_sampling_loss(a, b, inputs, outputs, weights, sg=sg), [W_in, W_out])


def test_plan_subsampling_windows_negatives():
    vocab = Vocab([["a", "b", "a", "c"], ["a", "b"]], min_count=1)
    assert vocab.words == ["a", "b", "c"] and vocab.counts.tolist() == [3, 2, 1]
    ids = vocab.encode([["a", "b", "a", "c", "zzz"]])
    assert ids[0].tolist() == [0, 1, 0, 2]  # unknown words dropped
    cfg = Word2VecConfig(window=1, negative=4, sample=0, epochs=1, lr=0.1)
    plan = make_plan(ids, vocab.counts, cfg)
    # window 1: every neighbour pair once in each direction
    assert sorted(zip(plan.inputs[:, 0].tolist(), plan.outputs[:, 0].tolist())) == sorted(
        [(0, 1), (1, 0), (1, 0), (0, 1), (0, 2), (2, 0)])
    assert np.all(plan.mask[:, 1:] == (plan.outputs[:, 1:] != plan.outputs[:, :1]))
    assert plan.lr[0] == pytest.approx(0.1) and np.all(np.diff(plan.lr) < 0)  # linear decay
    # negatives follow unigram^0.75: draw many and compare frequencies
    big = make_plan([np.array([0, 1] * 3000 + [2] * 10)], np.array([3000.0, 3000.0, 10.0]),
                    Word2VecConfig(window=1, negative=5, sample=0, epochs=1))
    share = np.bincount(big.outputs[:, 1:].ravel(), minlength=3) / big.outputs[:, 1:].size
    expect = np.array([3000, 3000, 10]) ** 0.75
    np.testing.assert_allclose(share, expect / expect.sum(), atol=0.01)
    # subsampling drops frequent words: with t tiny, most tokens go
    sub = make_plan([np.array([0, 1] * 3000)], np.array([3000.0, 3000.0]), Word2VecConfig(sample=1e-4, epochs=1))
    assert sub.n_words < 600


def test_vectors_learn_categories():
    sents = [w for w, _ in segmented_stories(600)]
    m = train(sents, Word2VecConfig(dim=24, epochs=10, seed=0))
    colours = {"红色", "蓝色", "绿色", "黄色", "白色", "黑色", "粉色", "紫色", "橙色", "棕色"}
    near = [w for w, _ in most_similar(m, "红色", topn=5)]
    assert sum(w in colours for w in near) >= 4, near
    assert m.stats["words_per_sec"] > 0 and m["红色"].shape == (24,)
    assert analogy_accuracy(m, [("红色", "蓝色", "绿色", "不存在")])["skipped"] == 1
    assert analogy(m, "红色", "红色", "蓝色") not in ("红色", "蓝色")


def test_pca_and_png(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 5)) * np.array([10, 3, 1, 0.1, 0.1])
    xy = pca_2d(x)
    assert xy.shape == (20, 2) and np.var(xy[:, 0]) >= np.var(xy[:, 1])
    scatter_png(tmp_path / "p.png", xy, [i % 3 for i in range(20)])
    data = (tmp_path / "p.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" in data[-12:]
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        encode_png(np.zeros((2, 2)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="sg must be 1"):
        Word2VecConfig(sg=2)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        Word2VecConfig(dim=0)
    with pytest.raises(TypeError, match="lists of words"):
        train(["汤姆去了公园"])
    with pytest.raises(ValueError, match="no word occurs"):
        Vocab([["a"]], min_count=2)
    m = train(SENTS, Word2VecConfig(dim=4, epochs=1))
    with pytest.raises(KeyError, match="not in the Word2Vec vocabulary"):
        m["不存在的词"]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        train_autograd(SENTS, batch_size=0)


def test_benchmark_script_runs():
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "word2vec.py"), "--docs", "40", "--slice", "5",
                           "--dim", "8", "--no-gensim", "--json"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=root))
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert {r["impl"] for r in res["results"]} == {"minillm Numba kernel", "minillm NumPy twin", "minillm engine, batch 256"}
    assert all(r["words_per_sec"] > 0 for r in res["results"])
