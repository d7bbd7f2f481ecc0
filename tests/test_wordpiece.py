"""WordPiece (Happy LLM 5.2.3): likelihood-scored training, ## pieces, greedy longest match,
[UNK] only for uncoverable words, BERT's pre-tokenizer, pairs, files, HF parity (optional)."""
import os

import numpy as np
import pytest

from minillm.tokenizers import Tokenizer
from hypothesis import given
from hypothesis import strategies as st

from minillm.tokenizers.wordpiece import BERT_SPECIAL_TOKENS, WordPieceTokenizer, basic_tokenize, train_naive


def toks(tok, ids):
    return [tok.id_to_token(i) for i in ids]


def test_first_merge_is_the_highest_likelihood_score_not_the_most_frequent_pair():
    # "hug" x10, "pug" x5, "pun" x12, "bun" x4, "hugs" x5 (the HF course's example).
    # Most frequent pair: ("##u", "##g") = 20, but its score 20/(36*20) is below
    # ("##g", "##s") = 5/(20*5): "##s" occurs only after "##g".
    texts = ["hug"] * 10 + ["pug"] * 5 + ["pun"] * 12 + ["bun"] * 4 + ["hugs"] * 5
    alphabet = ["b", "h", "p", "##g", "##n", "##s", "##u"]
    tok = WordPieceTokenizer.train(texts, vocab_size=len(BERT_SPECIAL_TOKENS) + len(alphabet) + 1)
    learned = [t for t in tok.get_vocab() if t not in BERT_SPECIAL_TOKENS and t not in alphabet]
    assert learned == ["##gs"]
    # scores by hand: freq(ab) / (freq(a) * freq(b)) with unit counts h=15, p=17, b=4, ##u=36, ##g=20, ##n=16, ##s=5
    scores = {("##g", "##s"): 5 / (20 * 5), ("h", "##u"): 15 / (15 * 36), ("##u", "##g"): 20 / (36 * 20)}
    assert max(scores, key=scores.get) == ("##g", "##s")


def test_training_continues_until_vocab_size_and_encodes_the_training_words():
    texts = ["hug"] * 10 + ["pug"] * 5 + ["pun"] * 12 + ["bun"] * 4 + ["hugs"] * 5
    tok = WordPieceTokenizer.train(texts, vocab_size=20)
    assert tok.vocab_size == 20
    for w in ("hug", "pug", "pun", "bun", "hugs"):
        assert tok.unk_token_id not in tok.encode(w)
        assert tok.decode(tok.encode(w)) == w


def test_greedy_longest_match_first_and_unk_only_when_uncoverable():
    tok = WordPieceTokenizer(["un", "una", "##aff", "##able", "##ff", "##a", "a", "##b"])
    assert toks(tok, tok.encode("unaffable")) == ["una", "##ff", "##able"]  # longest first: "una", not "un"
    assert toks(tok, tok.encode("abab")) == ["a", "##b", "##a", "##b"]
    assert toks(tok, tok.encode("unaffablez a")) == ["[UNK]", "a"]  # one bad char -> the whole word
    assert toks(tok, tok.encode("xa")) == ["[UNK]"]
    assert tok.decode(tok.encode("unaffable a")) == "unaffable a"


def test_basic_pre_tokenizer():
    words = [w for w, _, _ in basic_tokenize("Héllo, 世界! It's $5.")]
    assert words == ["hello", ",", "世", "界", "!", "it", "'", "s", "$", "5", "."]
    cased = [w for w, _, _ in basic_tokenize("Héllo", lowercase=False)]
    assert cased == ["Héllo"]
    assert [w for w, _, _ in basic_tokenize("Héllo", lowercase=False, strip_accents=True)] == ["Hello"]
    text = "Tom  去了\t市场。"
    assert [(w, text[s:e]) for w, s, e in basic_tokenize(text)] == [
        ("tom", "Tom"), ("去", "去"), ("了", "了"), ("市", "市"), ("场", "场"), ("。", "。")]


def test_pair_encoding_and_truncation():
    tok = WordPieceTokenizer.train(["tom went home . lily met tom"], vocab_size=40)
    out = tok.encode_plus("Tom went home.", "Lily met Tom", return_offsets_mapping=True)
    t = toks(tok, out["input_ids"])
    assert t[0] == "[CLS]" and t.count("[SEP]") == 2 and t[-1] == "[SEP]"
    sep = t.index("[SEP]")
    assert out["token_type_ids"] == [0] * (sep + 1) + [1] * (len(t) - sep - 1)
    assert out["attention_mask"] == [1] * len(t)
    assert out["offset_mapping"][1] == (0, 3) and out["offset_mapping"][0] == (0, 0)
    short = tok.encode_plus("Tom went home.", "Lily met Tom", max_length=7)
    assert len(short["input_ids"]) == 7 and toks(tok, short["input_ids"]).count("[SEP]") == 2
    assert tok.encode("tom", add_special_tokens=True) == [tok.cls_token_id, tok.token_to_id("tom"), tok.sep_token_id]
    with pytest.raises(ValueError, match="max_length=3"):
        tok.encode_plus("a", "b", max_length=3)


def test_offsets_point_at_subwords():
    tok = WordPieceTokenizer(["un", "##aff", "##able", "big"])
    ids, offs = tok.encode_with_offsets("Big unaffable")
    assert [("Big unaffable")[s:e] for s, e in offs] == ["Big", "un", "aff", "able"]


def test_save_load_round_trip_and_vocab_txt(tmp_path):
    tok = WordPieceTokenizer.train(["Tom went to the market.", "汤姆去了市场。"] * 3, vocab_size=40, lowercase=False)
    tok.save(tmp_path)
    back = Tokenizer.load(tmp_path)
    assert isinstance(back, WordPieceTokenizer) and back.get_vocab() == tok.get_vocab() and not back.lowercase
    assert back.encode("Tom went to the 市场") == tok.encode("Tom went to the 市场")
    lines = (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:5] == list(BERT_SPECIAL_TOKENS) and len(lines) == tok.vocab_size
    again = WordPieceTokenizer.from_vocab_file(tmp_path / "vocab.txt", lowercase=False)
    assert again.get_vocab() == tok.get_vocab()


def test_bad_vocab_and_arguments(tmp_path):
    p = tmp_path / "vocab.txt"
    p.write_text("[PAD]\n[CLS]\n[SEP]\nhello\n##s\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no \[UNK\] token"):
        WordPieceTokenizer.from_vocab_file(p)
    with pytest.raises(ValueError, match=r"unk_token='\[UNK\]' is missing"):
        WordPieceTokenizer(["a"], special_tokens=["[PAD]", "[CLS]", "[SEP]"])
    with pytest.raises(ValueError, match="appears twice"):
        WordPieceTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="smaller than the 5 special tokens"):
        WordPieceTokenizer.train(["abc"], vocab_size=6)
    with pytest.raises(TypeError, match="must be str"):
        WordPieceTokenizer.train([b"abc"], vocab_size=30)


def test_hf_tokenizers_loads_our_file_with_identical_ids(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from minillm.data.world import generate_stories

    texts = generate_stories(300, seed=1)
    tok = WordPieceTokenizer.train(texts, vocab_size=500)
    tok.save(tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    probes = texts[:100] + ["Héllo, WORLD!! naïve café 123 $5+3", "unbelievable xyzzyq", "汤姆去了市场。Tom's \t cat",
                            "control\x00 \u200b chars", "x" * 120]
    for t in probes:
        assert tok.encode(t) == hf.encode(t, add_special_tokens=False).ids, t
        ids, offs = tok.encode_with_offsets(t)
        enc = hf.encode(t, add_special_tokens=False)
        if "\u200b" not in t:
            assert offs == [tuple(o) for o in enc.offsets], t
    pair = hf.encode("Tom went home.", "Lily 去了公园。")
    ours = tok.encode_plus("Tom went home.", "Lily 去了公园。")
    assert pair.ids == ours["input_ids"] and pair.type_ids == ours["token_type_ids"]
    assert tok.decode(tok.encode(texts[0])) == hf.decode(hf.encode(texts[0], add_special_tokens=False).ids)


def test_a_bare_tokenizer_json_loads_as_wordpiece(tmp_path):
    """Without our tokenizer_config.json (e.g. a file written by HF tokenizers), the model
    type in tokenizer.json alone picks the class."""
    tok = WordPieceTokenizer.train(["Tom went to the market.", "汤姆去了市场。"] * 3, vocab_size=40, lowercase=False)
    tok.save(tmp_path)
    for name in os.listdir(tmp_path):
        if name != "tokenizer.json":
            os.remove(tmp_path / name)
    back = Tokenizer.load(tmp_path / "tokenizer.json")
    assert isinstance(back, WordPieceTokenizer)
    assert back.encode("Tom went to the 市场") == tok.encode("Tom went to the 市场")


@pytest.mark.parametrize("vocab_size", [14, 30, 80])
def test_fast_trainer_equals_the_textbook_trainer_on_the_course_example(vocab_size):
    texts = ["hug"] * 10 + ["pug"] * 5 + ["pun"] * 12 + ["bun"] * 4 + ["hugs"] * 5
    assert WordPieceTokenizer.train(texts, vocab_size).get_vocab() == train_naive(texts, vocab_size).get_vocab()


def test_fast_trainer_equals_the_textbook_trainer_on_world_text():
    from minillm.data.world import generate_stories

    texts = generate_stories(120, seed=3)  # English and Chinese (312 characters); no pair is left before 2500
    for vocab_size, min_frequency in ((340, 1), (700, 1), (2500, 1), (400, 3)):
        fast = WordPieceTokenizer.train(texts, vocab_size, min_frequency=min_frequency)
        naive = train_naive(texts, vocab_size, min_frequency=min_frequency)
        assert list(fast.get_vocab()) == list(naive.get_vocab()), (vocab_size, min_frequency)


# Few letters, short words: many equal scores and counts, so the tie-breaking is exercised, and
# merges whose parts are equal ("##a" "##a") or recur in one word.
_words = st.text(alphabet="aab\u00e9c", min_size=1, max_size=7)


@given(st.lists(st.tuples(_words, st.integers(1, 5)), min_size=1, max_size=12), st.integers(0, 25))
def test_fast_trainer_equals_the_textbook_trainer_on_random_corpora(word_counts, extra):
    texts = [" ".join([w] * c) for w, c in word_counts]
    alphabet = len({u for w, _ in word_counts for u in [w[0]] + ["##" + ch for ch in w[1:]]}) + 6  # upper bound
    vocab_size = len(BERT_SPECIAL_TOKENS) + alphabet + extra
    for lowercase in (True, False):
        fast = WordPieceTokenizer.train(texts, vocab_size, lowercase=lowercase)
        naive = train_naive(texts, vocab_size, lowercase=lowercase)
        assert list(fast.get_vocab()) == list(naive.get_vocab())


def test_pre_tokenizer_character_cache_agrees_with_the_rules():
    from minillm.tokenizers import wordpiece as wp

    text = "Tom's\u00a0caf\u00e9, 世界!\t\x00\u200b x\ufffdy \u3000end"
    first = basic_tokenize(text, lowercase=False)  # fills the cache
    assert basic_tokenize(text, lowercase=False) == first
    for ch in set(text):
        assert wp._CHAR_KIND[ch] == wp._char_kind(ch)
    assert [w for w, _, _ in first] == ["Tom", "'", "s", "café", ",", "世", "界", "!", "x", "y", "end"]
