"""MLM masking, NSP/SOP pairs and the labelled world datasets of minillm.data.bert_tasks."""
import numpy as np
import pytest

from minillm.data.bert_tasks import (NER_LABELS, POS_TAGS, DataCollatorForLanguageModeling, encode_pairs,
                                     find_entities, heldout_entities, language_data, make_nsp_pairs, make_sop_pairs,
                                     mask_tokens, ner_data, pos_data, pos_tags, qa_data, question_kind_data,
                                     split_sentences, tokenize_ner, tokenize_pos, tokenize_qa)
from minillm.data import world
from minillm.data.world import WorldConfig, generate_stories


def stories(n):
    return generate_stories(n, config=WorldConfig(doc_mix={"story": 1.0}))
from minillm.tokenizers.wordpiece import WordPieceTokenizer


@pytest.fixture(scope="module")
def tok():
    return WordPieceTokenizer.train(generate_stories(400, seed=0), vocab_size=400)


def test_mask_proportions_over_many_batches():
    rng = np.random.default_rng(0)
    V, MASK = 100, 4
    special_ids = np.arange(5)
    chosen = total = n_mask = n_rand = n_same = 0
    for _ in range(200):
        ids = rng.integers(5, V, size=(8, 32))
        ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
        ids[:4, 20:] = 0  # padding
        special = np.isin(ids, special_ids)
        out, labels = mask_tokens(ids, special, MASK, np.arange(5, V), rng)
        sel = labels != -100
        assert not (sel & special).any()  # never a special token or padding
        assert (labels[sel] == ids[sel]).all()  # labels are the original ids
        assert (out[~sel] == ids[~sel]).all()  # unchosen tokens are untouched
        chosen += sel.sum()
        total += (~special).sum()
        n_mask += (out[sel] == MASK).sum()
        same = out[sel] == ids[sel]
        n_same += same.sum()
        n_rand += (~same & (out[sel] != MASK)).sum()
        assert ((out[sel] == MASK) | (out[sel] >= 5)).all()  # random replacements are ordinary tokens
    # ~43k candidates: 3 standard deviations of the 15% rate are ~0.5 points
    assert abs(chosen / total - 0.15) < 0.006
    # unchanged includes random draws that hit the same id (1/95 of the 10%)
    assert abs(n_mask / chosen - 0.8) < 0.015
    assert abs(n_rand / chosen - 0.1 * 94 / 95) < 0.012
    assert abs(n_same / chosen - (0.1 + 0.1 / 95)) < 0.012


def test_whole_word_masking_masks_all_pieces_of_a_word():
    rng = np.random.default_rng(1)
    # words: [5, 6c, 7c], [8], [9, 10c]  (c = ## continuation)
    ids = np.tile(np.array([[2, 5, 6, 7, 8, 9, 10, 3]]), (4000, 1))
    starts = ~np.isin(ids, [6, 7, 10])
    special = np.isin(ids, [2, 3])
    out, labels = mask_tokens(ids, special, 4, np.arange(5, 20), rng, word_starts=starts)
    sel = labels != -100
    assert (sel[:, 1] == sel[:, 2]).all() and (sel[:, 2] == sel[:, 3]).all() and (sel[:, 5] == sel[:, 6]).all()
    assert not sel[:, [0, 7]].any()
    for col in (1, 4, 5):  # one draw per word: 15% of the words
        assert abs(sel[:, col].mean() - 0.15) < 0.025


def test_collator_pads_masks_dynamically_and_keeps_labels(tok):
    col = DataCollatorForLanguageModeling.from_tokenizer(tok, seed=0)
    ex = [tok.encode_plus("Tom went to the market.", "Lily saw a cat."), tok.encode_plus("Anna found a key.")]
    ex[0]["next_sentence_label"], ex[1]["next_sentence_label"] = 0, 1
    a, b = col(ex), col(ex)
    assert a["input_ids"].shape == a["labels"].shape == a["attention_mask"].shape == a["token_type_ids"].shape
    assert a["attention_mask"][1].sum() == len(ex[1]["input_ids"])
    assert (a["labels"][a["attention_mask"] == 0] == -100).all()
    assert a["next_sentence_label"].tolist() == [0, 1]
    masks = [col([ex[0]] * 64)["labels"] != -100 for _ in range(2)]
    assert (masks[0] != masks[1]).any()  # a new mask on every call (RoBERTa's dynamic masking)
    with pytest.raises(ValueError, match="continuation_ids"):
        DataCollatorForLanguageModeling(0, 4, 10, [0, 1, 2, 3, 4], whole_word_mask=True)


def test_nsp_pairs_are_half_next_half_random():
    docs = stories(300)
    pairs = make_nsp_pairs(docs, 2000, seed=0)
    frac = np.mean([p[2] for p in pairs])
    assert abs(frac - 0.5) < 0.035
    # IsNext pairs: B continues A inside one document
    for a, b, label in pairs[:200]:
        if label == 0:
            assert any((a + " " + b) in d or (a + b) in d for d in docs)


def test_sop_pairs_swap_half_of_the_consecutive_segments():
    docs = stories(300)
    pairs = make_sop_pairs(docs, 2000, seed=0)
    assert abs(np.mean([p[2] for p in pairs]) - 0.5) < 0.035
    for a, b, label in pairs[:200]:
        first, second = (b, a) if label else (a, b)
        assert any((first + " " + second) in d or (first + second) in d for d in docs)


def test_split_sentences():
    assert split_sentences("Tom went home. It rained.") == ["Tom went home.", "It rained."]
    assert split_sentences("汤姆回家了。下雨了。") == ["汤姆回家了。", "下雨了。"]


def test_encode_pairs(tok):
    ex = encode_pairs(tok, [("Tom went home.", "Lily met Tom.", 1)], max_length=64)[0]
    assert ex["next_sentence_label"] == 1 and ex["token_type_ids"][-1] == 1


def test_classification_data():
    recs, names = question_kind_data(200, seed=0)
    assert {r["label"] for r in recs} <= set(range(len(names))) and len({r["label"] for r in recs}) >= 6
    recs, names = language_data(100)
    assert names == ["en", "zh"] and 20 < sum(r["label"] for r in recs) < 80


def test_ner_tags_mark_people_places_objects(tok):
    recs = ner_data(50, seed=0)
    ex = tokenize_ner(tok, recs, max_length=128)
    words = [(tok.id_to_token(i), NER_LABELS[l] if l >= 0 else None) for i, l in zip(ex[0]["input_ids"], ex[0]["labels"])]
    assert words[0] == ("[CLS]", None) and words[-1] == ("[SEP]", None)
    text = recs[0]["text"]
    for s, e, t in recs[0]["entities"]:
        assert t in ("PER", "LOC", "OBJ") and text[s:e]
    tags = {t for _, t in words if t}
    assert "B-PER" in tags and "O" in tags
    zh = next(r for r in recs if "。" in r["text"])
    assert any(zh["text"][s:e] in ("汤姆", "莉莉", "安娜", "杰克", "露西", "山姆", "艾玛", "利奥", "米娅", "马克斯", "妮娜", "鲍勃",
                                   "凯特", "大卫", "萨拉", "彼得", "爱丽丝", "迈克", "简", "保罗", "罗丝", "蒂姆", "艾米", "埃里克")
               for s, e, _ in zh["entities"])
    # longest match: the garden (花园) is a place, not the flower (花) + 园
    assert [t for s, e, t in __import__("minillm.data.bert_tasks", fromlist=["x"]).find_entities("她去了花园。")] == ["LOC"]


def test_qa_spans_decode_to_the_answer(tok):
    recs = qa_data(200, seed=0)
    assert len(recs) == 200
    for r in recs:
        assert r["context"][r["answer_start"]:r["answer_start"] + len(r["answer"])] == r["answer"]
    ex = tokenize_qa(tok, recs, max_length=160)
    assert len(ex) >= 190
    for e in ex:
        s, t = e["start_positions"], e["end_positions"]
        assert e["token_type_ids"][s] == 1 and s <= t
        span = e["context"][e["offset_mapping"][s][0]:e["offset_mapping"][t][1]]
        assert span == e["answer"]


# ----------------------------------------------------------------------------- held-out entities
def test_heldout_entities_are_a_quarter_of_each_kind_in_both_languages():
    held = heldout_entities(0)
    for table, k in ((world.NAMES, 6), (world.PLACES, 5), (world.CITIES, 3), (world.OBJECTS, 5)):
        rows = [r for r in table if r[0] in held]
        assert len(rows) == k
        assert all(r[1] in held for r in rows)  # the Chinese form goes with the English one
    assert heldout_entities(0) == held and heldout_entities(1) != held  # fixed by the seed
    with pytest.raises(ValueError, match="fraction must be in"):
        heldout_entities(0, fraction=1.0)


def test_seen_training_stories_never_contain_a_heldout_entity_and_unseen_test_stories_always_do():
    held = heldout_entities(0)
    train = ner_data(150, seed=0, entities="seen")
    test = ner_data(150, split="val", seed=0, entities="unseen")
    assert len(train) == len(test) == 150
    for r in train:
        assert not any(r["text"][s:e] in held for s, e, _ in r["entities"]) and r["unseen"] == []
    for r in test:
        assert r["unseen"] and all(r["text"][s:e] in held for s, e, _ in r["unseen"])
    # held-out entities still occur in the unlabelled pretraining corpus (train split), as in real pretraining
    corpus = world.generate_stories(500, config=world.WorldConfig(doc_mix={"story": 1.0}))
    seen_in_corpus = {d[s:e] for d in corpus for s, e, _ in find_entities(d)}
    assert {r[0] for r in world.NAMES if r[0] in held} <= seen_in_corpus
    assert not set(t["text"] for t in test) & set(corpus)  # the val split never overlaps the corpus
    with pytest.raises(ValueError, match="entities must be one of"):
        ner_data(3, entities="some")


def test_ner_unseen_flags_mark_exactly_the_tokens_of_heldout_entities(tok):
    recs = ner_data(40, split="val", seed=0, entities="unseen")
    for r, ex in zip(recs, tokenize_ner(tok, recs, max_length=128)):
        enc = tok.encode_plus(r["text"], max_length=128, return_offsets_mapping=True)
        assert len(ex["unseen"]) == len(ex["labels"])
        for (s, e), u, lab in zip(enc["offset_mapping"], ex["unseen"], ex["labels"]):
            assert u == (e > s and any(s >= a and e <= b for a, b, _ in r["unseen"]))  # specials are (0, 0)
            if u:
                assert NER_LABELS[lab] != "O"


# ----------------------------------------------------------------------------- POS (1.3.3)
def test_pos_tags_of_the_books_kind_of_sentence():
    text = "In the morning, Tom went to the park. There, Tom met his friend Lily. Tom's favourite colour is red."
    tags = [(text[s:e], t) for s, e, t in pos_tags(text)]
    assert tags[:10] == [("In", "IN"), ("the", "DT"), ("morning", "NN"), (",", ","), ("Tom", "NNP"), ("went", "VBD"),
                         ("to", "TO"), ("the", "DT"), ("park", "NN"), (".", ".")]
    assert ("his", "PRP$") in tags and ("'s", "POS") in tags and ("red", "JJ") in tags and ("is", "VBZ") in tags
    with pytest.raises(ValueError, match="'guitar' at 11"):
        pos_tags("It was the guitar.")


def test_every_word_of_many_english_stories_has_a_tag():
    docs = world.generate_stories(1500, config=world.WorldConfig(doc_mix={"story": 1.0}, langs=("en",)))
    n = sum(len(pos_tags(d)) for d in docs)  # raises on any untagged word
    assert n > 20_000
    assert set(POS_TAGS) >= {"NNP", "NN", "VBD", "DT", "IN", "JJ", "PRP", "."}


def test_tokenize_pos_labels_the_first_piece_of_each_word(tok):
    recs = pos_data(30, split="val", seed=0, entities="unseen")
    assert all(any(r["unseen"]) for r in recs)
    for r, ex in zip(recs, tokenize_pos(tok, recs, max_length=512)):  # no truncation: every word is labelled
        enc = tok.encode_plus(r["text"], max_length=512, return_offsets_mapping=True)
        labelled = [(enc["offset_mapping"][k][0], POS_TAGS[lab], u)
                    for k, (lab, u) in enumerate(zip(ex["labels"], ex["unseen"])) if lab != -100]
        assert labelled == [(s, t, u) for (s, _, t), u in zip(r["words"], r["unseen"])]  # one label per word
        assert ex["labels"][0] == ex["labels"][-1] == -100


def test_roberta_tokenizer_feeds_the_same_datasets():
    from minillm.tokenizers.roberta import RobertaTokenizer

    rt = RobertaTokenizer.train(world.generate_stories(300, seed=0), vocab_size=600)
    recs = ner_data(20, seed=0)
    for r, ex in zip(recs, tokenize_ner(rt, recs, max_length=128)):
        enc = rt.encode_plus(r["text"], max_length=128, return_offsets_mapping=True)
        assert ex["input_ids"][0] == rt.cls_token_id and ex["input_ids"][-1] == rt.sep_token_id
        assert all(e > s for (s, e), lab in zip(enc["offset_mapping"], ex["labels"]) if lab not in (-100, 0))
        assert len(ex["labels"]) == len(ex["input_ids"])
    qa = tokenize_qa(rt, qa_data(60, seed=0), max_length=160)
    assert len(qa) >= 50
    for e in qa:
        s, t = e["start_positions"], e["end_positions"]
        span = e["context"][e["offset_mapping"][s][0]:e["offset_mapping"][t][1]]
        assert e["answer"] in span and s <= t  # byte-level pieces may cross the answer's edge (Chinese)
        sep = e["input_ids"].index(rt.sep_token_id)
        assert e["input_ids"][sep:sep + 2] == [rt.sep_token_id] * 2 and s > sep + 1  # <s> q </s></s> context </s>
    pos = tokenize_pos(rt, pos_data(20, seed=0), max_length=128)
    assert all(sum(lab != -100 for lab in ex["labels"]) > 5 for ex in pos)
