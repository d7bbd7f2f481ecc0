"""minillm/agent (Happy LLM 7.3): tool schemas, the calculator, the parser on broken model
output, the safe loop, the confined file reader, the training traces and the example."""
import datetime as dt
import json
import os
import random
import re
import time
from fractions import Fraction
from typing import Literal, Optional

import pytest

from minillm.agent import (
    Agent, ChatModel, ScriptedLLM, ToolArgumentError, add, calculate, compare, count_letter, function_to_json,
    make_datetime_tool, make_lookup_tool, make_read_file_tool, make_search_tool, mul, parse_react, parse_reply, tool,
)
from minillm.agent.tasks import (
    AGENT_SYSTEM, CATEGORIES, HELDOUT_FACTS, agent_tools, evaluate_agent, format_table, make_copy_drills, make_dialogues,
    make_eval_items, score_answer, trace,
)
from minillm.data import world as W
from minillm.tokenizers.chat import format_tool_call
from _helpers import load_example


# ----------------------------------------------------------------------------- schemas
def test_function_to_json_reads_signature_hints_and_the_books_docstrings():
    schema = function_to_json(add)
    assert schema == {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two numbers exactly.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number", "description": "the first number"},
                               "b": {"type": "number", "description": "the second number"}},
                "required": ["a", "b"],
            },
        },
    }

    def f(name: str, n: int = 2, flag: bool = False, xs: list[int] = None, kind: Literal["x", "y"] = "x",
          note: Optional[str] = None, extra: dict = None):
        """Do things.

        Args:
            name: who
            n: how many
                (continued)
        """

    p = function_to_json(f)["function"]["parameters"]
    assert p["required"] == ["name"]
    assert p["properties"]["name"] == {"type": "string", "description": "who"}
    assert p["properties"]["n"] == {"type": "integer", "description": "how many (continued)"}
    assert p["properties"]["xs"] == {"type": "array", "items": {"type": "integer"}}
    assert p["properties"]["kind"] == {"type": "string", "enum": ["x", "y"]}
    assert p["properties"]["note"] == {"type": "string", "nullable": True}
    assert p["properties"]["flag"] == {"type": "boolean"} and p["properties"]["extra"] == {"type": "object"}
    assert function_to_json(f)["function"]["description"] == "Do things."


class Point:
    pass


def _no_hint(a):
    """x"""


def _set_hint(a: set):
    """x"""


def _class_hint(p: Point):
    """x"""


def _star(*args: int):
    """x"""


def _kw(**kw: int):
    """x"""


@pytest.mark.parametrize("fn, words", [
    (_no_hint, "parameter 'a' has no type hint"),
    (_set_hint, "unsupported type hint"),
    (_class_hint, "unsupported type hint"),
    (_star, r"\*args/\*\*kwargs"),
    (_kw, r"\*args/\*\*kwargs"),
])
def test_unsupported_annotations_fail_at_registration_naming_the_parameter(fn, words):
    with pytest.raises(TypeError, match=words) as e:
        tool(fn)
    assert fn.__name__ in str(e.value)


def test_function_to_json_matches_transformers_get_json_schema():
    utils = pytest.importorskip("transformers.utils")

    def get_weather(city: str, days: int, metric: bool = True) -> str:
        """Get the weather forecast.

        Args:
            city: the city's name
            days: how many days ahead
            metric: Celsius if true
        """
        return ""

    theirs = utils.get_json_schema(get_weather)
    ours = function_to_json(get_weather)
    assert ours["function"]["name"] == theirs["function"]["name"]
    assert ours["function"]["description"] == theirs["function"]["description"]
    assert ours["function"]["parameters"] == theirs["function"]["parameters"]


def test_validate_checks_arguments_against_the_schema():
    t = tool(count_letter)
    assert t.validate({"text": "banana", "letter": "a"}) == {"text": "banana", "letter": "a"}
    for args, words in [
        ({"text": "banana"}, "missing argument"),
        ({"text": "banana", "letter": "a", "x": 1}, "unknown argument"),
        ({"text": 3, "letter": "a"}, "argument 'text' must be string, got int"),
        ([1, 2], "must be a JSON object"),
    ]:
        with pytest.raises(ToolArgumentError, match=words):
            t.validate(args)
    a = tool(add)
    assert a.validate({"a": 1, "b": 2.5}) == {"a": 1, "b": 2.5}
    with pytest.raises(ToolArgumentError, match="must be number, got bool"):
        a.validate({"a": True, "b": 2})
    with pytest.raises(ToolArgumentError, match="must be number, got str"):
        a.validate({"a": "1", "b": 2})
    lookup = make_lookup_tool()
    with pytest.raises(ToolArgumentError, match="must be one of"):
        lookup.validate({"name": "Tom", "field": "age"})


# ----------------------------------------------------------------------------- the book's tools
def test_book_tools_are_exact_and_keep_the_books_wording():
    assert add(0.1, 0.2) == "0.3" and add(347, 589) == "936" and add(1.5, 1.5) == "3"
    assert mul(23, 47) == "1081" and mul(0.1, 3) == "0.3"
    assert compare(347, 289) == "347 is greater than 289"
    assert compare(2, 5.5) == "5.5 is greater than 2" and compare(3, 3.0) == "3 is equal to 3"
    assert count_letter("Strawberry", "R") == "The letter 'r' appears 3 times in the string."
    with pytest.raises(ValueError, match="one character"):
        count_letter("abc", "ab")
    clock = make_datetime_tool(lambda: dt.datetime(2026, 12, 1, 9, 5, 7))
    assert clock() == "2026-12-01 09:05:07" and clock.name == "get_current_datetime"
    assert clock.schema["function"]["parameters"] == {"type": "object", "properties": {}, "required": []}


def test_lookup_tool_reads_the_world():
    world = W.get_world(0)
    look = make_lookup_tool(world)
    c = 5
    assert look(name=W.NAMES[c][0], field="home") == W.CITIES[world.home[c]][0]
    assert look(name=W.NAMES[c][1], field="pet") == W.ANIMALS[world.pet[c]][0]  # the Chinese name works too
    with pytest.raises(ValueError, match="no person named 'Zed'"):
        look(name="Zed", field="home")


# ----------------------------------------------------------------------------- the calculator
def _random_expr(rng, depth=0):
    if depth > 3 or rng.random() < 0.3:
        n = rng.randrange(0, 1000)
        return str(n) if rng.random() < 0.8 else f"{n}.{rng.randrange(0, 100):02d}"
    op = rng.choice("+-*/")
    return f"({_random_expr(rng, depth + 1)} {op} {_random_expr(rng, depth + 1)})"


def _reference(expr: str) -> Fraction:
    """The same expression through Python's parser on Fractions (a test-only reference)."""
    import ast

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp):
            return -ev(node.operand) if isinstance(node.op, ast.USub) else ev(node.operand)
        a, b = ev(node.left), ev(node.right)
        return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}.get(type(node.op)) if not isinstance(node.op, ast.Div) else a / b

    return ev(ast.parse(expr, mode="eval"))


def test_calculate_is_exact_against_a_fraction_reference(monkeypatch):
    monkeypatch.setattr("builtins.eval", lambda *a, **k: pytest.fail("calculate must not call eval"))
    rng = random.Random(0)
    checked = 0
    for _ in range(300):
        e = _random_expr(rng)
        try:
            ref = _reference(e)
        except ZeroDivisionError:
            with pytest.raises(ValueError, match="division by zero"):
                calculate(e)
            continue
        got = calculate(e)
        assert Fraction(got) == ref, e
        checked += 1
    assert checked > 200
    assert calculate("(347 + 589) * 7") == "6552" and calculate("1 / 3") == "1/3" and calculate("-1.5 * -2") == "3"
    assert calculate("7 / 4") == "1.75" and calculate("0.1 + 0.2") == "0.3" and calculate("6 ÷ 4 × 2") == "3"


@pytest.mark.parametrize("expr, words", [
    ("__import__('os').system('ls')", "unexpected character '_'"),
    ("2 ** 1000", "expected a number or '\\(' but found '\\*'"),
    ("(1 + 2", "missing '\\)'"),
    ("1 + 2)", "unexpected '\\)'"),
    ("", "empty expression"),
    ("1 / (2 - 2)", "division by zero"),
    ("1" * 300, "longer than"),
    ("(" * 60 + "1" + ")" * 60, "too deeply nested"),
])
def test_calculate_refuses_what_is_not_arithmetic(expr, words):
    with pytest.raises(ValueError, match=words):
        calculate(expr)


# ----------------------------------------------------------------------------- the parser
def test_parse_reply_reads_calls_and_content():
    r = parse_reply('I will add.<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>')
    assert r.content == "I will add." and [(c.name, c.arguments) for c in r.calls] == [("add", {"a": 1, "b": 2})]
    assert not r.errors and not r.is_final
    two = parse_reply(format_tool_call("add", {"a": 1, "b": 2}) + format_tool_call("mul", '{"a": 3, "b": 4}'))
    assert [c.name for c in two.calls] == ["add", "mul"] and two.calls[1].arguments == {"a": 3, "b": 4}
    openai = parse_reply('<tool_call>{"function": {"name": "f", "arguments": "{\\"x\\": 1}"}}</tool_call>')
    assert openai.calls[0].name == "f" and openai.calls[0].arguments == {"x": 1}
    final = parse_reply("936")
    assert final.is_final and final.content == "936"


BROKEN = [
    ('<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}', "not closed"),
    ('<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}</tool_call>', "not valid JSON"),
    ("<tool_call>add(1, 2)</tool_call>", "not valid JSON"),
    ("<tool_call></tool_call>", "not valid JSON"),
    ('<tool_call>["add", 1, 2]</tool_call>', "must be a JSON object"),
    ('<tool_call>{"arguments": {"a": 1}}</tool_call>', "no string 'name'"),
    ('<tool_call>{"name": 3, "arguments": {}}</tool_call>', "no string 'name'"),
    ('<tool_call>{"name": "add", "arguments": [1, 2]}</tool_call>', "must be a JSON object"),
    ('<tool_call>{"name": "add", "arguments": "{a: 1}"}</tool_call>', "not valid JSON"),
    ('{"name": "add"}</tool_call>', "without <tool_call>"),
    ("<tool_call><tool_call>{\"name\": \"add\", \"arguments\": {}}</tool_call>", "not closed"),
    ("<tool_call>\x00\ufffd</tool_call>", "not valid JSON"),
    ('<tool_call>{"name": "add", "arguments": {"a": 1e999999}}</tool_call>', None),  # inf: parsed, refused by the loop
]


@pytest.mark.parametrize("text, words", BROKEN)
def test_parse_reply_never_raises_on_broken_output(text, words):
    r = parse_reply(text)
    if words is not None:
        assert any(words in e for e in r.errors), r.errors
    assert not r.is_final


def test_parse_reply_survives_random_garbage():
    rng = random.Random(1)
    pieces = ["<tool_call>", "</tool_call>", "{", "}", '"name"', ":", '"add"', '"arguments"', "[", "]", ",", "1", "x", "\\"]
    for _ in range(500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 12)))
        r = parse_reply(text)  # must not raise
        assert isinstance(r.errors, list) and isinstance(r.content, str)


def test_parse_react():
    r = parse_react('Thought: add them\nAction: add\nAction Input: {"a": 1, "b": 2}\nObservation: 99 (made up)')
    assert r.content == "Thought: add them" and r.calls[0].name == "add" and r.calls[0].arguments == {"a": 1, "b": 2}
    assert parse_react("Thought: done\nFinal Answer: 3").content == "3"
    assert "not valid JSON" in parse_react("Action: add\nAction Input: {a: 1}").errors[0]
    assert parse_react("I think it is 3").errors and parse_react("").errors
    assert "JSON object" in parse_react("Action: add\nAction Input: [1]").errors[0]


# ----------------------------------------------------------------------------- the loop
def _call(tool_name, **args):
    return format_tool_call(tool_name, args)


def test_agent_runs_the_loop_and_keeps_the_books_api():
    llm = ScriptedLLM([_call("add", a=347, b=589), _call("mul", a=936, b=7), "6552"])
    agent = Agent(llm, [add, mul], tool_style="brief")
    assert [s["function"]["name"] for s in agent.get_tool_schema()] == ["add", "mul"]
    res = agent.run("What is (347 + 589) * 7?")
    assert res.answer == "6552" and res.stopped == "answer" and res.errors == []
    assert [(s.name, s.observation, s.status) for s in res.steps] == [("add", "936", "ok"), ("mul", "6552", "ok")]
    assert [m["role"] for m in res.messages] == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    # the model was shown the tools in the template's brief listing
    assert llm.calls[0][2] == agent.get_tool_schema()
    from minillm.agent.parser import ToolCall
    assert agent.handle_tool_call(ToolCall("add", {"a": 1, "b": 2})) == {"role": "tool", "content": "3"}
    assert agent.handle_tool_call(ToolCall("rm", {}))["content"].startswith("error: unknown tool 'rm'")


def test_every_mistake_becomes_an_observation_and_the_loop_goes_on():
    def slow(seconds: float) -> str:
        """Sleep."""
        time.sleep(seconds)
        return "woke"

    def boom(x: int) -> str:
        """Fail."""
        raise RuntimeError("kaput")

    script = [
        '<tool_call>{"name": "add", "arguments": {"a": 1,}}</tool_call>',  # malformed JSON
        _call("delete_everything"),  # unknown tool
        _call("add", a="1", b=2),  # wrong type
        _call("boom", x=1),  # the tool raises
        _call("slow", seconds=5),  # the tool hangs
        _call("add", a=1, b=2),
        "3",
    ]
    agent = Agent(ScriptedLLM(script), [add, slow, boom], max_steps=10, tool_timeout=0.2)
    t0 = time.perf_counter()
    res = agent.run("1 + 2?")
    assert time.perf_counter() - t0 < 3
    assert res.answer == "3" and res.stopped == "answer"
    tool_turns = [m["content"] for m in res.messages if m["role"] == "tool"]
    assert tool_turns[0].startswith("error: the tool call is not valid JSON")
    assert tool_turns[1].startswith("error: unknown tool 'delete_everything'")
    assert "argument 'a' must be number, got str" in tool_turns[2]
    assert tool_turns[3] == "error: boom failed: RuntimeError: kaput"
    assert tool_turns[4] == "error: slow timed out after 0.2 s"
    assert tool_turns[5] == "3"
    assert res.n_calls == 6 and res.n_valid_calls == 3  # boom, slow and the good add were valid calls
    assert [s.status for s in res.steps] == ["invalid", "invalid", "failed", "failed", "ok"]
    # a tool's own timeout wins over the agent's
    quick = tool(slow, name="quick", timeout=0.05)
    res = Agent(ScriptedLLM([_call("quick", seconds=5), "x"]), [quick], tool_timeout=60).run("q")
    assert res.steps[0].observation == "error: quick timed out after 0.05 s"
    with pytest.raises(ValueError, match="timeout must be > 0"):
        tool(slow, timeout=0)


def test_limits_stop_the_loop():
    forever = ScriptedLLM([_call("add", a=1, b=1)])
    res = Agent(forever, [add], max_steps=3).run("loop")
    assert res.stopped == "max_steps" and res.answer is None and len(res.steps) == 3
    res = Agent(forever, [add], max_steps=50, max_total_tokens=20).run("loop")
    assert res.stopped == "token_budget" and res.n_tokens >= 20 and len(res.steps) < 50
    with pytest.raises(ValueError, match="max_steps"):
        Agent(forever, [add], max_steps=0)
    with pytest.raises(ValueError, match="tool_timeout"):
        Agent(forever, [add], tool_timeout=0)
    with pytest.raises(ValueError, match="format"):
        Agent(forever, [add], format="xml")
    with pytest.raises(ValueError, match="two tools are named 'add'"):
        Agent(forever, [add, add])


def test_only_registered_functions_run(monkeypatch):
    script = [_call("__import__", name="os"), _call("eval", source="1+1"), _call("getattr", o=1), "done"]
    agent = Agent(ScriptedLLM(script), [add], max_steps=5)  # registration may resolve string annotations
    monkeypatch.setattr("builtins.eval", lambda *a, **k: pytest.fail("no eval"))  # running the model's calls may not
    monkeypatch.setattr("builtins.exec", lambda *a, **k: pytest.fail("no exec"))
    res = agent.run("x")
    assert res.answer == "done" and all(s.status == "invalid" for s in res.steps)


def test_react_format():
    script = ['Thought: add\nAction: add\nAction Input: {"a": 2, "b": 3}', "Thought: known\nFinal Answer: 5"]
    llm = ScriptedLLM(script)
    res = Agent(llm, [add], format="react").run("2 + 3?")
    assert res.answer == "5" and res.steps[0].observation == "5"
    messages, prefix, tools = llm.calls[1]
    assert "Action Input:" in messages[0]["content"] and tools is None  # the tools are in the ReAct system prompt
    assert prefix.endswith("Observation: 5\n")
    assert res.messages[-1]["role"] == "assistant" and "Final Answer: 5" in res.messages[-1]["content"]


def test_get_completion_keeps_the_conversation():
    agent = Agent(ScriptedLLM(lambda msgs, prefix, tools: "ok" if msgs[-1]["role"] == "tool" else _call("add", a=1, b=1)), [add])
    assert agent.get_completion("first") == "ok"
    assert agent.get_completion("second") == "ok"
    roles = [m["role"] for m in agent.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user", "assistant", "tool", "assistant"]


# ----------------------------------------------------------------------------- search and files
class _Hit:
    def __init__(self, text, score, source):
        self.text, self.score, self.source = text, score, source


class _Retriever:
    """The rag contract: search(query, k) -> hits with .text, .score, .source."""

    def __init__(self, docs):
        self.docs = docs

    def search(self, query: str, k: int = 3):
        words = set(query.lower().split())
        scored = sorted(((len(words & set(d.lower().split())), s, d) for s, d in self.docs.items()), reverse=True)
        return [_Hit(d, float(n), s) for n, s, d in scored[:k] if n > 0]


def test_search_tool_over_a_retriever():
    search = make_search_tool(_Retriever({"a.txt": "Tom lives in London", "b.txt": "Lily has a cat"}), k=1)
    assert search(query="where does tom live") == "[a.txt] Tom lives in London"
    assert search(query="zzz") == "no results"
    with pytest.raises(TypeError, match="search"):
        make_search_tool(object())
    res = Agent(ScriptedLLM([_call("search", query="lily cat"), "a cat"]), [search]).run("What does Lily have?")
    assert res.steps[0].observation == "[b.txt] Lily has a cat" and res.answer == "a cat"


def test_search_tool_over_the_rag_package(tmp_path):
    """7.2's real retriever as 7.3's tool: BM25 over a folder, through the agent loop."""
    from minillm.rag import BM25Retriever

    (tmp_path / "tom.txt").write_text("Tom lives in London. He has a red bike.", encoding="utf-8")
    (tmp_path / "lily.md").write_text("# Lily\n\nLily has a grey cat called Mo.", encoding="utf-8")
    search = make_search_tool(BM25Retriever.from_folder(tmp_path), k=1)
    res = Agent(ScriptedLLM([_call("search", query="Lily cat"), "a grey cat"]), [search]).run("What does Lily have?")
    assert "lily.md" in res.steps[0].observation and "grey cat" in res.steps[0].observation
    assert res.answer == "a grey cat"


def test_read_file_is_confined_to_its_directory(tmp_path):
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "notes.txt").write_text("hello", encoding="utf-8")
    (root / "sub" / "deep.txt").write_text("deep", encoding="utf-8")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret", encoding="utf-8")
    os.symlink(secret, root / "link.txt")
    os.symlink(tmp_path, root / "up")
    read = make_read_file_tool(root)
    assert read(path="notes.txt") == "hello" and read(path="sub/../sub/deep.txt") == "deep"
    for bad, err in [("../secret.txt", PermissionError), (str(secret), PermissionError), ("link.txt", PermissionError),
                     ("up/secret.txt", PermissionError), ("sub/../../secret.txt", PermissionError),
                     ("missing.txt", FileNotFoundError), ("", ValueError), ("a\x00b", ValueError)]:
        with pytest.raises(err):
            read(path=bad)
    # through the loop: refused, reported, never read
    res = Agent(ScriptedLLM([_call("read_file", path="../secret.txt"), "no"]), [read]).run("read it")
    assert "outside the documents folder" in res.steps[0].observation and "top secret" not in json.dumps(res.messages)


# ----------------------------------------------------------------------------- traces and measurement
def test_training_traces_hold_out_the_evaluation():
    items = make_eval_items(6)
    assert {it.category for it in items} == set(CATEGORIES) and len(items) == 6 * len(CATEGORIES)
    records = make_dialogues(600, exclude=items)
    asked = {(r["messages"][1]["content"], r["messages"][-1]["content"]) for r in records}
    assert not asked & {(it.question, it.answer) for it in items}
    held = {(W.NAMES[c][0], f) for c, f in HELDOUT_FACTS}
    look = [parse_reply(r["messages"][2]["content"]).calls[0].arguments for r in records
            if r["meta"]["skill"] == "lookup" and r["meta"]["tools"]]
    assert look and not {(a["name"], a["field"]) for a in look} & held
    # lookups read many other worlds' facts (never the evaluated world 0): only the tool's result has the answer
    worlds = [r["meta"]["world"] for r in records if r["meta"]["skill"] == "lookup"]
    assert 0 not in worlds and len(set(worlds)) > len(worlds) // 2
    direct = [r["messages"][1]["content"] for r in records if r["meta"]["skill"] == "lookup" and not r["meta"]["tools"]]
    heldout_questions = {it.question for it in make_eval_items(40, categories=("lookup",))}
    assert direct and not set(direct) & heldout_questions
    assert len(heldout_questions) == len(HELDOUT_FACTS) == 18  # every held-out fact is asked
    assert 0.1 < sum(not r["meta"]["tools"] for r in records) / len(records) < 0.4
    # every tool result in a trace is what the tool really returns
    tools = {t.name: t for t in agent_tools()}
    for r in records[:200]:
        msgs = r["messages"]
        for m, nxt in zip(msgs, msgs[1:]):
            if nxt["role"] == "tool" and "get_current_datetime" not in m["content"]:
                call = parse_reply(m["content"]).calls[0]
                tool_ = make_lookup_tool(W.get_world(r["meta"]["world"])) if call.name == "lookup" else tools[call.name]
                assert nxt["content"] == tool_(**call.arguments)
        assert msgs[-1]["role"] == "assistant" and ("Tools:" in msgs[0]["content"]) == r["meta"]["tools"]


def test_evaluate_agent_with_a_perfect_and_a_toolless_model():
    items = make_eval_items(3)
    by_question = {it.question: it for it in items}

    def oracle(messages, prefix, tools):
        it = by_question[next(m["content"] for m in messages if m["role"] == "user")]
        done = sum(m["role"] == "tool" for m in messages)
        tools_listed = bool(tools)
        if tools_listed and done < len(it.calls):
            name, args = it.calls[done]
            if name == "mul" and done == 1:  # (a + b) * c: the second call uses the first result
                args = {"a": int(messages[-1]["content"]), "b": args["b"]}
            return format_tool_call(name, args)
        if it.category == "date" and tools_listed:  # the date questions repeat; their clocks differ
            return messages[-1]["content"][:10]
        return it.answer if (tools_listed or it.category == "none") else "I do not know"

    good = evaluate_agent(ScriptedLLM(oracle), items, with_tools=True)
    assert good["accuracy"]["all"] == 1.0 and good["well_formed"] == 1.0
    assert good["no_call_when_none_needed"] == 1.0 and good["called_when_needed"] == 1.0
    assert good["n_per_category"] == {c: 3 for c in CATEGORIES} and "| add | 3 | 100% |" in format_table(good, good)
    bare = evaluate_agent(ScriptedLLM(oracle), items, with_tools=False)
    assert bare["accuracy"]["none"] == 1.0 and bare["accuracy"]["add"] == 0.0 and bare["well_formed"] is None
    assert score_answer("The market.", "market") and not score_answer(None, "x") and score_answer(" 936 ", "936")


def test_copy_drills_repeat_the_numbers_of_the_question():
    drills = make_copy_drills(50, seed=3)
    assert drills == make_copy_drills(50, seed=3) and drills != make_copy_drills(50, seed=4)
    for r in drills:
        system, user, assistant = r["messages"]
        assert system == {"role": "system", "content": AGENT_SYSTEM} and r["meta"] == {"skill": "copy", "tools": False}
        assert re.findall(r"\d+", user["content"]) == assistant["content"].split()
        assert all(len(x) <= 6 and (x == "0" or not x.startswith("0")) for x in assistant["content"].split())
    with pytest.raises(ValueError, match="max_digits"):
        make_copy_drills(3, max_digits=0)


def test_trace_is_what_the_agent_sees():
    it = make_eval_items(1, categories=("multi",))[0]
    msgs = trace(it)
    assert msgs[0] == {"role": "system", "content": AGENT_SYSTEM}
    assert [m["role"] for m in msgs[1:]] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]


def test_digits_pattern_gives_one_token_per_digit():
    from minillm.tokenizers import BPETokenizer
    from minillm.tokenizers.bpe import DIGITS_PATTERN, KNOWN_PATTERNS

    tok = BPETokenizer.train(["What is 8499 + 1835?"] * 30, vocab_size=300, pattern=DIGITS_PATTERN, show_progress=False)
    pieces = [tok.decode([i]) for i in tok.encode("What is 8499 + 1835?")]
    assert [p for p in pieces if p.strip().isdigit()] == list("84991835") and DIGITS_PATTERN in KNOWN_PATTERNS


def test_chat_model_round_trip_on_a_tiny_untrained_model():
    from minillm.models.llama import ModelConfig, Transformer
    from minillm.tokenizers import BPETokenizer

    texts = [json.dumps(r["messages"]) for r in make_dialogues(30)]
    tok = BPETokenizer.train(texts, vocab_size=300, show_progress=False)
    model = Transformer(ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=tok.vocab_size, max_seq_len=128))
    llm = ChatModel(model, tok, batch_size=2)
    agent = Agent(llm, agent_tools(), AGENT_SYSTEM, tool_style="brief", max_steps=2, max_new_tokens=8)
    results = agent.run_many(["What is 1 + 2?", "Where does Tom live?", "hi"])
    assert len(results) == 3 and all(r.stopped in ("answer", "max_steps", "token_budget") for r in results)
    assert all(r.n_tokens <= 8 * 3 for r in results)
    streamed = "".join(llm.stream([{"role": "user", "content": "hi"}], max_new_tokens=5))
    assert isinstance(streamed, str)


def test_chat_model_cuts_the_prompt_only_when_the_reply_needs_the_room(monkeypatch):
    import minillm.generation as gen
    from minillm.models.llama import ModelConfig, Transformer
    from minillm.tokenizers import BPETokenizer

    tok = BPETokenizer.train([json.dumps(r["messages"]) for r in make_dialogues(30)], vocab_size=300, show_progress=False)
    model = Transformer(ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=tok.vocab_size, max_seq_len=64))
    seen = []
    monkeypatch.setattr(gen, "generate", lambda m, prompts, n, **kw: seen.append((prompts, n)) or [[] for _ in prompts])
    llm = ChatModel(model, tok)
    short = [{"role": "user", "content": "hi"}]
    long = [{"role": "user", "content": "What is 1234 + 5678? " * 6}]
    n_short, n_long = len(llm.encode(short)), len(llm.encode(long))
    assert n_short + 40 <= 64 < n_long
    llm.complete([(short, "")], max_new_tokens=40)  # fits: the whole prompt, the whole budget
    assert seen[-1] == ([llm.encode(short)], 40)
    llm.complete([(long, "")], max_new_tokens=40)  # too long: at least 16 new tokens, the prompt's end kept
    assert seen[-1] == ([llm.encode(long)[-48:]], 16)


# ----------------------------------------------------------------------------- the example
def test_example_quick_run(tmp_path, capsys):
    module = load_example("agent")
    results = module.main(["--quick", "--out-dir", str(tmp_path / "run"), "--no-progress"])
    out = capsys.readouterr().out
    assert "| category | n | with tools | without tools |" in out and "well-formed tool calls" in out
    assert set(results["with_tools"]["accuracy"]) == set(CATEGORIES) | {"all"}
    assert os.path.exists(tmp_path / "run" / "model" / "model.safetensors")
    assert os.path.exists(tmp_path / "run" / "agent_results.json")
    # --init fine-tunes an existing chat model (its tokenizer, its context length) instead of a new one
    again = module.main(["--quick", "--init", str(tmp_path / "run" / "model"), "--steps", "2",
                         "--out-dir", str(tmp_path / "again"), "--no-progress"])
    assert again["settings"]["init"] == str(tmp_path / "run" / "model")
    assert again["settings"]["parameters"] == results["settings"]["parameters"]


def test_cli_agent_streams_replies_and_shows_tool_calls(tmp_path, monkeypatch, capsys):
    from minillm.cli import main
    from minillm.io import save_model
    from minillm.models.llama import ModelConfig, Transformer
    from minillm.tokenizers import BPETokenizer

    texts = [json.dumps(r["messages"]) for r in make_dialogues(30)]
    tok = BPETokenizer.train(texts, vocab_size=300, show_progress=False)
    model = Transformer(ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=tok.vocab_size, max_seq_len=96))
    save_model(model, tmp_path / "m")
    tok.save(tmp_path / "m")
    # the untrained model cannot call a tool, so script the replies the loop will see
    script = iter([_call("add", a=1234, b=4321), "5555"])
    monkeypatch.setattr("minillm.agent.core.ChatModel.stream", lambda self, *a, **k: iter([next(script)]))
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("What is 1234 + 4321?\n"))
    assert main(["agent", "--model", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert 'bot> <tool_call>{"name": "add"' in out and '[add({"a": 1234, "b": 4321}) -> 5555]' in out
    assert "bot> 5555" in out
    assert main(["agent", "--model", str(tmp_path / "m"), "--tools", "add,rm"]) == 2
    assert "unknown tool(s) ['rm']" in capsys.readouterr().err
