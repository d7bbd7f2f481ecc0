"""Teaching a tiny model to use tools (Happy LLM 7.3, offline): synthetic traces and the measurement.

The book's agent borrows a 7B model that already knows how to call functions. A 1M-parameter
model knows nothing, so we write its lessons: SFT conversations generated from the story world
and from arithmetic, in which the assistant calls a tool when the question needs one and
answers from the result::

    system     Answer the question.\\n\\nTools: add(a, b), mul(a, b), ...
    user       What is 4721 + 389?
    assistant  <tool_call>{"name": "add", "arguments": {"a": 4721, "b": 389}}</tool_call>   trained
    tool       5110                                                                         not trained
    assistant  5110                                                                         trained

Categories (``CATEGORIES``): multi-digit ``add`` and ``mul`` (too hard to do in the head),
``compare``, ``count`` (letters in a word), ``lookup`` (a person's home, pet or colour: facts
that are in no prompt), ``date`` (from the clock), ``multi`` ((a + b) * c: two calls, one
after the other) and ``none`` (word translation: no tool needed, and none must be called).

The same model also sees some conversations *without* a tool listing, answered directly: so
"the same model without tools" is a fair baseline (it was taught to answer those questions
by itself), not a model forced into a format it never saw.

Held out: ``make_eval_items`` draws its questions first, from its own seed; ``make_dialogues``
never writes one of them, and lookup questions ask (person, fact) pairs of world 0 that no
training conversation asks (``HELDOUT_FACTS``), while training lookups read other worlds' fact
tables, so only the tool can answer them (and the model cannot learn to ignore it).

``make_copy_drills`` writes conversations that only repeat numbers: the agent's work is mostly
copying digits (question -> call, result -> answer), the skill a tiny model learns last.
"""
from __future__ import annotations

import datetime as _dt
import random
import re
import unicodedata
from dataclasses import dataclass
from typing import Optional, Sequence

from ..data import world as W
from ..tokenizers.chat import format_tool_call, prepare_messages
from .tools import Tool, add, compare, count_letter, make_datetime_tool, make_lookup_tool, mul

__all__ = [
    "CATEGORIES", "AGENT_SYSTEM", "HELDOUT_FACTS", "EvalItem", "agent_tools", "make_eval_items", "make_dialogues",
    "make_copy_drills", "score_answer", "evaluate_agent", "format_table",
]

CATEGORIES = ("add", "mul", "multi", "compare", "count", "lookup", "date", "none")
TOOL_CATEGORIES = CATEGORIES[:-1]
AGENT_SYSTEM = "Answer the question."
_FIELDS = ("home", "pet", "colour")
#: (person, fact) pairs that no training conversation states: a quarter of them, spread over
#: every person (each name is still seen in training, so its embedding is trained and copyable)
HELDOUT_FACTS = frozenset((c, f) for c in range(len(W.NAMES)) for i, f in enumerate(_FIELDS) if (3 * c + i) % 4 == 0)
_WORDS = sorted({w for w, *_ in W.OBJECTS + W.ANIMALS + W.PLACES if " " not in w and len(w) >= 3})
_TRANSLATE = [(en, zh) for en, zh, *_ in W.OBJECTS + W.ANIMALS] + [(en, zh) for en, zh in W.COLOURS]


@dataclass(frozen=True)
class EvalItem:
    """A held-out question: ``category``, ``question``, ``answer`` (the reference), ``calls``
    (the tool calls a perfect agent makes), ``clock`` (the time the date tool reports)."""

    category: str
    question: str
    answer: str
    calls: tuple = ()
    clock: Optional[str] = None


def agent_tools(world=None, clock: Optional[_dt.datetime] = None) -> list:
    """The tools the tiny agent is trained with: the book's add, mul, compare, count_letter,
    get_current_datetime (clock fixed when ``clock`` is given) and the world lookup."""
    now = (lambda: clock) if clock is not None else _dt.datetime.now
    return [Tool(add), Tool(mul), Tool(compare), Tool(count_letter), make_datetime_tool(now), make_lookup_tool(world)]


# ----------------------------------------------------------------------------- one question
def _random_clock(rng: random.Random) -> _dt.datetime:
    start = _dt.datetime(2020, 1, 1)
    return start + _dt.timedelta(seconds=rng.randrange(10 * 365 * 24 * 3600))


def _question(category: str, rng: random.Random, heldout: bool, world) -> EvalItem:
    """One question of ``category`` with its answer and the calls that answer it."""
    if category == "add":
        a, b = rng.randrange(100, 10000), rng.randrange(10, 10000)
        q = rng.choice(["What is {a} + {b}?", "Add {a} and {b}.", "What is {a} plus {b}?"]).format(a=a, b=b)
        return EvalItem(category, q, add(a, b), (("add", {"a": a, "b": b}),))
    if category == "mul":
        a, b = rng.randrange(12, 100), rng.randrange(12, 100)
        q = rng.choice(["What is {a} * {b}?", "Multiply {a} by {b}.", "What is {a} times {b}?"]).format(a=a, b=b)
        return EvalItem(category, q, mul(a, b), (("mul", {"a": a, "b": b}),))
    if category == "multi":
        a, b, c = rng.randrange(10, 100), rng.randrange(10, 100), rng.randrange(2, 10)
        s = add(a, b)
        q = rng.choice(["What is ({a} + {b}) * {c}?", "Add {a} and {b}, then multiply by {c}."]).format(a=a, b=b, c=c)
        return EvalItem(category, q, mul(int(s), c), (("add", {"a": a, "b": b}), ("mul", {"a": int(s), "b": c})))
    if category == "compare":
        a = rng.randrange(100, 10000)
        b = a + rng.choice([-1, 1]) * rng.randrange(1, 1000)
        b = b if b > 0 and b != a else a + 7
        q = rng.choice(["Which is larger, {a} or {b}?", "Which number is bigger: {a} or {b}?"]).format(a=a, b=b)
        return EvalItem(category, q, str(max(a, b)), (("compare", {"a": a, "b": b}),))
    if category == "count":
        word = rng.choice(_WORDS)
        letter = rng.choice(word) if rng.random() < 0.85 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        # double quotes, as in the call's JSON: '"c' is then the same token in the question and in the call
        # (with single quotes the BPE makes "'c" a token of its own, and the model must translate, not copy)
        q = rng.choice(['How many times does the letter "{l}" appear in "{w}"?',
                        'Count the letter "{l}" in "{w}".']).format(l=letter, w=word)
        return EvalItem(category, q, str(word.count(letter)), (("count_letter", {"text": word, "letter": letter}),))
    if category == "lookup":
        pairs = sorted(HELDOUT_FACTS) if heldout else [(c, f) for c in range(len(W.NAMES)) for f in _FIELDS
                                                        if (c, f) not in HELDOUT_FACTS]
        c, fld = rng.choice(pairs)
        name = W.NAMES[c][0]
        q = {"home": f"Where does {name} live?", "pet": f"What pet does {name} have?",
             "colour": f"What is {name}'s favourite colour?"}[fld]
        ans = {"home": W.CITIES[world.home[c]][0], "pet": W.ANIMALS[world.pet[c]][0],
               "colour": W.COLOURS[world.colour[c]][0]}[fld]
        return EvalItem(category, q, ans, (("lookup", {"name": name, "field": fld}),))
    if category == "date":
        clock = _random_clock(rng)
        q = rng.choice(["What is the date today?", "What day is it today?", "Which date is it?"])
        return EvalItem(category, q, clock.strftime("%Y-%m-%d"), (("get_current_datetime", {}),),
                        clock.strftime("%Y-%m-%d %H:%M:%S"))
    if category == "none":
        en, zh = rng.choice(_TRANSLATE)
        if rng.random() < 0.5:
            return EvalItem(category, f"What is '{en}' in Chinese?", zh)
        return EvalItem(category, f"What is '{zh}' in English?", en)
    raise ValueError(f"unknown category {category!r}; choose from {CATEGORIES}")


def make_eval_items(n_per_category: int, seed: int = 0, world=None, categories: Sequence[str] = CATEGORIES) -> list:
    """``n_per_category`` held-out questions of each category (distinct (question, answer) pairs
    within a category; the date questions differ by their clock)."""
    world = world if world is not None else W.get_world(0)
    rng = random.Random(f"minillm-agent/{seed}/eval")
    out = []
    for cat in categories:
        seen = set()
        for _ in range(100 * n_per_category):
            if len(seen) >= n_per_category:
                break
            item = _question(cat, rng, True, world)
            if (item.question, item.answer) not in seen:
                seen.add((item.question, item.answer))
                out.append(item)
    return out


# ----------------------------------------------------------------------------- training traces
def _observation(name: str, args: dict, tools: dict, clock: Optional[str]) -> str:
    if name == "get_current_datetime":
        return clock
    return str(tools[name](**tools[name].validate(args)))


def trace(item: EvalItem, world=None, with_tools: bool = True, _tools: Optional[dict] = None) -> list:
    """The conversation that answers ``item``: tool calls and results, then the answer (or,
    ``with_tools=False``, the answer alone, under a system turn that lists no tools)."""
    world = world if world is not None else W.get_world(0)
    tools = _tools if _tools is not None else {t.name: t for t in agent_tools(world)}
    msgs = [{"role": "system", "content": AGENT_SYSTEM}, {"role": "user", "content": item.question}]
    if with_tools:
        for name, args in item.calls:
            msgs.append({"role": "assistant", "content": format_tool_call(name, args)})
            msgs.append({"role": "tool", "content": _observation(name, args, tools, item.clock)})
    msgs.append({"role": "assistant", "content": item.answer})
    return msgs


def make_dialogues(n: int, seed: int = 0, world=None, direct_fraction: float = 0.25,
                   exclude: Sequence[EvalItem] = (), weights: Optional[dict] = None, lookup_worlds: int = 1000) -> list:
    """``n`` SFT records ``{"messages": [...], "meta": {"skill": category, "tools": bool}}`` (lookups
    add ``"world"``: the seed of the fact table their tool read).

    A ``direct_fraction`` share is answered without tools (and lists none); the rest use
    them. The (question, answer) pairs of ``exclude`` (the held-out set) are never written; lookups
    never ask a (person, fact) pair of ``HELDOUT_FACTS``. With ``lookup_worlds`` > 0 each lookup
    conversation reads the facts of a random other world (seeds 1 .. lookup_worlds; the evaluation
    asks ``world``): a fact the model could memorise would let it ignore the tool. The system turn
    of a tool conversation is the template's brief tool listing, exactly what the agent shows at run time.
    """
    if not 0.0 <= direct_fraction <= 1.0:
        raise ValueError(f"direct_fraction must be in [0, 1], got {direct_fraction}")
    world = world if world is not None else W.get_world(0)
    weights = weights or {"add": 2, "mul": 2, "multi": 1.5, "compare": 1, "count": 1.5, "lookup": 2, "date": 1, "none": 1.5}
    bad = set(weights) - set(CATEGORIES)
    if bad:
        raise ValueError(f"unknown categories in weights: {sorted(bad)}; choose from {CATEGORIES}")
    cats, w = list(weights), list(weights.values())
    rng = random.Random(f"minillm-agent/{seed}/train")
    banned = {(it.question, it.answer) for it in exclude}
    tools = {t.name: t for t in agent_tools(world)}
    schemas = [t.schema for t in tools.values()]

    out = []
    while len(out) < n:
        cat = rng.choices(cats, w)[0]
        item = _question(cat, rng, False, world)
        if (item.question, item.answer) in banned:
            continue
        direct = cat != "none" and rng.random() < direct_fraction
        item_tools, meta = tools, {"skill": cat, "tools": not direct}
        if cat == "lookup" and lookup_worlds:
            # the lookup tool reads one of many other worlds' fact tables: the answer is in the tool's result
            # and nowhere else, so the model learns to read it instead of memorising who lives where
            meta["world"] = rng.randrange(1, lookup_worlds + 1)
            other = W.get_world(meta["world"])
            item = _question(cat, rng, False, other)
            item_tools = {**tools, "lookup": make_lookup_tool(other)}
        msgs = trace(item, world, with_tools=not direct, _tools=item_tools)
        if not direct:
            msgs = prepare_messages(msgs, tools=schemas, tool_style="brief")
        out.append({"messages": msgs, "meta": meta})
    return out


def make_copy_drills(n: int, seed: int = 0, max_numbers: int = 3, max_digits: int = 6) -> list:
    """``n`` SFT records that only ask to repeat numbers: "Repeat: 8499 1835" -> "8499 1835".

    An agent's work is mostly copying (numbers from the question into a call, the result into
    the answer), and a tiny model copies digits badly: ten digit tokens look alike, so copying
    needs attention that finds *the position after* the digit it just wrote (an induction
    head). A tool trace has a few such digits; a drill is nothing else, so the skill is learned
    from far fewer conversations. No tools are listed and none is called.
    """
    if n < 0 or max_numbers < 1 or max_digits < 1:
        raise ValueError(f"make_copy_drills: need n >= 0, max_numbers >= 1, max_digits >= 1; got {n}, {max_numbers}, "
                         f"{max_digits}")
    rng = random.Random(f"minillm-agent/{seed}/copy")
    out = []
    for _ in range(n):
        nums = " ".join(str(rng.randrange(10 ** (d - 1) if d > 1 else 0, 10 ** d))
                        for d in (rng.randint(1, max_digits) for _ in range(rng.randint(1, max_numbers))))
        q = rng.choice(["Repeat: {x}", "Say {x} again.", "Copy {x}."]).format(x=nums)
        msgs = [{"role": "system", "content": AGENT_SYSTEM}, {"role": "user", "content": q},
                {"role": "assistant", "content": nums}]
        out.append({"messages": msgs, "meta": {"skill": "copy", "tools": False}})
    return out


# ----------------------------------------------------------------------------- scoring
def _norm(s: str) -> str:
    s = unicodedata.normalize("NFKC", s).strip().casefold()
    s = re.sub(r"^(a|an|the)\s+", "", s)
    return s.rstrip(".。!！ ")


def score_answer(prediction: Optional[str], reference: str) -> bool:
    """Exact match after NFKC, casefold, a leading article and trailing punctuation removed."""
    return prediction is not None and _norm(prediction) == _norm(reference)


def evaluate_agent(llm, items: Sequence[EvalItem], with_tools: bool = True, world=None, max_steps: int = 3,
                   max_new_tokens: int = 48, tool_style: str = "brief") -> dict:
    """Run the agent on ``items``; accuracy per category, well-formed-call and no-call rates.

    Returns ``{"accuracy": {category: acc, ..., "all": acc}, "n_per_category": {category: items},
    "well_formed": share of the calls
    written (each ``<tool_call>``) that parsed and validated against a registered tool, "no_call_when_none_needed": share of "none" questions
    answered without a call, "called_when_needed": share of tool questions with at least one
    good call, "n": items, "examples": [...]}``. The date tool's clock is each item's own.
    """
    from .core import Agent

    world = world if world is not None else W.get_world(0)
    results = [None] * len(items)
    groups: dict = {}
    for i, it in enumerate(items):
        groups.setdefault(it.clock, []).append(i)  # one agent per clock: the date tool reads it
    for clock, idx in groups.items():
        when = _dt.datetime.strptime(clock, "%Y-%m-%d %H:%M:%S") if clock else _dt.datetime(2026, 12, 1, 12, 0, 0)
        tools = agent_tools(world, clock=when) if with_tools else []
        agent = Agent(llm, tools, AGENT_SYSTEM, tool_style=tool_style, max_steps=max_steps,
                      max_new_tokens=max_new_tokens, max_total_tokens=max_new_tokens * (max_steps + 1))
        for i, r in zip(idx, agent.run_many([items[i].question for i in idx])):
            results[i] = r
    acc: dict = {}
    counts: dict = {}
    for cat in CATEGORIES:
        rows = [score_answer(r.answer, it.answer) for it, r in zip(items, results) if it.category == cat]
        if rows:
            acc[cat], counts[cat] = sum(rows) / len(rows), len(rows)
    acc["all"] = sum(score_answer(r.answer, it.answer) for it, r in zip(items, results)) / max(1, len(items))
    attempts = sum(r.n_call_attempts for r in results)
    calls = sum(r.n_calls for r in results)
    good = sum(r.n_valid_calls for r in results)
    none_items = [(it, r) for it, r in zip(items, results) if it.category == "none"]
    tool_items = [(it, r) for it, r in zip(items, results) if it.category != "none"]
    return {
        "accuracy": acc,
        "n_per_category": counts,
        "well_formed": good / calls if calls else None,
        "n_call_attempts": attempts,
        "n_calls": calls,
        "no_call_when_none_needed": (sum(r.n_call_attempts == 0 for _, r in none_items) / len(none_items)
                                     if none_items else None),
        "called_when_needed": (sum(r.n_valid_calls > 0 for _, r in tool_items) / len(tool_items) if tool_items else None),
        "n": len(items),
        "examples": [
            {"category": it.category, "question": it.question, "reference": it.answer, "answer": r.answer,
             "calls": [[s.name, s.arguments, s.observation, s.status] for s in r.steps], "errors": r.errors, "stopped": r.stopped}
            for it, r in zip(items, results)
        ],
    }


def format_table(with_tools: dict, without_tools: dict) -> str:
    """The measured table: accuracy per category with and without tools."""
    lines = ["| category | n | with tools | without tools |", "|---|---:|---:|---:|"]
    for cat in list(CATEGORIES) + ["all"]:
        if cat in with_tools["accuracy"]:
            a, b = with_tools["accuracy"][cat], without_tools["accuracy"].get(cat)
            n = with_tools.get("n_per_category", {}).get(cat, with_tools["n"] if cat == "all" else "")
            lines.append(f"| {cat} | {n} | {100 * a:.0f}% | {'' if b is None else f'{100 * b:.0f}%'} |")
    wf = with_tools["well_formed"]
    lines.append("")
    lines.append(f"well-formed tool calls: {'n/a' if wf is None else f'{100 * wf:.0f}%'} of "
                 f"{with_tools['n_calls']} calls written; "
                 f"no call when none is needed: {100 * (with_tools['no_call_when_none_needed'] or 0):.0f}%; "
                 f"a good call when one is needed: {100 * (with_tools['called_when_needed'] or 0):.0f}%")
    return "\n".join(lines)

