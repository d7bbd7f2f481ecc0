"""The built-in benchmark suite (Happy LLM 7.1): the leaderboards' kinds of task, generated from
the story world (``minillm.data.world``) with a fixed seed, and user files in the common shapes.

==================  ============================  ==========================================
task                like                          what it asks, how it is scored
==================  ============================  ==========================================
``world_mc``        MMLU (knowledge, 4 choices)   closed-book facts of the world ("Which city
                                                  is Tom's home?"), log-likelihood of each
                                                  choice: acc, acc_norm
``world_qa``        closed-book QA (TriviaQA)     the same facts, generated: exact match, F1
``world_rc``        SQuAD, CMRC                   a held-out story and a question about it:
                                                  exact match, token F1
``world_math``      GSM8K                         two-step word problems: exact match on the
                                                  final number of the answer
``world_math_pass`` HumanEval (pass@k)            write the calculation for a word problem;
                                                  it is run, 5 samples: pass@1, pass@5
``world_translate`` WMT (BLEU)                    a held-out story, English <-> Chinese:
                                                  corpus BLEU, token F1
``world_cloze``     HellaSwag                     the sentence that continues a story, of 4:
                                                  acc, acc_norm
``world_ceval``     C-Eval                        Chinese 4-choice questions answered with
                                                  the letter A-D: acc
``world_ppl``       WikiText (perplexity)         held-out documents: word and byte
                                                  perplexity, bits per byte
==================  ============================  ==========================================

Held out. Every story the suite uses comes from the world's ``val`` split, which the training
generators (``generate_stories``, ``generate_sft`` with ``split="train"``) reject by
construction (a checksum of the story's events decides the split); facts questions, word
problems and calculation prompts use phrasings those generators never write. So no item's
prompt can appear in training data (``tests/test_eval_suite.py`` checks it on large samples).
The facts themselves are in the pretraining stories, as they must be for a closed-book test.

Versioned. ``SUITE_VERSION`` names the items; ``suite_fingerprint()`` hashes them, and a test
pins the hash, so a change to the world that changes the items cannot pass unnoticed.

User data, by task name: ``mc:FILE.jsonl`` (``{"question", "choices", "answer"}``; answer an
index, a letter or the choice's text) and ``gen:FILE.jsonl`` (``{"prompt", "answer"}``; answer
a string or a list of accepted strings).
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import re
from functools import lru_cache

from ..data.world import ANIMALS, CITIES, COLOURS, NAMES, OBJECTS, WorldConfig, generate_sft, generate_stories, get_world
from .tasks import GenerationConfig, GenerationTask, GenItem, MCItem, MultipleChoiceTask, PerplexityTask

__all__ = [
    "SUITE_VERSION", "TASK_NAMES", "get_task", "get_tasks", "suite_fingerprint", "load_mc_jsonl", "load_gen_jsonl",
    "run_calculation", "segment_cjk", "sft_tasks",
]

SUITE_VERSION = "1"
TASK_NAMES = ("world_mc", "world_qa", "world_rc", "world_math", "world_math_pass", "world_translate", "world_cloze",
              "world_ceval", "world_ppl")

_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")


def _lang(text: str) -> str:
    return "zh" if _CJK.search(text) else "en"


def _rng(seed: int, what: str) -> random.Random:
    return random.Random(f"minillm-eval/{SUITE_VERSION}/{seed}/{what}")


# ----------------------------------------------------------------------------- prompt shapes
# Plain prompts follow the pretraining documents' "Question: ...\nAnswer: ..." lines (the
# world's "qa" documents), in the item's language; a Chinese answer follows "答案：" directly.
def _qa_template(item) -> str:
    return f"问题：{item.question}\n答案：" if item.meta.get("lang") == "zh" else f"Question: {item.question}\nAnswer:"


def _story_qa_template(item) -> str:  # reading comprehension: the question already says "Question:"
    return f"{item.question}\n答案：" if item.meta.get("lang") == "zh" else f"{item.question}\nAnswer:"


def _delim(item) -> str:
    return "" if item.meta.get("lang") == "zh" else " "


# ----------------------------------------------------------------------------- closed-book facts
_FACT_QUESTIONS = {  # phrasings the training generators never use ("Where does Tom live?" is theirs)
    "home": ("Which city is {n}'s home?", "{n}的家在哪个城市？"),
    "pet": ("Which animal does {n} keep as a pet?", "{n}的宠物是什么动物？"),
    "fav": ("Which colour does {n} like best?", "{n}最爱哪种颜色？"),
}


def _fact_answer(kind: str, idx: int, lang: str) -> str:
    zh = lang == "zh"
    if kind == "home":
        return CITIES[idx][zh] + ("。" if zh else ".")
    if kind == "pet":
        a = ANIMALS[idx]
        return f"一{a[2]}{a[1]}。" if zh else f"{'an' if a[0][0] in 'aeiou' else 'a'} {a[0]}."
    return COLOURS[idx][zh] + ("。" if zh else ".")


@lru_cache(maxsize=8)
def _fact_items(seed: int) -> tuple:
    """(test, dev) MCItems about every character's home, pet and colour, in both languages.
    Characters 0-5 are the dev (few-shot) set, the other 18 the test set."""
    world = get_world(seed)
    tables = {"home": (world.home, len(CITIES)), "pet": (world.pet, len(ANIMALS)), "fav": (world.colour, len(COLOURS))}
    rng = _rng(seed, "facts")
    test, dev = [], []
    for c, name in enumerate(NAMES):
        for kind, (table, size) in tables.items():
            for lang in ("en", "zh"):
                gold = table[c]
                others = rng.sample([i for i in range(size) if i != gold], 3)
                options = [gold] + others
                rng.shuffle(options)
                q = _FACT_QUESTIONS[kind][lang == "zh"].format(n=name[lang == "zh"])
                item = MCItem(q, [_fact_answer(kind, i, lang) for i in options], options.index(gold),
                              {"lang": lang, "kind": kind, "character": name[0]})
                (dev if c < 6 else test).append(item)
    return tuple(test), tuple(dev)


def _world_mc(seed):
    test, dev = _fact_items(seed)
    return MultipleChoiceTask("world_mc", test, fewshot_pool=dev, plain_template=_qa_template, target_delimiter=_delim)


def _world_qa(seed):
    test, dev = _fact_items(seed)
    as_gen = lambda items: [GenItem(it.question, [it.target], it.meta) for it in items]  # noqa: E731
    return GenerationTask("world_qa", as_gen(test), fewshot_pool=as_gen(dev), metrics=("exact_match", "f1"),
                          config=GenerationConfig(max_new_tokens=12, until=("\n",)),
                          plain_template=_qa_template, target_delimiter=_delim)


# ----------------------------------------------------------------------------- reading comprehension
@lru_cache(maxsize=8)
def _rc_records(seed: int) -> tuple:
    """Reading-comprehension conversations about val-split stories: 300 test + 60 dev."""
    recs = generate_sft(360, seed=seed, split="val", skills=("qa",))
    items = [GenItem(r["messages"][0]["content"], [r["messages"][1]["content"]], dict(r["meta"])) for r in recs]
    return tuple(items[:300]), tuple(items[300:])


def _world_rc(seed):
    test, dev = _rc_records(seed)
    return GenerationTask("world_rc", test[:200], fewshot_pool=dev, metrics=("exact_match", "f1"),
                          config=GenerationConfig(max_new_tokens=12, until=("\n",)),
                          plain_template=_story_qa_template, target_delimiter=_delim)


# ----------------------------------------------------------------------------- arithmetic word problems
_COUNTABLE = [o for o in OBJECTS if " " not in o[0] and not o[0].endswith(("x", "ch", "sh"))]  # plural = +s


def _word_problem(rng: random.Random, lang: str) -> tuple:
    """A two-step word problem: (question, calculation, answer)."""
    a, b = rng.sample(range(len(NAMES)), 2)
    obj = rng.choice(_COUNTABLE)
    x = rng.randint(2, 15)
    first = rng.choice("+-")
    y = rng.randint(1, 9) if first == "+" else rng.randint(1, x)
    mid = x + y if first == "+" else x - y
    second = "-" if mid > 0 and rng.random() < 0.6 else "+"
    z = rng.randint(1, mid) if second == "-" else rng.randint(1, 9)
    answer = mid - z if second == "-" else mid + z
    calc = f"{x} {first} {y} {second} {z}"
    if lang == "zh":
        A, B, mw, o = NAMES[a][1], NAMES[b][1], obj[2], obj[1]
        s1 = f"{A}又买了{y}{mw}" if first == "+" else f"{A}丢了{y}{mw}"
        s2 = f"然后{B}送给{A}{z}{mw}" if second == "+" else f"然后{A}送给{B}{z}{mw}"
        q = f"{A}有{x}{mw}{o}。{s1}，{s2}。{A}现在有几{mw}{o}？"
    else:
        A, B, o = NAMES[a][0], NAMES[b][0], obj[0] + "s"
        s1 = f"{A} buys {y} more" if first == "+" else f"{A} loses {y} of them"
        s2 = f"then {B} gives {A} {z} more" if second == "+" else f"then {A} gives {z} to {B}"
        q = f"{A} has {x} {o}. {s1}, {s2}. How many {o} does {A} have now?"
    return q, calc, str(answer)


@lru_cache(maxsize=8)
def _math_items(seed: int) -> tuple:
    rng = _rng(seed, "math")
    out = []
    for i in range(420):
        lang = "zh" if i % 2 else "en"
        q, calc, ans = _word_problem(rng, lang)
        out.append((q, calc, ans, lang))
    return tuple(out)


def _world_math(seed):
    rows = _math_items(seed)
    items = [GenItem(q, [ans], {"lang": lang, "calculation": calc}) for q, calc, ans, lang in rows]
    return GenerationTask("world_math", items[:200], fewshot_pool=items[360:], metrics=("number_match",),
                          config=GenerationConfig(max_new_tokens=16, until=("\n",)),
                          plain_template=_qa_template, target_delimiter=_delim)


def run_calculation(text: str):
    """Run a calculation the model wrote ("7 + 5 - 3", optionally "= 9" after it) and return its
    integer value, or None if it is not a calculation of integers with + - * and parentheses.
    Parsed with ``ast``, never ``eval``: model output is untrusted code.

    >>> run_calculation("7 + 5 - 3 = 9"), run_calculation("2 * (3 + 4)"), run_calculation("__import__('os')")
    (9, 14, None)
    """
    expr = text.strip().split("=")[0].strip()
    if not expr or len(expr) > 200:
        return None
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            return left - right if isinstance(node.op, ast.Sub) else left * right
        raise ValueError("not a calculation")

    try:
        return ev(tree)
    except (ValueError, RecursionError):
        return None


def _calc_template(item) -> str:
    if item.meta.get("lang") == "zh":
        return f"问题：{item.meta['problem']}\n算式："
    return f"Problem: {item.meta['problem']}\nCalculation:"


def _world_math_pass(seed):
    rows = _math_items(seed)
    def make(q, calc, ans, lang):
        ask = f"写出解这道题的算式：{q}" if lang == "zh" else f"Write the calculation that solves: {q}"
        return GenItem(ask, [calc], {"lang": lang, "answer": int(ans), "problem": q})
    items = [make(*r) for r in rows]
    check = lambda pred, item: run_calculation(pred) == item.meta["answer"]  # noqa: E731  (it runs: HumanEval's test)
    return GenerationTask("world_math_pass", items[200:300], fewshot_pool=items[360:], metrics=("pass@1", "pass@5"),
                          config=GenerationConfig(max_new_tokens=16, until=("\n",), temperature=0.8, n=5), check=check,
                          plain_template=_calc_template,
                          target_delimiter=_delim)


# ----------------------------------------------------------------------------- translation
def segment_cjk(text: str) -> str:
    """Put spaces around every CJK character and CJK punctuation mark, so whitespace-tokenising
    metrics (BLEU) count Chinese by characters, as sacrebleu's ``zh`` tokeniser does.

    >>> segment_cjk("汤姆去了市场。Tom")
    '汤 姆 去 了 市 场 。 Tom'
    """
    return " ".join(_CJK.sub(lambda m: f" {m.group()} ", text).split())


@lru_cache(maxsize=8)
def _translation_items(seed: int) -> tuple:
    cfg = WorldConfig(seed=seed, doc_mix={"bilingual": 1.0}, min_sentences=2, max_sentences=3)
    docs = generate_stories(260, seed=seed, split="val", config=cfg)
    items = []
    for i, doc in enumerate(docs):
        first, second = doc.split("\n")
        en, zh = (first, second) if _lang(second) == "zh" else (second, first)
        if i % 2 == 0:
            items.append(GenItem(f"Translate to Chinese: {en}", [zh], {"lang": "en", "direction": "en2zh", "source": en}))
        else:
            items.append(GenItem(f"Translate to English: {zh}", [en], {"lang": "zh", "direction": "zh2en", "source": zh}))
    return tuple(items)


def _world_translate(seed):
    items = _translation_items(seed)
    # plain: the source, a newline, and the model continues with the other language, as the
    # parallel stories of pretraining are written ("English story\nChinese story")
    return GenerationTask("world_translate", items[:100], fewshot_pool=items[200:], metrics=("bleu", "f1"),
                          config=GenerationConfig(max_new_tokens=64, until=("\n",)),
                          plain_template=lambda it: it.meta["source"] + "\n", target_delimiter="",
                          corpus_preprocess=segment_cjk)


# ----------------------------------------------------------------------------- cloze (HellaSwag)
def _sentences(story: str) -> list:
    if _lang(story) == "zh":
        return [s + "。" for s in story.split("。") if s]
    return [x for x in re.split(r"(?<=[.!?]) ", story) if x]


_ENDINGS = ("went home.", "went home happily.", "had a good day.", "回家了。", "度过了愉快的一天。")


@lru_cache(maxsize=8)
def _cloze_items(seed: int) -> tuple:
    """HellaSwag-style items: the beginning of a held-out story and four endings, the true one
    (the rest of the story) and the endings of three other stories of the same language.

    Only stories that close with an ending sentence ("Then he went home.") are used: no story
    continues after one, so the beginning + the true ending, a whole val story, is never the
    start of a training story either."""
    stories = generate_stories(900, seed=seed, split="val", config=WorldConfig(seed=seed, doc_mix={"story": 1.0}))
    split = [(_lang(s), _sentences(s)) for s in stories]
    split = [(lang, sents) for lang, sents in split if len(sents) >= 3 and sents[-1].endswith(_ENDINGS)]
    rng = _rng(seed, "cloze")
    cuts = [rng.randint(max(2, len(sents) - 2), len(sents) - 1) for _, sents in split]  # 1-2 sentences to choose
    sep = {"zh": "", "en": " "}
    items = []
    for i, (lang, sents) in enumerate(split):
        k = cuts[i]
        gold = sep[lang].join(sents[k:])
        pool = [sep[l2].join(s2[c2:]) for j, ((l2, s2), c2) in enumerate(zip(split, cuts)) if l2 == lang and j != i]
        distractors = []
        while len(distractors) < 3:
            d = rng.choice(pool)
            if d != gold and d not in distractors:
                distractors.append(d)
        choices = [gold] + distractors
        rng.shuffle(choices)
        items.append(MCItem(sep[lang].join(sents[:k]), choices, choices.index(gold), {"lang": lang}))
    return tuple(items)


def _world_cloze(seed):
    items = _cloze_items(seed)
    # plain: the story so far, then the ending (lm-eval's HellaSwag: context + " " + ending)
    return MultipleChoiceTask("world_cloze", items[:200], fewshot_pool=items[200:240], plain_template=lambda it: it.question,
                              target_delimiter=_delim)


# ----------------------------------------------------------------------------- C-Eval style
_CEVAL_HEADER = "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"


@lru_cache(maxsize=8)
def _ceval_items(seed: int) -> tuple:
    """Chinese 4-choice questions in C-Eval's layout: 阅读理解 (a held-out story and a question,
    distractors are answers of the same kind from other stories) and 常识 (the world's facts)."""
    rng = _rng(seed, "ceval")
    rc = [it for it in generate_sft(900, seed=seed, split="val", skills=("qa",)) if it["meta"]["lang"] == "zh"]
    by_type: dict = {}
    for r in rc:
        by_type.setdefault(r["meta"]["qtype"], set()).add(r["messages"][1]["content"])
    out = []
    for r in rc:
        gold = r["messages"][1]["content"]
        others = sorted(by_type[r["meta"]["qtype"]] - {gold})
        if len(others) < 3:
            continue
        choices = [gold] + rng.sample(others, 3)
        rng.shuffle(choices)
        out.append(("阅读理解", r["messages"][0]["content"], choices, choices.index(gold)))
    facts_test, facts_dev = _fact_items(seed)
    facts = [("常识", it.question, it.choices, it.gold) for it in facts_test + facts_dev if it.meta["lang"] == "zh"]
    rows = out[:150] + facts[:50] + out[150:190] + facts[50:]  # 200 test (150 + 50), the rest dev
    items = []
    for subject, q, choices, gold in rows:
        body = _CEVAL_HEADER.format(subject=subject) + q + "\n" + "".join(f"{l}. {c}\n" for l, c in zip("ABCD", choices))
        items.append(MCItem(body + "答案：", ["A", "B", "C", "D"], gold, {"lang": "zh", "subject": subject,
                                                                       "options": choices}))
    return tuple(items[:200]), tuple(items[200:])


def _world_ceval(seed):
    test, dev = _ceval_items(seed)
    # the chat question is the same text; the reply is the letter (C-Eval's answer format)
    return MultipleChoiceTask("world_ceval", test, fewshot_pool=dev, plain_template=lambda it: it.question,
                              target_delimiter=" ")


# ----------------------------------------------------------------------------- perplexity
def _world_ppl(seed):
    cfg = WorldConfig(seed=seed, doc_mix={"story": 0.6, "qa": 0.25, "bilingual": 0.15})
    return PerplexityTask("world_ppl", generate_stories(200, seed=seed, split="val", config=cfg))


_BUILDERS = {
    "world_mc": _world_mc, "world_qa": _world_qa, "world_rc": _world_rc, "world_math": _world_math,
    "world_math_pass": _world_math_pass, "world_translate": _world_translate, "world_cloze": _world_cloze,
    "world_ceval": _world_ceval, "world_ppl": _world_ppl,
}


def get_task(name: str, seed: int = 0):
    """A suite task by name (``world_*``, seed = the world's seed the model was trained on), or
    a user file: ``mc:PATH.jsonl`` / ``gen:PATH.jsonl``."""
    if name.startswith("mc:"):
        return load_mc_jsonl(name[3:])
    if name.startswith("gen:"):
        return load_gen_jsonl(name[4:])
    if name not in _BUILDERS:
        raise ValueError(f"unknown task {name!r}: choose from {', '.join(TASK_NAMES)}, or mc:FILE.jsonl / gen:FILE.jsonl")
    task = _BUILDERS[name](seed)
    task.version = f"{SUITE_VERSION}.{seed}"
    return task


def get_tasks(names, seed: int = 0) -> list:
    """Tasks for a comma-separated string or a list of names; "all" (or None) is the whole suite."""
    if names is None or names == "all":
        names = TASK_NAMES
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ValueError("no task names given")
    return [get_task(n, seed) for n in names]


def suite_fingerprint(seed: int = 0) -> dict:
    """sha256 (first 16 hex digits) of every task's items: equal fingerprints = the same test."""
    out = {}
    for name in TASK_NAMES:
        task = get_task(name, seed)
        rows = [it if isinstance(it, str) else [it.question, getattr(it, "choices", None) or it.answers,
                                                getattr(it, "gold", None)] for it in task.items]
        out[name] = hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
    return out


# ----------------------------------------------------------------------------- user JSONL files
def _read_jsonl(path: str, required: tuple, kind: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{kind} task file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            missing = [k for k in required if k not in rec]
            if missing:
                raise ValueError(f"{where}: missing field(s) {missing}; a {kind} line is "
                                 + "{" + ", ".join(f'"{k}": ...' for k in required) + "}")
            yield where, rec


def load_mc_jsonl(path: str, name: str | None = None) -> MultipleChoiceTask:
    """Multiple choice from ``{"question": str, "choices": [str, ...], "answer": ...}`` lines;
    ``answer`` is the index of the right choice, its letter ("A", "B", ...) or its text.
    Prompted as ``Question: {question}\\nAnswer: {choice}``."""
    items = []
    for where, rec in _read_jsonl(path, ("question", "choices", "answer"), "multiple-choice"):
        q, choices, ans = rec["question"], rec["choices"], rec["answer"]
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"{where}: \"question\" must be a non-empty string, got {q!r}")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
            raise ValueError(f"{where}: \"choices\" must be a list of >= 2 non-empty strings, got {choices!r}")
        if isinstance(ans, bool):
            gold = None
        elif isinstance(ans, int):
            gold = ans if 0 <= ans < len(choices) else None
        elif isinstance(ans, str) and len(ans) == 1 and ans.upper() in "ABCDEFGHIJ"[: len(choices)]:
            gold = "ABCDEFGHIJ".index(ans.upper())
        elif isinstance(ans, str) and ans in choices:
            gold = choices.index(ans)
        else:
            gold = None
        if gold is None:
            raise ValueError(f"{where}: \"answer\" {ans!r} is not an index in [0, {len(choices)}), a letter "
                             f"A-{'ABCDEFGHIJ'[len(choices) - 1]} or one of the choices")
        items.append(MCItem(q.strip(), [c.strip() for c in choices], gold, {"lang": _lang(q)}))
    if not items:
        raise ValueError(f"{path}: no items (the file is empty)")
    return MultipleChoiceTask(name or f"mc:{os.path.basename(path)}", items, plain_template=_qa_template,
                              target_delimiter=_delim)


def load_gen_jsonl(path: str, name: str | None = None) -> GenerationTask:
    """Generation from ``{"prompt": str, "answer": str | [str, ...]}`` lines, scored by exact
    match, token F1 and ROUGE-L against the accepted answers. The plain prompt is the text as
    written (so write it as you want the model to see it, e.g. ending in "Answer:")."""
    items = []
    for where, rec in _read_jsonl(path, ("prompt", "answer"), "generation"):
        prompt, ans = rec["prompt"], rec["answer"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{where}: \"prompt\" must be a non-empty string, got {prompt!r}")
        answers = [ans] if isinstance(ans, str) else ans
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise ValueError(f"{where}: \"answer\" must be a string or a non-empty list of strings, got {ans!r}")
        items.append(GenItem(prompt, answers, {"lang": _lang(prompt)}))
    if not items:
        raise ValueError(f"{path}: no items (the file is empty)")
    return GenerationTask(name or f"gen:{os.path.basename(path)}", items, metrics=("exact_match", "f1", "rouge_l"),
                          config=GenerationConfig(max_new_tokens=48, until=("\n\n",)), target_delimiter=_delim)


# ----------------------------------------------------------------------------- SFT records
def sft_tasks(records, name: str = "sft", by: str = "skill", metrics=("exact_match", "f1")) -> list:
    """Generation tasks from SFT conversations (``{"messages": [...], "meta": {...}}``, the
    shape ``generate_sft`` writes): the last assistant reply is the answer, the turns before it
    the chat prompt. One task per ``meta[by]`` value (``sft/qa``, ``sft/math``, ...) plus
    ``sft/all``, so a before/after-SFT report reads per skill. Score with ``template="chat"``."""
    items = []
    for i, rec in enumerate(records):
        msgs = rec.get("messages") if isinstance(rec, dict) else None
        if not msgs or msgs[-1].get("role") != "assistant" or len(msgs) < 2 or msgs[-2].get("role") != "user":
            raise ValueError(f"SFT record {i}: expected messages ending with a user turn and the assistant's reply, got {msgs!r}")
        if len(msgs) > 2:
            raise ValueError(f"SFT record {i}: only single-turn conversations can be scored, got {len(msgs)} messages")
        meta = dict(rec.get("meta") or {})
        items.append(GenItem(msgs[0]["content"], [msgs[1]["content"]], meta))
    if not items:
        raise ValueError("sft_tasks: no records")
    cfg = GenerationConfig(max_new_tokens=32, until=())
    groups: dict = {}
    for it in items:
        if by in it.meta:
            groups.setdefault(str(it.meta[by]), []).append(it)
    tasks = [GenerationTask(f"{name}/all", items, metrics=metrics, config=cfg)]
    tasks += [GenerationTask(f"{name}/{g}", its, metrics=metrics, config=cfg) for g, its in sorted(groups.items())]
    return tasks
