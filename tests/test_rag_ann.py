"""The optional approximate-nearest-neighbour index of VectorStore (faiss HNSW): same answers as exact
search where it should be, consistent after add/delete, rebuilt on load, a clear error without faiss."""
import builtins
import json

import numpy as np
import pytest

from minillm.rag import Chunk, VectorStore

faiss = pytest.importorskip("faiss")


def _store(n, dim=16, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    store = VectorStore()
    store.add([Chunk(f"chunk {i}", "x", 0, 7) for i in range(n)], v)
    store.embedding = {"name": "random", "dim": dim, "fingerprint": str(seed)}  # what get_vector records
    return store


def _queries(m, dim=16, seed=1):
    return np.random.default_rng(seed).standard_normal((m, dim)).astype(np.float32)


def _exact(store, q, k):
    ann, index = store.ann, store._ann_index
    store.ann, store._ann_index = None, None
    try:
        return store.search(q, k)
    finally:
        store.ann, store._ann_index = ann, index


def test_ann_equals_exact_on_a_small_store_and_recall_on_a_larger_one():
    small = _store(200).build_ann(M=16, ef_construction=64, ef_search=64)  # ef >= N/3: the graph search is exhaustive enough
    for q in _queries(10):
        pos, sc = small.search(q, 10)
        epos, esc = _exact(small, q, 10)
        np.testing.assert_array_equal(pos, epos)
        np.testing.assert_allclose(sc, esc, rtol=1e-5, atol=1e-6)
    big = _store(2000, dim=32).build_ann()
    qs = _queries(50, dim=32)
    recall = np.mean([len(set(big.search(q, 10)[0]) & set(_exact(big, q, 10)[0])) / 10 for q in qs])
    assert recall >= 0.95, recall
    assert len(big.search(qs[0], 200)[0]) == 200  # k above ef_search still returns k hits
    assert len(small.search(_queries(1)[0], 500)[0]) == 200  # k above N: all of them


def test_ann_stays_consistent_after_add_and_delete():
    store = _store(150).build_ann(ef_search=150)
    extra = _queries(5, seed=7)
    new_ids = store.add([Chunk(f"new {i}", "y", 0, 5) for i in range(5)], extra)
    assert store._ann_index.ntotal == 155  # appended to the graph, not rebuilt
    pos, sc = store.search(extra[2], 1)
    assert store.ids[pos[0]] == new_ids[2] and sc[0] == pytest.approx(1.0, abs=1e-5)
    store.delete([new_ids[2], 0, 1])
    assert store._ann_index is None  # stale: rebuilt on the next search
    pos, _ = store.search(extra[2], 5)
    assert new_ids[2] not in store.ids[pos] and store._ann_index.ntotal == 152
    for q in _queries(5):
        np.testing.assert_array_equal(store.search(q, 5)[0], _exact(store, q, 5)[0])
    store.drop_ann()
    assert store.ann is None and store._ann_index is None


def test_ann_persist_and_load_rebuilds_the_index(tmp_path):
    store = _store(120).build_ann(M=8, ef_construction=40, ef_search=120)
    store.persist(tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["store.json", "vectors.safetensors"]
    meta = json.loads((tmp_path / "s" / "store.json").read_text())
    assert meta["ann"] == {"method": "faiss-hnsw", "M": 8, "ef_construction": 40, "ef_search": 120}
    back = VectorStore.load_vector(tmp_path / "s")
    assert back.ann == store.ann and back._ann_index.ntotal == 120
    for q in _queries(5):
        np.testing.assert_array_equal(back.search(q, 5)[0], store.search(q, 5)[0])
    meta["ann"]["M"] = 0
    (tmp_path / "s" / "store.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="bad 'ann' entry.*M must be an int >= 2, got 0"):
        VectorStore.load_vector(tmp_path / "s")


def test_ann_bad_input_and_missing_faiss(monkeypatch):
    store = _store(20)
    with pytest.raises(ValueError, match="method must be one of .*got 'annoy'"):
        store.build_ann("annoy")
    with pytest.raises(ValueError, match="ef_search must be an int >= 1, got 0"):
        store.build_ann(ef_search=0)
    with pytest.raises(ValueError, match="no vectors"):
        VectorStore(["a"]).build_ann()
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        store.build_ann()
    assert store.ann is None and len(store.search(_queries(1)[0], 3)[0]) == 3  # exact search still works
