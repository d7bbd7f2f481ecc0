"""Chapter 7.2 RAG: loaders, chunking, BM25, the bi-encoder, the vector store, retrievers, prompts."""
import json
import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minillm as mi
from minillm.models.bert import BertConfig
from minillm.rag import (BM25, BiEncoder, BM25Retriever, Chunk, DenseRetriever, Hit, HybridRetriever, ReadFiles,
                         VectorStore, bm25_tokenize, build_prompt, info_nce_loss, l2_normalize, load_documents,
                         mean_pool, parse_answer, reciprocal_rank_fusion, simple_tokenize, split_text,
                         train_bi_encoder)
from minillm.rag.world_kb import (ANIMAL_SYNONYMS, OBJECT_SYNONYMS, PLACE_SYNONYMS, kb_questions, kb_stories,
                                  rag_sft_records, retriever_pairs, write_knowledge_base)
from minillm.tensor import Tensor
from minillm.testing import gradcheck
from minillm.tokenizers import BPETokenizer


# ============================================================================ chunking
def _count(text):
    return len(simple_tokenize(text))


def _tokens_in(text, span):
    s, e = span
    return {(a, b) for a, b in simple_tokenize(text) if a >= s and b <= e}


words = st.sampled_from(["Tom", "went", "to", "the", "market", "a", "red", "umbrella", "42", "汤姆", "去了", "公园"])
sentence = st.builds(lambda ws, end: " ".join(ws) + end, st.lists(words, min_size=1, max_size=14),
                     st.sampled_from([".", "!", "?", "。", ""]))
paragraph = st.builds(" ".join, st.lists(sentence, min_size=1, max_size=6))
document = st.builds("\n\n".join, st.lists(paragraph, min_size=1, max_size=5))


@settings(max_examples=60)
@given(document, st.integers(4, 40), st.integers(0, 12))
def test_chunks_cover_the_text_respect_the_limit_and_the_overlap(text, max_tokens, overlap):
    overlap = min(overlap, max_tokens - 1)
    spans = split_text(text, max_tokens, overlap)
    covered = np.zeros(len(text), bool)
    for s, e in spans:
        assert _count(text[s:e]) <= max_tokens, (text[s:e], max_tokens)
        assert text[s:e] == text[s:e].strip() and s < e
        covered[s:e] = True
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace()), "a character is in no chunk"
    for a, b in zip(spans, spans[1:]):
        assert a[0] < b[0] and a[1] < b[1], "chunks go forward"
        shared = _tokens_in(text, a) & _tokens_in(text, b)
        assert len(shared) <= overlap
        if overlap == 0:
            assert b[0] >= a[1]


def test_overlap_is_whole_sentences_up_to_the_limit():
    text = " ".join(f"S{i} a b." for i in range(20))  # every sentence is 4 tokens
    spans = split_text(text, max_tokens=12, overlap=8)
    chunks = [text[s:e] for s, e in spans]
    assert chunks[0] == "S0 a b. S1 a b. S2 a b."
    assert chunks[1] == "S1 a b. S2 a b. S3 a b."  # 2 whole sentences (8 tokens) carried over
    for a, b in zip(spans, spans[1:]):
        assert len(_tokens_in(text, a) & _tokens_in(text, b)) == 8
    assert split_text(text, 12, 3)[1][0] == spans[1][0] + len("S1 a b. S2 a b. ")  # no sentence fits in 3: none


def test_chunks_end_at_paragraphs_and_cut_long_sentences():
    text = "One two three. Four five six.\n\nSeven eight nine ten."
    assert [text[s:e] for s, e in split_text(text, 10, 0)] == ["One two three. Four five six.", "Seven eight nine ten."]
    long = "汤姆去了公园" * 10  # 60 Chinese characters, no punctuation
    spans = split_text(long, 16, 0)
    assert "".join(long[s:e] for s, e in spans) == long and all(e - s <= 16 for s, e in spans)


def test_chunk_limit_with_a_bpe_tokenizer():
    tok = BPETokenizer.train(["Tom went to the market. Amy saw a red umbrella there."] * 20, vocab_size=300,
                             show_progress=False)
    text = " ".join(["Tom went to the market. Amy saw a red umbrella there."] * 30)
    for s, e in split_text(text, 24, 6, tokenizer=tok):
        assert len(tok.encode_ordinary(text[s:e])) <= 24
    assert ReadFiles.get_chunk(text, 24, 6, tokenizer=tok)[0] == text[slice(*split_text(text, 24, 6, tokenizer=tok)[0])]


def test_split_text_bad_input():
    with pytest.raises(ValueError, match="max_tokens"):
        split_text("a b", 0, 0)
    with pytest.raises(ValueError, match="overlap"):
        split_text("a b", 4, 4)
    with pytest.raises(TypeError, match="text must be a str"):
        split_text(b"a b", 4, 0)
    with pytest.raises(TypeError, match="tokenizer"):
        split_text("a b", 4, 0, tokenizer=3)


# ============================================================================ loaders
def _write(path, data, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(data)


def test_read_files_txt_md_jsonl_with_offsets_and_headings(tmp_path):
    _write(tmp_path / "a.txt", "Tom went to the park. He saw a dog.\n")
    _write(tmp_path / "sub" / "b.md", "# Guide\nintro line\n## Install\nrun pip.\n## Use\nimport it.\n")
    _write(tmp_path / "sub" / "c.jsonl", json.dumps({"text": "Amy bought a cup."}) + "\n\n" + json.dumps({"text": "x y"}) + "\n")
    _write(tmp_path / "skip.csv", "a,b\n")
    reader = ReadFiles(tmp_path)
    assert [os.path.basename(p) for p in reader.file_list] == ["a.txt", "b.md", "c.jsonl"]
    chunks = reader.get_content(max_token_len=50, cover_content=5)
    by_src = {}
    for c in chunks:
        by_src.setdefault(os.path.basename(c.source), []).append(c)
    assert [c.heading for c in by_src["b.md"]] == ["Guide", "Guide > Install", "Guide > Use"]
    md = (tmp_path / "sub" / "b.md").read_text()
    for c in by_src["b.md"] + by_src["a.txt"]:
        assert open(c.source).read()[c.start:c.end] == c.text
    assert [c.metadata["line"] for c in by_src["c.jsonl"]] == [1, 3]
    assert "## Install" in md and by_src["b.md"][1].text.startswith("## Install")
    assert reader.errors == []


def test_bad_files_are_reported_by_name_and_skipped(tmp_path):
    _write(tmp_path / "good.txt", "Tom went to the park.")
    _write(tmp_path / "latin1.txt", "caf\xe9".encode("latin-1"), mode="wb")
    _write(tmp_path / "bad.jsonl", '{"text": "ok"}\n{not json\n')
    _write(tmp_path / "notext.jsonl", '{"body": "no text field"}\n')
    _write(tmp_path / "doc.pdf", "%PDF-1.4")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        docs, errors = load_documents(tmp_path)
    assert [d.text for d in docs] == ["Tom went to the park."]
    names = {os.path.basename(p): why for p, why in errors}
    assert set(names) == {"latin1.txt", "bad.jsonl", "notext.jsonl", "doc.pdf"}
    assert "UTF-8" in names["latin1.txt"] and "bad.jsonl:2" in names["bad.jsonl"] and "'text'" in names["notext.jsonl"]
    assert len(caught) == 4 and all("skipped" in str(w.message) for w in caught)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ReadFiles(tmp_path / "missing")


# ============================================================================ BM25
def _bm25_reference(corpus, query, k1=1.5, b=0.75, eps=0.25):
    """The formula, one document and one term at a time."""
    N = len(corpus)
    avgdl = sum(len(d) for d in corpus) / N
    vocab = sorted({t for d in corpus for t in d})
    idf = {t: math.log((N - sum(t in d for d in corpus) + 0.5) / (sum(t in d for d in corpus) + 0.5)) for t in vocab}
    floor = eps * sum(idf.values()) / len(idf)
    idf = {t: (v if v >= 0 else floor) for t, v in idf.items()}
    out = []
    for d in corpus:
        s = 0.0
        for t in query:
            tf = d.count(t)
            s += idf.get(t, 0.0) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avgdl))
        out.append(s)
    return np.array(out)


corpora = st.lists(st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=12), min_size=1, max_size=12)


@settings(max_examples=40)
@given(corpora, st.lists(st.sampled_from("abcdefghz"), min_size=1, max_size=5),
       st.floats(0.1, 3.0), st.floats(0.0, 1.0))
def test_bm25_equals_the_formula(corpus, query, k1, b):
    np.testing.assert_allclose(BM25(corpus, k1=k1, b=b).get_scores(query), _bm25_reference(corpus, query, k1, b),
                               rtol=1e-12, atol=1e-12)


def test_bm25_worked_example_and_top_k():
    corpus = [bm25_tokenize(t) for t in ["the cat sat", "the dog sat on the mat", "cats and dogs", "a cat and a cat"]]
    bm = BM25(corpus)
    # 'cat' is in 2 of 4 documents: idf = ln(2.5 / 2.5) = 0, so it is floored at 0.25 * mean idf
    ids, scores = bm.top_k(["mat"], 2)
    assert ids[0] == 1 and scores[0] > 0 and scores[1] == 0
    idf_mat = math.log((4 - 1 + 0.5) / (1 + 0.5))
    dl, avgdl = 6, (3 + 6 + 3 + 5) / 4
    assert scores[0] == pytest.approx(idf_mat * 2.5 / (1 + 1.5 * (0.25 + 0.75 * dl / avgdl)))
    with pytest.raises(TypeError, match="tokenize it first"):
        BM25(["a str document"])
    with pytest.raises(ValueError, match="b must be"):
        BM25(corpus, b=2)
    with pytest.raises(ValueError, match="empty"):
        BM25([])
    with pytest.raises(TypeError, match="list of tokens"):
        bm.get_scores("cat")


def test_bm25_parity_with_rank_bm25():
    rank_bm25 = pytest.importorskip("rank_bm25")
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(40)]
    corpus = [list(rng.choice(vocab, size=rng.integers(1, 30), p=np.r_[[0.2], np.full(39, 0.8 / 39)]))
              for _ in range(60)]
    ours, theirs = BM25(corpus, k1=1.2, b=0.6), rank_bm25.BM25Okapi(corpus, k1=1.2, b=0.6)
    for _ in range(20):
        q = list(rng.choice(vocab + ["unseen"], size=4))
        np.testing.assert_allclose(ours.get_scores(q), theirs.get_scores(q), rtol=1e-10, atol=1e-12)


# ============================================================================ dense
def test_gradcheck_mean_pool_normalize_and_info_nce():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((3, 4, 5))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    gradcheck(lambda x: l2_normalize(mean_pool(x, mask)), [h], name="mean_pool+l2_normalize")
    q, p = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    gradcheck(lambda a, b: info_nce_loss(l2_normalize(a), l2_normalize(b), temperature=0.5), [q, p], name="info_nce")


def test_info_nce_and_pooling_equal_numpy():
    rng = np.random.default_rng(1)
    q, p = rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
    logits = q @ p.T / 0.1
    ref = np.mean(np.log(np.exp(logits).sum(1)) - np.diag(logits))
    assert float(info_nce_loss(Tensor(q), Tensor(p), 0.1).data) == pytest.approx(ref, rel=1e-10)
    h = rng.standard_normal((2, 3, 4))
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    pooled = mean_pool(Tensor(h), mask).data
    np.testing.assert_allclose(pooled[0], h[0, :2].mean(0))
    v = l2_normalize(Tensor(pooled)).data
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0)
    with pytest.raises(ValueError, match="no token"):
        mean_pool(Tensor(h), np.array([[0, 0, 0], [1, 1, 1]]))
    with pytest.raises(ValueError, match="must both be"):
        info_nce_loss(Tensor(q), Tensor(p[:3]))
    with pytest.raises(ValueError, match="temperature"):
        info_nce_loss(Tensor(q), Tensor(p), 0.0)


@pytest.fixture(scope="module")
def tiny_encoder():
    texts = ["Tom went to the park.", "Amy bought a red cup.", "Where did Tom go?", "What did Amy buy?"] * 10
    tok = BPETokenizer.train(texts, vocab_size=300, show_progress=False)
    mi.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                     pad_token_id=tok.pad_token_id)
    return BiEncoder(cfg, tok)


def test_encoder_gives_unit_float32_vectors_independent_of_the_batch(tiny_encoder):
    texts = ["Tom went to the park.", "Amy bought a red cup and then went home to the park.", "a"]
    together = tiny_encoder.encode(texts)
    assert together.dtype == np.float32 and together.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-5)
    for i, t in enumerate(texts):  # padding never changes a vector
        np.testing.assert_allclose(tiny_encoder.encode([t])[0], together[i], atol=1e-5)
    with pytest.raises(TypeError, match="list of strings"):
        tiny_encoder.encode("one string")


def test_bi_encoder_learns_pairs_and_round_trips(tiny_encoder, tmp_path):
    people = ["Tom", "Amy", "Sam", "Lily", "Jack", "Emma"]
    places = ["park", "market", "zoo", "beach", "school", "farm"]
    pairs = [(f"Where did {a} go?", f"{a} went to the {p}.") for a, p in zip(people, places)]
    enc = BiEncoder(tiny_encoder.config, tiny_encoder.tokenizer)
    losses = train_bi_encoder(enc, pairs, steps=60, batch_size=6, lr=3e-3, temperature=0.1, log=None)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    q, p = enc.encode([a for a, _ in pairs]), enc.encode([b for _, b in pairs])
    assert (np.argmax(q @ p.T, axis=1) == np.arange(6)).mean() >= 5 / 6
    enc.save(tmp_path / "enc")
    again = BiEncoder.load(tmp_path / "enc")
    np.testing.assert_array_equal(again.encode(["Where did Tom go?"]), enc.encode(["Where did Tom go?"]))
    assert again.fingerprint == enc.fingerprint != tiny_encoder.fingerprint


# ============================================================================ store
def _chunks(n):
    return [Chunk(f"text {i}", f"f{i}.txt", 0, 6) for i in range(n)]


def test_store_search_is_exact_and_delete_persist_load(tmp_path, tiny_encoder):
    rng = np.random.default_rng(0)
    store = VectorStore()
    v = rng.standard_normal((50, 16)).astype(np.float32)
    store.add(_chunks(50), v)
    q = rng.standard_normal(16)
    pos, scores = store.search(q, 7)
    ref = (v / np.linalg.norm(v, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    np.testing.assert_array_equal(pos, np.argsort(-ref)[:7])
    np.testing.assert_allclose(scores, np.sort(ref)[::-1][:7], rtol=1e-5)
    assert store.delete([int(store.ids[pos[0]])]) == 1 and len(store) == 49
    assert store.document[store.search(q, 1)[0][0]].text == f"text {pos[1]}"
    with pytest.raises(ValueError, match="unknown ids"):
        store.delete([999])
    with pytest.raises(ValueError, match="dimension 8"):
        store.add(_chunks(1), np.ones((1, 8)))
    with pytest.raises(ValueError, match="NaN"):
        store.add(_chunks(1), np.full((1, 16), np.nan))
    with pytest.raises(ValueError, match="k must be"):
        store.search(q, 0)

    kb = VectorStore([Chunk("Tom went to the park.", "a.txt", 0, 21), Chunk("Amy bought a red cup.", "b.txt", 0, 21)])
    kb.get_vector(tiny_encoder)
    kb.persist(tmp_path / "store")
    assert sorted(os.listdir(tmp_path / "store")) == ["store.json", "vectors.safetensors"]
    back = VectorStore.load_vector(tmp_path / "store", EmbeddingModel=tiny_encoder)
    np.testing.assert_array_equal(back.vectors, kb.vectors)
    assert [c.to_dict() for c in back.document] == [c.to_dict() for c in kb.document]
    assert back.query("Where did Tom go?", tiny_encoder, k=2) == kb.query("Where did Tom go?", tiny_encoder, k=2)
    mi.manual_seed(123)  # (the suite reseeds 0 before each test: the fixture's weights again)
    other = BiEncoder(tiny_encoder.config, tiny_encoder.tokenizer)  # same shape, other weights
    assert other.fingerprint != tiny_encoder.fingerprint
    with pytest.raises(ValueError, match="re-index"):
        VectorStore.load_vector(tmp_path / "store", EmbeddingModel=other)
    wider = BiEncoder(BertConfig(**{**tiny_encoder.config.to_dict(), "hidden_size": 32}), tiny_encoder.tokenizer)
    with pytest.raises(ValueError, match="dimension 16"):
        VectorStore.load_vector(tmp_path / "store", EmbeddingModel=wider)
    meta = json.loads((tmp_path / "store" / "store.json").read_text())
    meta["document"][0]["start"] = "zero"
    (tmp_path / "store" / "store.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="chunk 0: field 'start'"):
        VectorStore.load_vector(tmp_path / "store")


# ============================================================================ retrievers and answers
def test_bm25_retriever_from_folder_returns_hits(tmp_path):
    _write(tmp_path / "kb" / "a.md", "# Trips\n## Monday\nTom went to the park and saw a dog.\n## Tuesday\nAmy bought a red cup.\n")
    _write(tmp_path / "kb" / "b.txt", "Sam found a key under a tree.")
    r = BM25Retriever.from_folder(tmp_path / "kb", max_tokens=32, overlap=4)
    hits = r.search("Who found a key?", k=2)
    assert isinstance(hits[0], Hit) and hits[0].source.endswith("b.txt") and hits[0].text == "Sam found a key under a tree."
    assert hits[0].score > hits[1].score
    assert r.search("What did Amy buy?", k=1)[0].heading == "Trips > Tuesday"
    r.save(tmp_path / "store")
    assert BM25Retriever.load(tmp_path / "store").search("Who found a key?", k=2) == hits
    with pytest.raises(ValueError, match="k must be"):
        r.search("x", k=0)
    with pytest.raises(TypeError, match="query must be a str"):
        r.search(["x"])


def test_reciprocal_rank_fusion_and_hybrid(tiny_encoder):
    ids, scores = reciprocal_rank_fusion([[3, 1], [1, 2]], k_rrf=60)
    assert ids.tolist() == [1, 3, 2]
    assert scores[0] == pytest.approx(1 / 62 + 1 / 61) and scores[1] == pytest.approx(1 / 61)
    store = VectorStore([Chunk(t, "x", 0, len(t)) for t in ["Tom went to the park.", "Amy bought a red cup.", "a b c"]])
    store.get_vector(tiny_encoder)
    bm, dense = BM25Retriever(store), DenseRetriever(store, tiny_encoder)
    hybrid = HybridRetriever([bm, dense], depth=3)
    q = "Where did Tom go?"
    ref, _ = reciprocal_rank_fusion([bm.rank(q, 3)[0], dense.rank(q, 3)[0]])
    assert [h.chunk_id for h in hybrid.search(q, k=3)] == ref.tolist()
    with pytest.raises(ValueError, match="at least 2"):
        HybridRetriever([bm])


def test_prompt_and_answer_parsing():
    p = build_prompt("Where did Tom go?", ["Tom went to\n the park.", "Amy bought a cup."])
    assert "[1] Tom went to the park.\n[2] Amy bought a cup.\nQuestion: Where did Tom go?" in p
    assert parse_answer("the park. [1]") == ("the park.", [1])
    assert parse_answer("Amy. [2] [1]") == ("Amy.", [2, 1])
    with pytest.raises(ValueError, match="question"):
        build_prompt("  ", [])


# ============================================================================ the world knowledge base
def test_world_kb_questions_are_unambiguous_unseen_and_paraphrased(tmp_path):
    stories = kb_stories(80)
    qs = kb_questions(stories)
    para = kb_questions(stories, paraphrase=True)
    assert len(qs) == len(para) >= 70 and [q["answer"] for q in qs] == [q["answer"] for q in para]
    texts = write_knowledge_base(stories, tmp_path / "kb")
    for q in qs:
        assert q["story"] in q["relevant"]
        assert q["answer"].rstrip(".").split()[-1] in texts[q["story"]]
    synonyms = set(PLACE_SYNONYMS.values()) | set(OBJECT_SYNONYMS.values()) | set(ANIMAL_SYNONYMS.values())
    assert all(s not in " ".join(texts) for s in synonyms if " " not in s and len(s) > 3)
    train_texts = {p for p, _ in [(b, a) for a, b in retriever_pairs(200)[0]]}
    assert not train_texts & set(texts), "a knowledge-base story is in the retriever's training data"
    recs = rag_sft_records(40)
    assert all(r["messages"][0]["content"].startswith("Answer the question") for r in recs)
    assert 0 < sum("## Entry" in r["messages"][0]["content"] for r in recs) < len(recs)  # headings as in the KB
    assert not any("## Entry" in r["messages"][0]["content"] for r in rag_sft_records(20, heading=0.0))
    assert not {t for r in recs for t in texts if t in r["messages"][0]["content"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = BM25Retriever.from_folder(tmp_path / "kb", max_tokens=128, overlap=16)
    assert [os.path.basename(p) for p, _ in r.errors] == ["broken.jsonl"]
    assert len(r.store) == len(texts)


@pytest.mark.parametrize("module", ["chunking", "bm25", "retriever", "answer", "loaders"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"minillm.rag.{module}"))
    assert result.failed == 0 and result.attempted >= 1
