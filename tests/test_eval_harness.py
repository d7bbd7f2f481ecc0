"""The harness: batched scoring equals one-by-one scoring, rolling windows, few-shot prompts,
task types, and calibration with stub scorers (an oracle scores 100 %, a random scorer chance)."""
import json
import math
import random

import numpy as np
import pytest

import minillm as mi
from minillm.data import generate_stories
from minillm.eval.harness import ModelLM, compare_table, evaluate, format_results, load_results, rolling_windows, run_task, save_results
from minillm.eval.tasks import (
    GenerationConfig, GenerationTask, GenItem, MCItem, MultipleChoiceTask, PerplexityTask, build_context, register_metric,
    sample_demos,
)
from minillm.generation import generate
from minillm.models.llama import ModelConfig, Transformer
from minillm.tokenizers import BPETokenizer


@pytest.fixture(scope="module")
def lm():
    tok = BPETokenizer.train(generate_stories(150, seed=0), vocab_size=400, show_progress=False)
    mi.manual_seed(0)
    model = Transformer(ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size, max_seq_len=48))
    return ModelLM(model, tok, batch_size=4)


def _reference_loglik(model, ctx, cont):
    """log P(cont | ctx) from the model's own cross-entropy: an independent path."""
    seq = np.array([ctx + cont], dtype=np.int64)
    targets = seq[:, 1:].copy()
    targets[:, : len(ctx) - 1] = -100  # score only the continuation
    with mi.no_grad():
        loss = model(seq[:, :-1], targets=targets).loss.item()
    return -loss * len(cont)


def _recording(model, record):
    """``model``, with ``record(ids)`` called on every forward call's input ids."""
    class Recording:
        def __getattr__(self, name):
            return getattr(model, name)

        def __call__(self, ids, **kw):
            record(np.asarray(ids))
            return model(ids, **kw)

    return Recording()


def test_batched_loglikelihood_equals_one_by_one(lm):
    rng = random.Random(0)
    V = lm.tok.vocab_size
    pairs = [([rng.randrange(V) for _ in range(rng.randint(1, 30))], [rng.randrange(V) for _ in range(rng.randint(1, 8))])
             for _ in range(11)]
    batched = lm.loglikelihood_tokens(pairs)  # batches of 4 rows of different lengths, right-padded
    single = ModelLM(lm.model, lm.tok, batch_size=1).loglikelihood_tokens(pairs)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-4)
    for (ctx, cont), ll in zip(pairs, single):
        assert ll == pytest.approx(_reference_loglik(lm.model, ctx, cont), rel=1e-4, abs=1e-4)
        assert ll < 0


def test_shared_contexts_reuse_the_kv_cache_and_score_as_from_scratch(lm):
    """Choices of one question run their context once (KV cache copied per choice); the scores
    equal scoring each pair whole, and the model's own cross-entropy."""
    rng = random.Random(1)
    V = lm.tok.vocab_size
    questions = [[rng.randrange(V) for _ in range(rng.randint(1, 30))] for _ in range(3)]
    pairs = [(q, [rng.randrange(V) for _ in range(rng.randint(1, 6))]) for q in questions for _ in range(6)]
    pairs.append((questions[0], [5]))  # one-token choice
    pairs.append(([3, 4], [1, 2]))  # a context of its own: scored whole
    pairs.append((list(range(45)), [1, 2, 3, 4, 5]))  # 49 tokens: cut on the left, scored whole
    pairs.append((list(range(45)), [6, 7, 8, 9, 10]))

    fed = []  # tokens of every forward call
    counting = ModelLM(_recording(lm.model, lambda ids: fed.append(ids.size)), lm.tok, batch_size=4)
    shared = counting.loglikelihood_tokens(pairs)
    seqs = [((c + x)[-(lm.max_length + 1):], len(x)) for c, x in pairs]
    whole = [0.0] * len(pairs)
    lm._score_full(seqs, list(range(len(pairs))), whole)
    np.testing.assert_allclose(shared, whole, rtol=1e-4, atol=1e-4)
    for (ctx, cont), ll in list(zip(pairs, shared))[:-2]:
        assert ll == pytest.approx(_reference_loglik(lm.model, ctx, cont), rel=1e-4, abs=1e-4)
    full_tokens = sum(len(s) - 1 for s, _ in seqs)
    context_tokens = sum(len(q) for q in questions)
    assert sum(fed) < full_tokens - context_tokens  # each question's context ran once, not six times


@pytest.mark.parametrize("family", ["llama", "gpt"])
def test_contexts_of_several_questions_run_together_left_padded(lm, family):
    """Several questions' contexts of different lengths in one forward call (left-padded, with
    attention_mask and position ids): every score equals the model's own cross-entropy on that
    pair alone. A choice that would not fit behind the batch's longest context (max_seq_len 48)
    sends its question to another batch instead of being cut."""
    rng = random.Random(2)
    V = lm.tok.vocab_size
    if family == "gpt":
        from minillm.models.gpt import GPT, GPTConfig

        mi.manual_seed(0)
        model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, vocab_size=V, max_seq_len=48))
    else:
        model = lm.model
    questions = [[rng.randrange(V) for _ in range(n)] for n in (1, 3, 17, 30, 9, 40, 5)]
    pairs = [(q, [rng.randrange(V) for _ in range(rng.randint(1, 5))]) for q in questions for _ in range(2)]
    pairs.append((questions[3], [rng.randrange(V) for _ in range(12)]))  # 30 + 12 fits alone, not behind the 40-token context
    calls = []
    scorer = ModelLM(_recording(model, lambda ids: calls.append(ids.shape)), lm.tok, batch_size=8)
    scores = scorer.loglikelihood_tokens(pairs)
    for (ctx, cont), ll in zip(pairs, scores):
        assert ll == pytest.approx(_reference_loglik(model, ctx, cont), rel=1e-4, abs=1e-4)
    context_calls = [shape for shape in calls if shape[1] >= 9]  # the choices' calls are at most 11 wide
    assert any(shape[0] > 1 for shape in context_calls)  # several contexts in one call
    assert len(context_calls) < len(questions)
    assert all(shape[0] <= 8 for shape in calls)


def test_loglikelihood_truncates_long_sequences_on_the_left(lm):
    ctx, cont = list(range(5, 5 + 70)), [7, 8, 9]  # 73 tokens > max_seq_len 48 + 1
    (ll,) = lm.loglikelihood_tokens([(ctx, cont)])
    kept = (ctx + cont)[-49:]
    assert ll == pytest.approx(_reference_loglik(lm.model, kept[:-3], cont), rel=1e-4, abs=1e-4)
    with pytest.raises(ValueError, match="exceeds the context"):
        lm.loglikelihood_tokens([([1], list(range(60)))])
    with pytest.raises(ValueError, match="at least one token"):
        lm.loglikelihood_tokens([([], [1])])


def test_text_requests_split_context_and_continuation_as_lm_eval(lm):
    ctx, cont = lm._encode_pair("Tom went to the", " market.")
    assert ctx[0] == lm.tok.eos_token_id  # plain prompts start a document
    assert lm.tok.decode(ctx[1:]) == "Tom went to the" and lm.tok.decode(cont) == " market."
    ctx2, cont2 = lm._encode_pair("Tom went to the ", "market.")  # the trailing space moves over
    assert (ctx2, cont2) == (ctx, cont)
    chat, cont3 = lm._encode_pair((("user", "hi"),), "a cat.")
    assert chat == lm.tok.encode_chat([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert lm.tok.decode(cont3) == "a cat."
    with pytest.raises(TypeError, match="a prompt is a str or a tuple"):
        lm.encode_prompt(["hi"])


def test_rolling_windows_score_every_token_once():
    rng = random.Random(0)
    for _ in range(200):
        n, L = rng.randint(1, 40), rng.randint(1, 12)
        stride = rng.randint(1, L)
        ids = list(range(100, 100 + n + 1))
        wins = rolling_windows(ids, L, stride)
        assert [t for _, cont in wins for t in cont] == ids[1:]  # each target once, in order
        for ctx, cont in wins:
            assert ctx and len(ctx) + len(cont) <= L + 1  # inputs fit the model
            whole = ctx + cont
            start = ids.index(whole[0])
            assert ids[start : start + len(whole)] == whole  # a contiguous slice of the document
            if stride < L and start > 0:
                assert len(ctx) >= L - stride + 1  # a sliding window keeps earlier tokens as context
    with pytest.raises(ValueError, match="stride"):
        rolling_windows([1, 2, 3], 4, 5)


def test_rolling_loglikelihood(lm):
    doc = "Tom went to the market. Amy saw a cat."
    ids = [lm.tok.eos_token_id] + lm.tok.encode_ordinary(doc)
    assert len(ids) <= 49
    (full,) = lm.loglikelihood_rolling([doc])
    assert full == pytest.approx(lm.loglikelihood_tokens([(ids[:1], ids[1:])])[0], rel=1e-5)
    long_doc = " ".join(generate_stories(3, seed=0))  # longer than the 48-token context
    disjoint = lm.loglikelihood_rolling([long_doc])[0]
    sliding = ModelLM(lm.model, lm.tok, stride=16).loglikelihood_rolling([long_doc])[0]
    assert math.isfinite(disjoint) and math.isfinite(sliding) and disjoint != sliding


def test_generate_batched_equals_single_and_cuts_at_stop_strings(lm):
    cfg = GenerationConfig(max_new_tokens=6, until=())
    prompts = ["Tom went to", "One day, Amy", "In the morning, Jack walked to the"]
    outs = lm.generate([(p, cfg) for p in prompts])
    for p, (text,) in zip(prompts, outs):
        ids = lm.encode_prompt(p)
        new = generate(lm.model, ids, 6, temperature=0, eos_token_id=lm.tok.eos_token_id)
        assert text == lm.tok.decode(new, skip_special_tokens=True)
    first = outs[0][0]
    if len(first) > 2:
        cut = lm.generate([(prompts[0], GenerationConfig(max_new_tokens=6, until=(first[2],)))])[0][0]
        assert cut == first[: first.index(first[2])]
    sampled = lm.generate([(prompts[0], GenerationConfig(max_new_tokens=4, temperature=1.0, n=3))])[0]
    assert len(sampled) == 3


# ----------------------------------------------------------------------------- few-shot prompts
def _gen_items(n):
    return [GenItem(f"What is {i} + 1?", [str(i + 1)], {"i": i}) for i in range(n)]


def test_fewshot_demos_are_seeded_and_never_the_item_itself():
    pool = _gen_items(10)
    a = sample_demos(pool, 3, seed=1, index=4, exclude=pool[4])
    assert a == sample_demos(pool, 3, seed=1, index=4, exclude=pool[4])
    assert pool[4] not in a and len(set(map(id, a))) == 3
    assert any(sample_demos(pool, 3, seed=s, index=4, exclude=pool[4]) != a for s in range(2, 6))
    with pytest.raises(ValueError, match="only 9 demonstration items"):
        sample_demos(pool, 10, seed=1, index=0, exclude=pool[0])
    with pytest.raises(ValueError, match="num_fewshot must be >= 0"):
        sample_demos(pool, -1, seed=1, index=0)


def test_plain_and_chat_templates():
    items = _gen_items(3)
    task = GenerationTask("t", items, plain_template=lambda it: f"Question: {it.question}\nAnswer:")
    plain = build_context(task, items[2], items[:2], "plain")
    assert plain == ("Question: What is 0 + 1?\nAnswer: 1\n\nQuestion: What is 1 + 1?\nAnswer: 2\n\n"
                     "Question: What is 2 + 1?\nAnswer:")
    chat = build_context(task, items[2], items[:2], "chat")
    assert chat == (("user", "What is 0 + 1?"), ("assistant", "1"), ("user", "What is 1 + 1?"), ("assistant", "2"),
                    ("user", "What is 2 + 1?"))
    with pytest.raises(ValueError, match="template must be"):
        build_context(task, items[0], [], "jinja")
    # --limit cuts items, not the demonstrations an item gets
    full = dict((it.question, ctx) for it, ctx in GenerationTask("u", _gen_items(8)).contexts(2, None, "plain", 3))
    cut = GenerationTask("u", _gen_items(8)).contexts(2, 3, "plain", 3)
    assert len(cut) == 3 and all(full[it.question] == ctx for it, ctx in cut)


# ----------------------------------------------------------------------------- task types
def test_multiple_choice_acc_and_acc_norm_worked_example():
    item = MCItem("Q", ["a cat.", "an elephant."], gold=1)
    # raw sums favour the short choice; per byte (6 vs 12 bytes) the long one: -6/6 = -1 < -9/12 = -0.75
    r = MultipleChoiceTask.process(item, [-6.0, -9.0])
    assert (r["acc"], r["acc_norm"]) == (0.0, 1.0)
    # Chinese choices are normalised by UTF-8 bytes: "一只猫" 9 bytes, "猫" 3 bytes
    r = MultipleChoiceTask.process(MCItem("Q", ["猫", "一只猫"], 1), [-3.0, -6.0])
    assert (r["acc"], r["acc_norm"]) == (0.0, 1.0)
    r = MultipleChoiceTask.process(MCItem("Q", ["x", "y"], 0), [-1.0, -1.0])  # ties: the first, as np.argmax
    assert r["acc"] == 1.0
    with pytest.raises(ValueError, match="2 choices but 3"):
        MultipleChoiceTask.process(MCItem("Q", ["x", "y"], 0), [1, 2, 3])


def test_item_validation():
    with pytest.raises(ValueError, match=r"gold must be an index in \[0, 2\)"):
        MCItem("Q", ["a", "b"], 2)
    with pytest.raises(ValueError, match="choices must be >= 2"):
        MCItem("Q", ["a"], 0)
    with pytest.raises(ValueError, match="answers must be one or more"):
        GenItem("Q", [])
    with pytest.raises(ValueError, match="need temperature > 0"):
        GenerationConfig(n=3)
    with pytest.raises(ValueError, match="pass@5 needs check= and config.n >= 5"):
        GenerationTask("t", _gen_items(2), metrics=("pass@5",), config=GenerationConfig(n=2, temperature=1.0), check=lambda p, i: 1)
    with pytest.raises(ValueError, match="documents must be non-empty strings; item 1"):
        PerplexityTask("p", ["a", ""])
    with pytest.raises(ValueError, match="has no items"):
        MultipleChoiceTask("m", [])


def test_perplexity_aggregate_worked_example():
    docs = ["a b c", "d e"]  # 5 words, 8 bytes
    per = [PerplexityTask.process(d, ll) for d, ll in zip(docs, [-3.0, -2.0])]
    res = PerplexityTask.aggregate(per)
    assert res["word_perplexity"] == pytest.approx(math.exp(5 / 5))
    assert res["byte_perplexity"] == pytest.approx(math.exp(5 / 8))
    assert res["bits_per_byte"] == pytest.approx(5 / 8 / math.log(2))


# ----------------------------------------------------------------------------- calibration with stub scorers
class OracleLM:
    """Knows every gold answer: the highest log-likelihood for it, and it as the generated text."""

    def __init__(self, gold_by_prompt):
        self.gold = gold_by_prompt

    def loglikelihood(self, requests, bar=None):
        return [0.0 if self.gold[ctx] == cont.strip() else -5.0 for ctx, cont in requests]

    def generate(self, requests, bar=None):
        return [[self.gold[ctx]] * cfg.n for ctx, cfg in requests]

    def loglikelihood_rolling(self, docs, bar=None):
        return [0.0 for _ in docs]


class RandomLM:
    """Scores every choice at random: multiple choice at chance level."""

    def __init__(self, seed=0):
        self.rng = random.Random(seed)

    def loglikelihood(self, requests, bar=None):
        return [-self.rng.random() * 10 for _ in requests]


def _mc_task(n_items, n_choices, seed=0):
    rng = random.Random(seed)
    items = [MCItem(f"question {i}?", [f"choice {i}.{j}" for j in range(n_choices)], rng.randrange(n_choices)) for i in range(n_items)]
    return MultipleChoiceTask("mc", items)


def test_oracle_scores_100_percent_on_every_task_type():
    mc = _mc_task(40, 4)
    items = [GenItem(f"Tom has {i} apples and buys 2. How many?", [f"{i + 2}"]) for i in range(30)]
    gen = GenerationTask("gen", items, metrics=("exact_match", "f1", "rouge_l", "number_match", "pass@1", "pass@3"),
                         config=GenerationConfig(n=3, temperature=0.7),
                         check=lambda pred, item: pred == item.target)
    for template in ("plain", "chat"):
        gold = {}
        for task in (mc, gen):
            for item, ctx in task.contexts(num_fewshot=2, template=template):
                gold[ctx] = item.target
        res = evaluate(OracleLM(gold), [mc, gen], num_fewshot=2, template=template, progress=False)["results"]
        assert res["mc"]["acc"] == 1.0 and res["mc"]["acc_norm"] == 1.0
        for m in ("exact_match", "f1", "rouge_l", "number_match", "pass@1", "pass@3"):
            assert res["gen"][m] == 1.0, (template, m)


def test_random_scorer_scores_chance_on_multiple_choice():
    for n_choices in (2, 4):
        task = _mc_task(3000, n_choices, seed=n_choices)
        res = run_task(RandomLM(seed=n_choices), task)
        chance = 1 / n_choices
        sigma = math.sqrt(chance * (1 - chance) / 3000)
        assert abs(res["acc"] - chance) < 4 * sigma, (n_choices, res["acc"])
        assert abs(res["acc_norm"] - chance) < 4 * sigma


def test_corpus_metric_by_name_and_missing_metric():
    items = _gen_items(4)
    task = GenerationTask("g", items, metrics=("my_count",))
    with pytest.raises(KeyError, match="my_count"):
        run_task(OracleLM({}), task)
    gold = {ctx: it.target for it, ctx in task.contexts()}
    partial = run_task(OracleLM(gold), GenerationTask("g2", items, metrics=("my_count", "exact_match")))
    assert partial["exact_match"] == 1.0 and partial["missing_metrics"] == ["my_count"] and "my_count" not in partial
    register_metric("my_count", lambda preds, refs: float(len(preds) + len(refs)), corpus=True)
    assert run_task(OracleLM(gold), task)["my_count"] == 8.0
    with pytest.raises(TypeError, match="needs a callable"):
        register_metric("x", 3)


def test_results_files_and_tables(tmp_path, lm):
    mc = MultipleChoiceTask("world_tiny_mc", [MCItem("Tom went to the", ["market.", "park."], 0),
                                               MCItem("Amy saw a", ["cat.", "dog."], 1)])
    gen = GenerationTask("world_tiny_gen", [GenItem("Tom went to the", ["market."])],
                         config=GenerationConfig(max_new_tokens=3))
    ppl = PerplexityTask("world_tiny_ppl", ["Tom went to the market."])
    res = evaluate(lm, [mc, gen, ppl], progress=False, model_name="tiny")
    assert set(res["results"]) == {"world_tiny_mc", "world_tiny_gen", "world_tiny_ppl"}
    assert res["results"]["world_tiny_ppl"]["word_perplexity"] > 1
    path = save_results(res, tmp_path)
    assert load_results(tmp_path) == json.loads(open(path, encoding="utf-8").read())
    table = format_results(res)
    assert "| world_tiny_mc | 1 | acc |" in table and "word_perplexity" in table
    other = json.loads(json.dumps(res))
    other["results"]["world_tiny_mc"]["acc_norm"] = 1.0
    board = compare_table([("base", res), ("sft", other)])
    lines = board.splitlines()
    assert lines[0].startswith("| model | world_tiny_mc (acc_norm) | world_tiny_gen (exact_match) | world_tiny_ppl (word_perplexity)")
    assert lines[3].startswith("| sft | 1.0000 |")
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ValueError, match="not an evaluation results file"):
        load_results(tmp_path / "bad.json")
