"""The built-in suite: versioned items, held out from every training generator, scored 100 % by
an oracle and at chance by a random scorer; user JSONL files with clear errors; the CLI."""
import json
import math
import random

import pytest

import minillm as mi
from minillm.cli import main
from minillm.data import generate_sft, generate_stories
from minillm.eval import suite
from minillm.eval.harness import evaluate, load_results, run_task
from minillm.eval.tasks import GenerationTask, MultipleChoiceTask, PerplexityTask

# Bump SUITE_VERSION when these change: a different hash is a different test set, and scores
# measured on the old one cannot be compared with scores on the new one.
FINGERPRINT_V1 = {
    "world_mc": "6f547307d76c6c1b", "world_qa": "aa347bef12b2c762", "world_rc": "b5bbc1a7b5e1dcea",
    "world_math": "10f3966cf7aa301f", "world_math_pass": "381ec6e1971efa82", "world_translate": "dfc4c07c2409bcc9",
    "world_cloze": "4b1308d7deb06e69", "world_ceval": "b4106f017fe70d71", "world_ppl": "999e913808ede88f",
}


def test_suite_is_fixed_and_versioned():
    assert suite.SUITE_VERSION == "1"
    assert suite.suite_fingerprint(0) == FINGERPRINT_V1
    other = suite.suite_fingerprint(1)  # another world seed is another world: other items
    assert all(other[k] != FINGERPRINT_V1[k] for k in FINGERPRINT_V1)
    assert suite.get_task("world_mc").version == "1.0"


def _training_texts(seed=0, n_docs=20_000, n_sft=8_000):
    """What the training generators write (every skill, every document kind), as one string."""
    docs = generate_stories(n_docs, seed=seed, split="train")
    sft = generate_sft(n_sft, seed=seed, split="train", skills=("qa", "translate", "math", "facts"))
    return docs + [m["content"] for r in sft for m in r["messages"]]


def _story_of(task_name, item):
    if task_name == "world_rc":
        return item.question.rsplit("\n", 1)[0]
    if task_name == "world_translate":
        return item.meta["source"]
    if task_name == "world_ceval" and item.meta["subject"] == "阅读理解":
        return item.question.split("\n\n", 1)[1].split("\n问题：")[0]
    if task_name == "world_cloze":  # the beginning and the true ending: a whole val story
        return item.question + ("" if item.meta["lang"] == "zh" else " ") + item.target
    return None


def test_training_generators_never_emit_a_held_out_item():
    """Held-out items come from the world's val split (stories) or phrasings the generators do
    not have (facts questions, word problems): none may appear in what training sees."""
    texts = _training_texts()
    corpus = "\n".join(texts)
    train_stories = set()  # every story the generators wrote, one per line / before the question
    for t in texts:
        for line in t.split("\n"):
            train_stories.add(line)
            for q in ("\nQuestion:", "\n问题："):
                train_stories.add(t.split(q)[0])
    by_start = {}
    for s in train_stories:
        by_start.setdefault(s[:12], []).append(s)
    checked = 0
    for name in ("world_rc", "world_translate", "world_ceval", "world_cloze"):
        task = suite.get_task(name)
        for item in task.items + task.fewshot_pool:
            story = _story_of(name, item)
            if story is None:
                continue
            checked += 1
            assert story not in train_stories, (name, story)
            if name == "world_cloze":  # ... that no training story starts with
                assert not any(s.startswith(story) for s in by_start.get(story[:12], ())), story
    assert checked > 600
    for name in ("world_mc", "world_qa", "world_math", "world_math_pass"):
        task = suite.get_task(name)
        for item in task.items + task.fewshot_pool:
            q = item.meta.get("problem", item.question)
            assert q not in corpus, (name, q)
    # and the phrasings themselves are new: not one of them occurs in training text
    for marker in ("Which city is", "keep as a pet", "like best", "How many", "的家在哪个城市", "现在有几"):
        assert marker not in corpus, marker


def test_items_are_well_formed():
    for name in suite.TASK_NAMES:
        task = suite.get_task(name)
        assert len(task.items) >= 100, name
        if isinstance(task, MultipleChoiceTask):
            for it in task.items:
                assert len(set(it.choices)) == len(it.choices) == 4, (name, it)
            golds = [it.gold for it in task.items]
            assert len(set(golds)) == 4  # the right answer is not always in the same place
        elif isinstance(task, GenerationTask):
            assert all(it.answers[0].strip() for it in task.items)
    for it in suite.get_task("world_math").items:
        assert suite.run_calculation(it.meta["calculation"]) == int(it.target)
    for it in suite.get_task("world_math_pass").items:
        assert suite.run_calculation(it.target) == it.meta["answer"]
    langs = {it.meta["lang"] for it in suite.get_task("world_rc").items}
    assert langs == {"en", "zh"}
    assert {it.meta["direction"] for it in suite.get_task("world_translate").items} == {"en2zh", "zh2en"}
    assert {it.meta["subject"] for it in suite.get_task("world_ceval").items} == {"阅读理解", "常识"}
    assert all(it.meta["lang"] == "zh" for it in suite.get_task("world_ceval").items)


def test_run_calculation_is_safe():
    assert suite.run_calculation("7 + 5 - 3") == 9
    assert suite.run_calculation("-2 * (3 + 1) = -8") == -8
    for bad in ("", "7 +", "2 ** 100", "7 / 2", "x + 1", "__import__('os').system('ls')", "1" * 300, "(" * 100 + "1" + ")" * 100):
        assert suite.run_calculation(bad) is None, bad


class Oracle:
    def __init__(self, tasks, num_fewshot, template):
        self.gold = {}
        for task in tasks:
            if not isinstance(task, PerplexityTask):
                for item, ctx in task.contexts(num_fewshot=num_fewshot, template=template):
                    self.gold[ctx] = item.target

    def loglikelihood(self, requests, bar=None):
        return [0.0 if self.gold[c] == x.strip() else -1.0 for c, x in requests]

    def generate(self, requests, bar=None):
        return [[self.gold[c]] * cfg.n for c, cfg in requests]

    def loglikelihood_rolling(self, docs, bar=None):
        return [-len(d.encode("utf-8")) * math.log(2) for d in docs]  # exactly 1 bit per byte


class Uniform:
    def __init__(self):
        self.rng = random.Random(0)

    def loglikelihood(self, requests, bar=None):
        return [self.rng.gauss(0, 1) for _ in requests]


def test_oracle_scores_100_percent_on_the_whole_suite():
    tasks = suite.get_tasks("all")
    for template in ("plain", "chat"):
        res = evaluate(Oracle(tasks, 1, template), tasks, num_fewshot=1, template=template, progress=False)["results"]
        for name in ("world_mc", "world_cloze", "world_ceval"):
            assert res[name]["acc"] == 1.0 and res[name]["acc_norm"] == 1.0, (template, name)
        assert res["world_qa"]["exact_match"] == res["world_rc"]["exact_match"] == 1.0
        assert res["world_rc"]["f1"] == 1.0 and res["world_translate"]["f1"] == 1.0
        assert res["world_math"]["number_match"] == 1.0
        assert res["world_math_pass"]["pass@1"] == res["world_math_pass"]["pass@5"] == 1.0  # the gold calculation runs
        assert res["world_ppl"]["bits_per_byte"] == pytest.approx(1.0)


def test_uniform_scorer_scores_chance_on_the_multiple_choice_tasks():
    n_total, hits = 0, 0
    for name in ("world_mc", "world_cloze", "world_ceval"):
        res = run_task(Uniform(), suite.get_task(name))
        n_total += res["n"]
        hits += res["acc"] * res["n"]
    sigma = math.sqrt(0.25 * 0.75 / n_total)
    assert abs(hits / n_total - 0.25) < 4 * sigma


def test_bleu_plugs_into_the_translation_task():
    task = suite.get_task("world_translate")
    oracle = Oracle([task], 0, "plain")
    perfect = run_task(oracle, task)["bleu"]
    assert perfect == pytest.approx(100.0)
    oracle.gold = {k: v[: len(v) // 2] for k, v in oracle.gold.items()}  # half of every answer: lower BLEU
    assert run_task(oracle, task)["bleu"] < perfect


# ----------------------------------------------------------------------------- user JSONL files
def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_user_jsonl_tasks(tmp_path):
    mc = _write(tmp_path / "mc.jsonl", [
        json.dumps({"question": "2 + 2?", "choices": ["3", "4"], "answer": 1}),
        "",
        json.dumps({"question": "Capital of France?", "choices": ["Paris", "Rome", "Oslo"], "answer": "A"}),
        json.dumps({"question": "猫的英文？", "choices": ["dog", "cat"], "answer": "cat"}),
    ])
    task = suite.get_task(f"mc:{mc}")
    assert task.name == "mc:mc.jsonl" and [it.gold for it in task.items] == [1, 0, 1]
    gen = _write(tmp_path / "gen.jsonl", [json.dumps({"prompt": "Q: 2 + 2?\nA:", "answer": "4"}),
                                          json.dumps({"prompt": "Say hi", "answer": ["hi", "hello"]})])
    task = suite.get_task(f"gen:{gen}")
    assert task.items[1].answers == ["hi", "hello"] and task.metrics == ("exact_match", "f1", "rouge_l")
    res = run_task(Oracle([task], 0, "plain"), task)
    assert res["exact_match"] == res["f1"] == res["rouge_l"] == 1.0


@pytest.mark.parametrize("line, match", [
    ("{not json", r"bad\.jsonl:2: not valid JSON"),
    ("[1, 2]", r"bad\.jsonl:2: expected a JSON object"),
    (json.dumps({"question": "q", "choices": ["a", "b"]}), r"bad\.jsonl:2: missing field\(s\) \['answer'\]"),
    (json.dumps({"question": "q", "choices": ["a"], "answer": 0}), r"bad\.jsonl:2: \"choices\" must be a list of >= 2"),
    (json.dumps({"question": "", "choices": ["a", "b"], "answer": 0}), r"bad\.jsonl:2: \"question\" must be"),
    (json.dumps({"question": "q", "choices": ["a", "b"], "answer": 2}), r"bad\.jsonl:2: \"answer\" 2 is not an index in \[0, 2\), a letter A-B"),
    (json.dumps({"question": "q", "choices": ["a", "b"], "answer": "C"}), r"bad\.jsonl:2: \"answer\" 'C'"),
    (json.dumps({"question": "q", "choices": ["a", "b"], "answer": True}), r"bad\.jsonl:2: \"answer\" True"),
])
def test_bad_mc_lines_name_file_and_line(tmp_path, line, match):
    path = _write(tmp_path / "bad.jsonl", [json.dumps({"question": "ok", "choices": ["a", "b"], "answer": 0}), line])
    with pytest.raises(ValueError, match=match):
        suite.load_mc_jsonl(path)


def test_bad_gen_lines_and_files(tmp_path):
    path = _write(tmp_path / "g.jsonl", [json.dumps({"prompt": "p", "answer": 3})])
    with pytest.raises(ValueError, match=r"g\.jsonl:1: \"answer\" must be a string or a non-empty list"):
        suite.load_gen_jsonl(path)
    path = _write(tmp_path / "g2.jsonl", [json.dumps({"answer": "x"})])
    with pytest.raises(ValueError, match=r"g2\.jsonl:1: missing field\(s\) \['prompt'\]"):
        suite.load_gen_jsonl(path)
    empty = _write(tmp_path / "empty.jsonl", [""])
    with pytest.raises(ValueError, match="no items"):
        suite.load_gen_jsonl(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        suite.get_task("mc:" + str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="unknown task 'world_nope'"):
        suite.get_tasks("world_mc,world_nope")


# ----------------------------------------------------------------------------- the command line
def test_cli_eval_and_compare(tmp_path, capsys):
    from minillm.io import save_model
    from minillm.models.llama import ModelConfig, Transformer
    from minillm.tokenizers import BPETokenizer

    tok = BPETokenizer.train(generate_stories(100, seed=0), vocab_size=320, show_progress=False)
    dirs = []
    for i in range(2):
        mi.manual_seed(i)
        model = Transformer(ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size, max_seq_len=256))
        d = tmp_path / f"m{i}"
        save_model(model, d)
        tok.save(d)
        dirs.append(str(d))
    mc = _write(tmp_path / "mine.jsonl", [json.dumps({"question": f"{i} + 2?", "choices": [str(i + 1), str(i + 2)], "answer": 1})
                                          for i in range(3)])
    main(["eval", "--model", dirs[0], "--tasks", f"world_mc,world_math,world_ppl,mc:{mc}", "--limit", "3",
          "--num-fewshot", "1", "--no-progress", "--compare", dirs[1]])
    out = capsys.readouterr().out
    assert "| world_mc | 1.0 | acc |" in out and "| mc:mine.jsonl |" in out
    assert "| model | world_mc (acc_norm) | world_math (number_match) | world_ppl (word_perplexity) | mc:mine.jsonl (acc_norm) | average |" in out
    for d in dirs:
        res = load_results(d)
        assert res["config"] == {"num_fewshot": 1, "limit": 3, "template": "plain", "seed": 1234}
        assert res["results"]["world_mc"]["n"] == 3 and res["results"]["world_ppl"]["word_perplexity"] > 1
    capsys.readouterr()
    assert main(["eval", "--model", dirs[0], "--tasks", "world_nope"]) == 2  # a message, not a traceback
    assert "error:" in capsys.readouterr().err


def test_sft_tasks_score_sft_records_per_skill():
    recs = generate_sft(30, seed=0, split="val")
    tasks = suite.sft_tasks(recs)
    names = [t.name for t in tasks]
    assert names[0] == "sft/all" and set(names[1:]) == {"sft/qa", "sft/translate", "sft/math"}
    assert sum(len(t.items) for t in tasks[1:]) == len(tasks[0].items) == 30
    res = evaluate(Oracle(tasks, 0, "chat"), tasks, template="chat", progress=False)["results"]
    assert all(r["exact_match"] == 1.0 for r in res.values())
    with pytest.raises(ValueError, match="SFT record 0: expected messages ending"):
        suite.sft_tasks([{"messages": [{"role": "user", "content": "hi"}]}])
