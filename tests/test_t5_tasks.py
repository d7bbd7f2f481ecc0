"""T5's data (minillm/data/t5_tasks.py): span corruption on the paper's worked example and in
distribution, and the task-prefixed world tasks."""
import numpy as np
import pytest

from minillm.data.t5_tasks import (
    TASKS, Seq2SeqDataset, SpanCorruptionDataset, apply_noise_mask, collate_seq2seq, pack_documents,
    random_spans_noise_mask, sentinel_tokens, span_corruption, world_tasks,
)

WORDS = "Thank you for inviting me to your party last week .".split()
S0, S1, S2, EOS = "<extra_id_0>", "<extra_id_1>", "<extra_id_2>", "</s>"


def test_papers_worked_example():
    """Raffel et al. (2020) Figure 2: 'for inviting' and 'last' are dropped."""
    mask = np.array([w in ("for", "inviting", "last") for w in WORDS])
    inputs, targets = apply_noise_mask(WORDS, mask, [S0, S1, S2], EOS)
    assert " ".join(inputs) == "Thank you <extra_id_0> me to your party <extra_id_1> week . </s>"
    assert " ".join(targets) == "<extra_id_0> for inviting <extra_id_1> last <extra_id_2> </s>"


def test_sentinels_and_errors():
    assert sentinel_tokens(3) == ["<extra_id_0>", "<extra_id_1>", "<extra_id_2>"]
    with pytest.raises(ValueError, match="2 spans need 3 sentinels, got 2"):
        apply_noise_mask(WORDS, np.array([w in ("for", "last") for w in WORDS]), [S0, S1], EOS)
    with pytest.raises(ValueError, match=r"mask has shape \(3,\), tokens have length 11"):
        apply_noise_mask(WORDS, np.zeros(3, bool), [S0], EOS)
    with pytest.raises(ValueError, match="length must be an int >= 2, got 1"):
        random_spans_noise_mask(1)
    with pytest.raises(ValueError, match="noise_density must be in"):
        random_spans_noise_mask(10, noise_density=1.5)


def _spans(mask):
    """Lengths of the runs of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


@pytest.mark.parametrize("length", [2, 3, 7, 20, 100, 513])
def test_noise_mask_counts_are_the_reference_ones(length):
    rng = np.random.default_rng(length)
    for _ in range(20):
        m = random_spans_noise_mask(length, rng=rng)
        n_noise = min(max(round(length * 0.15), 1), length - 1)
        assert m.sum() == n_noise
        assert not m[0]  # non-noise comes first
        spans = _spans(m)
        assert len(spans) == min(max(round(n_noise / 3.0), 1), n_noise, length - n_noise)


def test_noise_statistics_over_many_samples():
    """15 % of tokens, spans of mean length 3, span starts spread over the whole sequence."""
    rng = np.random.default_rng(0)
    masks = [random_spans_noise_mask(200, rng=rng) for _ in range(400)]
    density = np.mean([m.mean() for m in masks])
    span_lengths = np.concatenate([_spans(m) for m in masks])
    assert density == pytest.approx(0.15, abs=1e-9)  # exact by construction: round(200·0.15) = 30
    assert span_lengths.mean() == pytest.approx(3.0, abs=1e-9)  # 30 noise tokens in 10 spans
    assert span_lengths.min() >= 1 and span_lengths.std() > 1.0  # lengths vary, not all 3
    coverage = np.mean(masks, axis=0)  # each position is noise about 15 % of the time (except position 0)
    assert coverage[0] == 0 and 0.08 < coverage[100] < 0.25 and 0.10 < coverage[1:].mean() < 0.20


def test_corruption_round_trips_to_the_original():
    rng = np.random.default_rng(1)
    sentinels = list(range(1000, 1100))
    for n in (2, 5, 31, 128):
        tokens = list(rng.integers(0, 500, n))
        inputs, targets = span_corruption(tokens, sentinels, eos_id=1, rng=rng)
        assert inputs[-1] == targets[-1] == 1
        rebuilt, spans, cur = [], {}, None
        for t in targets[:-1]:
            if t >= 1000:
                cur = t
                spans[cur] = []
            else:
                spans[cur].append(t)
        for t in inputs[:-1]:
            rebuilt += spans[t] if t >= 1000 else [t]
        assert rebuilt == tokens
        n_sent = sum(t >= 1000 for t in inputs)
        assert [t for t in targets if t >= 1000] == sentinels[: n_sent + 1]  # in order, plus the final one


def test_span_corruption_dataset_is_reproducible_and_collates():
    docs = [list(range(10, 60)), list(range(60, 70)), [7]]
    ds = SpanCorruptionDataset(docs, list(range(100, 132)), eos_id=1, max_len=40, seed=3)  # 6 noise tokens in 2 spans
    assert len(ds) == 2  # the 1-token document is dropped
    assert ds[0] == ds[0] and ds[0] != SpanCorruptionDataset(docs, list(range(100, 132)), 1, 40, seed=4)[0]
    assert sum(t not in range(100, 132) and t != 1 for t in ds[0][0]) == 34  # 40 tokens, 6 dropped
    b = collate_seq2seq([ds[0], ds[1]], pad_id=0)
    assert b["input_ids"].shape == b["attention_mask"].shape and b["labels"].shape[0] == 2
    assert (b["labels"][b["labels"] != -100] > 0).all() and b["attention_mask"][1].sum() == len(ds[1][0])


def test_pack_documents_joins_with_eos_and_cuts_to_length():
    assert pack_documents([[5, 6, 7], [8], [9, 10]], 3, eos_id=1) == [[5, 6, 7], [1, 8, 1], [9, 10, 1]]
    assert pack_documents([[5, 6, 7], [8]], 4, eos_id=1) == [[5, 6, 7, 1], [8, 1]]
    assert pack_documents([[5, 6, 7]], 3, eos_id=1) == [[5, 6, 7]]  # a 1-token tail (just EOS) is dropped
    with pytest.raises(ValueError, match="length must be >= 2, got 1"):
        pack_documents([[5]], 1, eos_id=1)


def test_world_tasks_have_prefixes_and_clean_inputs():
    ex = world_tasks(300, "val")
    assert {e["task"] for e in ex} == set(TASKS)
    prefix = {"qa": "question: ", "en2zh": "translate English to Chinese: ", "zh2en": "translate Chinese to English: ",
              "math": "calculate: "}
    for e in ex:
        assert e["source"].startswith(prefix[e["task"]])
        if e["task"] == "math":
            a, op, b = e["source"][len("calculate: "):].split(" ")
            assert str(int(a) + int(b) if op == "+" else int(a) - int(b)) == e["target"]
        if e["task"] == "qa":
            assert " context: " in e["source"]
        if e["task"] in ("en2zh", "zh2en"):
            assert len(e["source"].split(": ", 1)[1]) <= 15  # one lexicon word, no leftover template text
    train_ctx = {e["source"].split(" context: ")[1] for e in world_tasks(300, "train") if e["task"] == "qa"}
    assert not train_ctx & {e["source"].split(" context: ")[1] for e in ex if e["task"] == "qa"}  # held-out stories


def test_seq2seq_dataset_appends_eos():
    class Tok:
        def encode(self, s):
            return [ord(c) for c in s]

    ds = Seq2SeqDataset([{"source": "ab", "target": "c", "task": "x"}], Tok(), eos_id=1, max_len=8)
    assert ds[0] == ([97, 98, 1], [99, 1])
