"""Unigram LM tokenizer (Happy LLM 5.2.3, SentencePiece / T5): Viterbi and forward-backward
against brute-force enumeration of segmentations, EM that raises the likelihood, pruning down
to the requested size, byte fallback, exact round trip, sampling, files, HF parity (optional)."""
import itertools
import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minillm.tokenizers import Tokenizer, UnigramTokenizer
from minillm.tokenizers.unigram import SPACE, _chunks, digamma, split_words, viterbi

CORPUS = [
    "the cat sat on the mat.", "the cat ate the rat.", "a dog sat on a log.", "the dog and the cat are friends.",
    "小猫坐在垫子上。", "小狗坐在木头上。", "7 + 5 = 12", "cat = 猫", "dog = 狗", "Question: Where is the cat?\nAnswer: on the mat.",
] * 20


def segmentations(word):
    """Every way to cut ``word`` into non-empty pieces."""
    n = len(word)
    for cuts in itertools.product([0, 1], repeat=n - 1):
        out, start = [], 0
        for i, c in enumerate(cuts, 1):
            if c:
                out.append(word[start:i])
                start = i
        yield out + [word[start:]]


def toks(tok, ids):
    return [tok.id_to_token(i) for i in ids]


@pytest.fixture(scope="module")
def trained():
    return UnigramTokenizer.train(CORPUS, vocab_size=3 + 256 + 60)


# ----------------------------------------------------------------------------- pieces of the algorithm
def test_words_and_training_chunks():
    assert split_words("the cat  sat") == ["the", SPACE + "cat", SPACE, SPACE + "sat"]
    assert split_words(" a") == [SPACE + "a"]
    assert split_words("") == []
    assert _chunks(SPACE + "zoo.") == [SPACE + "zoo", "."]
    assert _chunks("彼得坐车，12岁") == ["彼得坐车", "，", "12", "岁"]
    assert _chunks("a\n\nb") == ["a", "\n", "\n", "b"]


def test_digamma_known_values_and_bad_input():
    gamma = 0.5772156649015329  # SentencePiece's series (ours) is accurate to ~1e-10
    assert digamma(1.0) == pytest.approx(-gamma, abs=1e-9)
    assert digamma(0.5) == pytest.approx(-gamma - 2 * math.log(2), abs=1e-9)
    assert digamma(10.0) == pytest.approx(sum(1 / k for k in range(1, 10)) - gamma, abs=1e-9)
    for x in (0.3, 2.5, 100.0):  # the recurrence psi(x+1) = psi(x) + 1/x
        assert digamma(x + 1) == pytest.approx(digamma(x) + 1 / x, abs=1e-9)
    with pytest.raises(ValueError, match="x must be > 0, got 0"):
        digamma(0)
    scipy = pytest.importorskip("scipy.special")
    for x in (0.5, 1.7, 6.9, 7.0, 1234.5):
        assert digamma(x) == pytest.approx(float(scipy.digamma(x)), abs=1e-9)


@settings(max_examples=60)
@given(word=st.text(alphabet="abc", min_size=1, max_size=7), seed=st.integers(0, 10_000))
def test_viterbi_equals_brute_force_best_segmentation(word, seed):
    rng = np.random.default_rng(seed)
    pieces = {"".join(p) for n in (1, 2, 3) for p in itertools.product("abc", repeat=n)}
    scores = {p: float(-rng.integers(1, 20)) / 4 for p in sorted(pieces) if rng.random() < 0.7 or len(p) == 1}
    got = viterbi(word, scores, 3)
    assert "".join(p for p, _ in got) == word and all(k for _, k in got)
    best = max(sum(scores[p] for p in seg) for seg in segmentations(word) if all(p in scores for p in seg))
    assert sum(scores[p] for p, _ in got) == pytest.approx(best)


def test_viterbi_ties_go_to_the_earliest_start_and_unknowns_are_marked():
    # "abc" = "ab"+"c" = "a"+"bc": equal scores; Hugging Face keeps the path found first into each
    # position, i.e. the last piece that starts earliest.
    scores = {"a": -1.0, "b": -5.0, "c": -1.0, "ab": -2.0, "bc": -2.0}
    assert viterbi("abc", scores, 2) == [("a", True), ("bc", True)]
    assert viterbi("axb", scores, 2, unk_score=-20.0) == [("a", True), ("x", False), ("b", True)]
    assert viterbi("axb", scores, 2) == []  # no unknown characters allowed: impossible
    assert viterbi("ab", scores, 2, exclude_whole=True) == [("a", True), ("b", True)]


def test_e_step_expected_counts_equal_brute_force_posterior():
    scores = {"a": -1.2, "b": -1.5, "ab": -2.0, "ba": -2.9, "aba": -3.1}
    sentences = [("abab", 3), ("aba", 2)]
    expected, loglik = UnigramTokenizer._e_step(sentences, scores, 3)
    want, want_ll = Counter(), 0.0
    for s, c in sentences:
        segs = [seg for seg in segmentations(s) if all(p in scores for p in seg)]
        w = np.array([math.exp(sum(scores[p] for p in seg)) for seg in segs])
        want_ll += c * math.log(w.sum())
        for seg, wi in zip(segs, w / w.sum()):
            for p in seg:
                want[p] += c * wi
    assert loglik == pytest.approx(want_ll)
    for p in scores:
        assert expected[p] == pytest.approx(want[p])


def test_m_step_is_digamma_of_counts_and_drops_rare_pieces():
    new = UnigramTokenizer._m_step({"a": 3.0, "b": 1.0, "ab": 0.4, "c": 0.1}, required={"a", "b", "c"})
    assert "ab" not in new  # expected 0.4 < 0.5 times: dropped
    total = 3.0 + 1.0 + 0.5  # the character "c" is kept with a count of 0.5
    assert new["a"] == pytest.approx(digamma(3.0) - digamma(total))
    assert new["c"] == pytest.approx(digamma(0.5) - digamma(total))


# ----------------------------------------------------------------------------- training
def test_training_gives_the_requested_size_every_character_and_rising_likelihood(trained):
    tok = trained
    assert tok.vocab_size == 3 + 256 + 60
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    vocab = tok.get_vocab()
    for ch in set("".join(CORPUS).replace(" ", "")):
        assert ch in vocab, ch
    assert "▁cat" in vocab and "▁the" in vocab  # frequent words become single pieces
    scores = [s for _, s in tok.pieces]
    assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)
    # EM never lowers the likelihood of a fixed vocabulary (consecutive entries of equal size)
    for (n0, ll0), (n1, ll1) in zip(tok.history, tok.history[1:]):
        if n0 == n1:
            assert ll1 >= ll0 - 1e-9
    assert len(tok.history) >= 4 and tok.history[0][0] > 2 * 60  # it started larger than the 60 pieces and was pruned


def test_pieces_never_mix_scripts_and_frequent_words_are_one_piece(trained):
    for p, _ in trained.pieces:
        body = p[1:] if p.startswith(SPACE) and len(p) > 1 else p
        assert len(_chunks(body)) == 1, p
    assert toks(trained, trained.encode("the cat")) == ["the", "▁cat"]


def test_every_training_text_round_trips_without_unk(trained):
    for text in set(CORPUS):
        ids = trained.encode(text)
        assert trained.decode(ids) == text
        assert trained.unk_token_id not in ids


@settings(max_examples=80)
@given(st.text(max_size=40) | st.sampled_from(["▁", "a▁b", " <0x41>", "  lead", "tail  ", "\n\n", "😀猫", "\x00"]))
def test_decode_encode_round_trip_for_every_string(trained, text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(ValueError, match="lone surrogate"):
            trained.encode(text)
        return
    assert trained.decode(trained.encode(text)) == text
    assert trained.unk_token_id not in trained.encode(text)


def test_byte_fallback_for_unseen_characters(trained):
    ids = trained.encode("cat😀")
    assert toks(trained, ids)[-4:] == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
    assert trained.decode(ids) == "cat😀"
    no_bytes = UnigramTokenizer([("a", -1.0)], byte_fallback=False)
    assert toks(no_bytes, no_bytes.encode("axxa")) == ["a", "<unk>", "a"]  # consecutive unknowns fused


def test_sampling_is_viterbi_for_large_alpha_and_follows_p_to_the_alpha():
    tok = UnigramTokenizer([("ab", math.log(0.3)), ("a", math.log(0.5)), ("b", math.log(0.2))], byte_fallback=False)
    rng = np.random.default_rng(0)
    assert tok.sample_encode("ab", alpha=200.0, rng=rng) == tok.encode("ab")
    p_whole, p_split = 0.3, 0.5 * 0.2
    for alpha in (1.0, 0.5):
        draws = Counter(tuple(tok.sample_encode("ab", alpha=alpha, rng=rng)) for _ in range(4000))
        want = p_whole**alpha / (p_whole**alpha + p_split**alpha)
        assert draws[tuple(tok.encode("ab"))] / 4000 == pytest.approx(want, abs=0.03)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, got -1"):
        tok.sample_encode("ab", alpha=-1)


# ----------------------------------------------------------------------------- files and Hugging Face
def test_save_load_round_trip(trained, tmp_path):
    trained.save(tmp_path)
    back = Tokenizer.load(tmp_path)
    assert isinstance(back, UnigramTokenizer)
    assert back.get_vocab() == trained.get_vocab() and back.pieces == trained.pieces
    for text in CORPUS[:10] + ["cat😀 ▁"]:
        assert back.encode(text) == trained.encode(text)
    assert (tmp_path / "unigram.vocab").read_text(encoding="utf-8").splitlines()[0] == "<pad>\t0.000000"


def test_bad_input_is_refused_with_the_value_named(tmp_path):
    with pytest.raises(ValueError, match="unk_token='<unk>' is missing"):
        UnigramTokenizer([], special_tokens=["<pad>"])
    with pytest.raises(ValueError, match="piece 'a' appears twice"):
        UnigramTokenizer([("a", -1.0), ("a", -2.0)])
    with pytest.raises(ValueError, match="score of piece 'a' must be a finite number, got nan"):
        UnigramTokenizer([("a", float("nan"))])
    with pytest.raises(ValueError, match="non-empty string, got ''"):
        UnigramTokenizer([("", -1.0)])
    with pytest.raises(ValueError, match=r"\(string, score\) pairs, got 'ab'"):
        UnigramTokenizer(["ab"])
    with pytest.raises(ValueError, match="vocab_size=100 leaves no room"):
        UnigramTokenizer.train(CORPUS, vocab_size=100)
    with pytest.raises(ValueError, match="room for 5 pieces, fewer than the"):
        UnigramTokenizer.train(CORPUS, vocab_size=3 + 256 + 5)
    with pytest.raises(TypeError, match="training texts must be str, got int"):
        UnigramTokenizer.train(["a", 3], vocab_size=300)
    with pytest.raises(ValueError, match="training texts are empty"):
        UnigramTokenizer.train(["", ""], vocab_size=300)
    with pytest.raises(ValueError, match="shrinking_factor must be in"):
        UnigramTokenizer.train(CORPUS, vocab_size=300, shrinking_factor=1.5)
    tok = UnigramTokenizer([("a", -1.0)])
    tok.save(tmp_path)
    path = tmp_path / "tokenizer.json"
    good = json.loads(path.read_text(encoding="utf-8"))

    def broken(edit, match):
        data = json.loads(json.dumps(good))
        edit(data)
        path.write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(ValueError, match=match):
            Tokenizer.load(tmp_path)

    broken(lambda d: d["pre_tokenizer"].update(prepend_scheme="always"), "unsupported pre_tokenizer")
    broken(lambda d: d.update(normalizer={"type": "NFKC"}), "unsupported normalizer")
    broken(lambda d: d["model"]["vocab"].__setitem__(259, ["a", "x"]), r"model.vocab\[259\] must be \[piece, score\]")
    broken(lambda d: d["model"].update(unk_id=9999), "unk_id must be an id in")
    broken(lambda d: d["model"]["vocab"].__setitem__(10, ["<0x77>", 0.0]), "the 256 pieces <0x00>..<0xFF>")
    broken(lambda d: d["model"].update(byte_fallback="yes"), "byte_fallback must be true or false, got 'yes'")


def test_hugging_face_tokenizers_gives_the_same_ids(trained, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    trained.save(tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    rng = np.random.default_rng(0)
    alphabet = list("the cat sat on mat dog log? .=+0123456789\n猫狗小坐在上。") + ["😀", "é", "\t"]
    texts = list(set(CORPUS)) + ["".join(rng.choice(alphabet, size=rng.integers(1, 30))) for _ in range(300)]
    texts += ["  two leading spaces", "trailing  ", "cat😀cat", "no\nbreak", "The Cat", "x</s>y"]
    for text in texts:
        enc = hf.encode(text)
        assert enc.ids == trained.encode(text, allowed_special="all"), text
        assert hf.decode(enc.ids, skip_special_tokens=False) == trained.decode(enc.ids)
    # The two documented differences: a literal "▁" or "<0xNN>" is bytes for us (and round-trips).
    assert hf.decode(hf.encode("a▁b").ids) == "a b" and trained.decode(trained.encode("a▁b")) == "a▁b"
    assert hf.decode(hf.encode("<0x41>").ids) == "A" and trained.decode(trained.encode("<0x41>")) == "<0x41>"


def test_a_tokenizer_trained_by_hugging_face_loads_with_the_same_ids(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.Unigram())
    hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    hf.decoder = decoders.Sequence([decoders.Replace(SPACE, " ")])
    trainer = trainers.UnigramTrainer(vocab_size=80, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
                                      show_progress=False)
    hf.train_from_iterator(CORPUS, trainer)
    hf.save(str(tmp_path / "tokenizer.json"))
    ours = Tokenizer.load(tmp_path)
    assert isinstance(ours, UnigramTokenizer) and not ours.byte_fallback
    assert ours.get_vocab() == hf.get_vocab()
    for text in list(set(CORPUS)) + ["the cat sat on the dog", "猫 and 狗", "unseen ☃ char"]:
        assert ours.encode(text) == hf.encode(text).ids, text
