"""1.3.1 Chinese word segmentation: worked examples, the world's gold data, SIGHAN scoring."""
import math

import pytest

from minillm.classic.data import HELDOUT_NAMES, TAGS, segmented_stories, synthetic_names, train_heldout_lexicon
from minillm.classic.segment import (
    Dictionary, HMMSegmenter, UnigramSegmenter, bimm, bmes_tags, bmm, fmm, score, spans,
)
from minillm.data.world import NAMES
from minillm.tokenizers import WordTokenizer

DICT = {"研究", "研究生", "生命", "起源", "结婚", "的", "和", "尚未", "和尚", "未"}


def test_maximum_matching_worked_examples():
    # the textbook pair: FMM is greedy from the left and takes 研究生; BMM from the right is right
    assert fmm("研究生命起源", DICT) == ["研究生", "命", "起源"]
    assert bmm("研究生命起源", DICT) == ["研究", "生命", "起源"]
    assert bimm("研究生命起源", DICT) == ["研究", "生命", "起源"]  # fewer single characters
    # 结婚的和尚未结婚的: FMM takes 和尚 and leaves 未; BMM takes 尚未
    assert fmm("结婚的和尚未结婚的", DICT) == ["结婚", "的", "和尚", "未", "结婚", "的"]
    assert bmm("结婚的和尚未结婚的", DICT) == ["结婚", "的", "和", "尚未", "结婚", "的"]
    assert fmm("", DICT) == [] and bmm("", DICT) == [] and fmm("猫", DICT) == ["猫"]


def test_unigram_viterbi_picks_the_most_probable_path():
    d = Dictionary({"研究": 10, "研究生": 1, "生命": 10, "命": 1, "起源": 10})
    seg = UnigramSegmenter(d)
    assert seg.dag("研究生命起源")[0] == [1, 2, 3]
    assert seg.cut("研究生命起源") == ["研究", "生命", "起源"]
    # make 研究生 + 命 more probable than 研究 + 生命: the path flips
    d2 = Dictionary({"研究": 1, "研究生": 1000, "生命": 1, "命": 1000, "起源": 10})
    assert UnigramSegmenter(d2).cut("研究生命起源") == ["研究生", "命", "起源"]
    # brute force: the Viterbi path's log-probability is the best of all segmentations
    text = "研究生命起源"

    def all_segs(t):
        if not t:
            yield []
            return
        for j in range(1, len(t) + 1):
            for rest in all_segs(t[j:]):
                yield [t[:j]] + rest

    def lp(ws):
        return sum(d.logp(w) if w in d else seg._unk for w in ws)

    assert math.isclose(lp(seg.cut(text)), max(lp(s) for s in all_segs(text) if all(w in d or len(w) == 1 for w in s)))


def test_bmes_and_hmm_learns_words_it_never_saw():
    assert bmes_tags(["汤姆", "去", "了", "图书馆"]) == "BESSBME"
    train = [w for w, _ in segmented_stories(400)]
    hmm = HMMSegmenter.train(train)
    tags = hmm.tag("莉姆去了公园。")
    assert len(tags) == 7 and tags[-1] in "ES" and all(b in {"B": "ME", "M": "ME", "E": "BS", "S": "BS"}[a] for a, b in zip(tags, tags[1:]))
    # 莉姆 is a synthetic name: never in training, cut right from the patterns around it
    assert hmm.cut("莉姆去了公园。") == ["莉姆", "去", "了", "公园", "。"]
    assert "莉姆" not in Dictionary.from_segmented(train)
    assert UnigramSegmenter(Dictionary.from_segmented(train), hmm).cut("莉姆去了公园。")[0] == "莉姆"


def test_sighan_score_worked_example():
    gold = [["汤姆", "去", "了", "公园"]]
    pred = [["汤姆", "去了", "公园"]]
    s = score(gold, pred, dictionary={"汤姆", "去", "了"})
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 4)
    assert s["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert s["oov_recall"] == 1.0 and s["iv_recall"] == pytest.approx(1 / 3) and s["n_oov"] == 1
    assert spans(["ab", "c"]) == [(0, 2), (2, 3)]
    perfect = score(gold, gold)
    assert perfect["f1"] == 1.0


def test_world_gold_data_and_split():
    stories = list(segmented_stories(50))
    for words, tags in stories:
        assert len(words) == len(tags) and all(t in TAGS for t in tags) and all(words)
    assert stories == list(segmented_stories(50))  # deterministic
    train_names = {n for n, _ in train_heldout_lexicon("train")["names"]}
    assert not train_names & {NAMES[i][1] for i in HELDOUT_NAMES}
    assert not train_names & set(synthetic_names())
    held = list(segmented_stories(50, split="heldout"))
    d = Dictionary.from_segmented(w for w, _ in segmented_stories(2000))
    assert all(any(w not in d for w, t in zip(ws, ts) if t == "NAME") for ws, ts in held)  # OOV names in each


def test_methods_on_the_heldout_split():
    train = [w for w, _ in segmented_stories(1500)]
    held = [w for w, _ in segmented_stories(150, split="heldout")]
    d, hmm = Dictionary.from_segmented(train), HMMSegmenter.train(train)
    texts = ["".join(w) for w in held]
    mm = score(held, [bimm(t, d.counts) for t in texts], d)
    uni = score(held, [UnigramSegmenter(d).cut(t) for t in texts], d)
    both = score(held, [UnigramSegmenter(d, hmm).cut(t) for t in texts], d)
    # a dictionary alone cannot find new words; the HMM finds most of them
    assert mm["oov_recall"] < 0.1 and uni["oov_recall"] < 0.1 and mm["iv_recall"] > 0.99
    assert both["oov_recall"] > 0.8 and both["f1"] > uni["f1"] + 0.1


def test_word_tokenizer_segmenter_option():
    seg = UnigramSegmenter(Dictionary({"汤姆": 2, "公园": 2, "去": 1, "了": 1}))
    tok = WordTokenizer.train(["汤姆去了公园。Tom went to the park."], segmenter=seg)
    ids = tok.encode("汤姆去了公园。Tom went")
    assert [tok.id_to_token(i) for i in ids] == ["汤姆", "去", "了", "公园", "。", "Tom", "went"]
    assert tok.decode(ids) == "汤姆去了公园。Tom went"
    plain = WordTokenizer.train(["汤姆去了公园。"])
    assert [plain.id_to_token(i) for i in plain.encode("汤姆")] == ["汤", "姆"]  # default unchanged


def test_bad_inputs():
    with pytest.raises(TypeError, match="segmenter must be callable"):
        WordTokenizer(segmenter="jieba")
    with pytest.raises(ValueError, match="changed the text"):
        WordTokenizer.train(["汤姆"], segmenter=lambda s: ["X"])
    with pytest.raises(TypeError, match="text must be a str"):
        fmm(["汤姆"], DICT)
    with pytest.raises(ValueError, match="counts > 0"):
        Dictionary({"猫": 0})
    with pytest.raises(ValueError, match="sentence 0 differs"):
        score([["汤姆"]], [["汤"]])
    with pytest.raises(ValueError, match="2 gold sentences but 1"):
        score([["a"], ["b"]], [["a"]])
    with pytest.raises(ValueError, match="split must be"):
        train_heldout_lexicon("val")
    with pytest.raises(ValueError, match="no non-empty"):
        HMMSegmenter.train([[]])
