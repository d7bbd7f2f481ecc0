"""1.4.1 one-hot, bag of words, TF-IDF, cosine search: worked examples and scikit-learn parity."""
import math

import numpy as np
import pytest

from minillm.classic.vectors import (
    CountVectorizer, DocumentSearch, TfidfVectorizer, cosine_similarity, default_tokenize, one_hot,
)
from minillm.data.world import WorldConfig, generate_stories

DOCS = ["the cat saw the cat", "the dog", "a red cat and a red dog"]


def test_one_hot_and_bag_of_words_is_the_sum_of_one_hots():
    cv = CountVectorizer().fit(DOCS)
    toks = default_tokenize(DOCS[0])
    assert np.array_equal(one_hot(toks, cv.vocabulary_).sum(0), cv.transform([DOCS[0]])[0])
    assert one_hot(toks, cv.vocabulary_).sum(1).tolist() == [1.0] * len(toks)
    assert CountVectorizer(binary=True).fit_transform(DOCS).max() == 1.0


def test_tfidf_worked_example_by_hand():
    tv = TfidfVectorizer(smooth_idf=False, norm=None).fit(DOCS)
    v = tv.vocabulary_
    # "cat" is in 2 of 3 documents: idf = ln(3/2) + 1; doc 0 has it twice
    assert tv.idf_[v["cat"]] == pytest.approx(math.log(3 / 2) + 1)
    X = tv.transform(DOCS)
    assert X[0, v["cat"]] == pytest.approx(2 * (math.log(3 / 2) + 1))
    smooth = TfidfVectorizer(sublinear_tf=True).fit(DOCS)
    assert smooth.idf_[smooth.vocabulary_["red"]] == pytest.approx(math.log(4 / 2) + 1)
    Y = smooth.transform(DOCS)
    assert np.allclose(np.linalg.norm(Y, axis=1), 1.0)
    raw = (1 + math.log(2)) * smooth.idf_[smooth.vocabulary_["red"]]
    assert Y[2, smooth.vocabulary_["red"]] == pytest.approx(raw / np.linalg.norm(TfidfVectorizer(sublinear_tf=True, norm=None).fit(DOCS).transform(DOCS)[2]))


def test_any_tokenizer_and_empty_documents():
    from minillm.tokenizers import CharTokenizer

    tok = CharTokenizer.train(["abc cab"])
    tv = TfidfVectorizer(tokenizer=tok).fit(["abc", "cab a"])
    assert set(tv.vocabulary_) == {"a", "b", "c", " "}
    assert np.all(TfidfVectorizer().fit(DOCS).transform(["zzz"]) == 0)  # unknown words: a zero row, no NaN


def test_document_search_finds_the_story():
    docs = generate_stories(60, seed=3, config=WorldConfig(doc_mix={"story": 1.0}, langs=("en",)))
    s = DocumentSearch(docs)
    for i in (0, 17, 42):
        assert s.search(docs[i], k=1)[0][0] == i  # a document is its own nearest neighbour
    hits = s.search("cat", k=3)
    assert all("cat" in docs[j].lower() for j, _ in hits) and hits[0][1] >= hits[1][1] >= hits[2][1]
    a = np.array([[3.0, 4.0]])
    assert cosine_similarity(a, 2 * a)[0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("sublinear_tf", [False, True])
@pytest.mark.parametrize("smooth_idf", [False, True])
def test_sklearn_parity(sublinear_tf, smooth_idf):
    sk = pytest.importorskip("sklearn.feature_extraction.text")
    docs = generate_stories(80, seed=1)
    ours = TfidfVectorizer(sublinear_tf=sublinear_tf, smooth_idf=smooth_idf)
    theirs = sk.TfidfVectorizer(tokenizer=default_tokenize, lowercase=False, token_pattern=None,
                                sublinear_tf=sublinear_tf, smooth_idf=smooth_idf)
    X = ours.fit_transform(docs)
    Y = theirs.fit_transform(docs).toarray()
    assert ours.vocabulary_ == {k: int(v) for k, v in theirs.vocabulary_.items()}
    np.testing.assert_allclose(X, Y, rtol=0, atol=1e-10)


def test_bad_inputs():
    with pytest.raises(TypeError, match="single str"):
        TfidfVectorizer().fit("the cat")
    with pytest.raises(TypeError, match="document 1 must be a str"):
        TfidfVectorizer().fit(["a", 3])
    with pytest.raises(RuntimeError, match="call fit"):
        TfidfVectorizer().transform(["a"])
    with pytest.raises(ValueError, match="norm must be"):
        TfidfVectorizer(norm="l1")
    with pytest.raises(ValueError, match="no tokens"):
        CountVectorizer().fit(["!!!"])
    with pytest.raises(TypeError, match="tokenizer must be"):
        CountVectorizer(tokenizer=42)
    with pytest.raises(ValueError, match="feature sizes differ"):
        cosine_similarity(np.ones((1, 2)), np.ones((1, 3)))
    with pytest.raises(ValueError, match="k must be >= 1"):
        DocumentSearch(DOCS).search("cat", k=0)
