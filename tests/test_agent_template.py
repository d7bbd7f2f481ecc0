"""Function calling in the chat template (Happy LLM 7.3): tools in the system turn, <tool_call>
text, tool turns; the Jinja twin equals Hugging Face; the loaders and the SFT loss masks."""
import json
import warnings

import pytest

from minillm.data import SFTDataset, read_sft_conversations
from minillm.data.formats import DataFormatError, normalize_conversation
from minillm.data.sft import IGNORE_INDEX, tokenize_conversation
from minillm.tokenizers import BPETokenizer, apply_chat_template
from minillm.tokenizers.chat import chat_template_jinja, format_tool_call, prepare_messages, render_tools

ADD = {"type": "function", "function": {"name": "add", "description": "Add two numbers.", "parameters": {
    "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}}
NOW = {"type": "function", "function": {"name": "now", "description": "", "parameters": {"type": "object", "properties": {}}}}
CALL = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
CONV = [
    {"role": "user", "content": "2 + 3?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "c1", "content": "5"},
    {"role": "assistant", "content": "5"},
]


@pytest.fixture(scope="module")
def tok():
    text = apply_chat_template(CONV, tools=[ADD, NOW]) * 3 + " 你好 tool_call arguments"
    return BPETokenizer.train([text] * 5, vocab_size=320, show_progress=False)


def test_the_template_renders_tools_calls_and_results():
    text = apply_chat_template(CONV, tools=[ADD, NOW], tool_style="brief", default_system="Be brief.")
    assert text == (
        "<|im_start|>system\nBe brief.\n\nTools: add(a, b), now()<|im_end|>\n"
        "<|im_start|>user\n2 + 3?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call><|im_end|>\n'
        "<|im_start|>tool\n5<|im_end|>\n"
        "<|im_start|>assistant\n5<|im_end|>\n"
    )
    listing = render_tools([ADD], "json")
    assert listing.startswith("# Tools") and json.dumps(ADD) in listing and listing.endswith("</tools>")
    assert apply_chat_template([{"role": "system", "content": "S"}], tools=[ADD]).startswith("<|im_start|>system\nS\n\n# Tools")
    # no tools: the template is exactly the one of 5.2.4
    plain = [{"role": "user", "content": "hi"}]
    assert apply_chat_template(plain, tools=[]) == apply_chat_template(plain) == "<|im_start|>user\nhi<|im_end|>\n"
    assert format_tool_call("f", {"x": "二"}) == '<tool_call>{"name": "f", "arguments": {"x": "二"}}</tool_call>'


@pytest.mark.parametrize("messages, words", [
    ([{"role": "user", "content": "x", "tool_calls": [CALL]}], "only an assistant message can have tool_calls"),
    ([{"role": "assistant", "content": None, "tool_calls": CALL}], "'tool_calls' must be a list"),
    ([{"role": "assistant", "tool_calls": [{"function": {"name": "add", "arguments": "{a: 1}"}}]}], "not valid JSON"),
    ([{"role": "assistant", "tool_calls": [{"function": {"name": "add", "arguments": "[1]"}}]}], "must be a JSON object"),
    ([{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}], "needs a 'name'"),
    ([{"role": "assistant", "tool_calls": [{"name": "add", "arguments": 3}]}], "must be a dict or a JSON string"),
])
def test_bad_tool_calls_name_the_message(messages, words):
    with pytest.raises(ValueError, match=words) as e:
        prepare_messages(messages)
    assert "message 0" in str(e.value)


def test_bad_tools_and_styles():
    with pytest.raises(ValueError, match="tool_style must be one of"):
        apply_chat_template(CONV, tools=[ADD], tool_style="xml")
    with pytest.raises(ValueError, match=r"tools\[1\] has no function name"):
        render_tools([ADD, {"type": "function", "function": {}}])
    with pytest.raises(ValueError, match="must be a list of schemas"):
        render_tools(ADD)


def test_encode_chat_keeps_tool_text_ordinary(tok):
    ids = tok.encode_chat(CONV, tools=[ADD])
    assert ids == tok.encode(apply_chat_template(CONV, tools=[ADD]), allowed_special="all")
    assert tok.decode(ids) == apply_chat_template(CONV, tools=[ADD])


@pytest.mark.parametrize("style", ["json", "brief"])
def test_jinja_twin_equals_hugging_face_apply_chat_template(tmp_path, tok, style):
    transformers = pytest.importorskip("transformers")
    tok.save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    with_dict_args = CONV[:3] + [{"role": "assistant", "content": "ok", "tool_calls": [
        {"name": "add", "arguments": {"a": 1, "b": "二"}}, {"type": "function", "function": {"name": "now", "arguments": {}}}]}]
    for default in (None, "DEF"):
        hf.chat_template = chat_template_jinja(default, tool_style=style)
        for system in ([], [{"role": "system", "content": "S"}]):
            for tools in (None, [], [ADD, NOW]):
                for conv in (CONV, with_dict_args):
                    for gen in (False, True):
                        ours = apply_chat_template(system + conv, gen, default, tools=tools, tool_style=style)
                        theirs = hf.apply_chat_template(system + conv, tools=tools, tokenize=False, add_generation_prompt=gen)
                        assert ours == theirs, (default, system, tools, gen)


# ----------------------------------------------------------------------------- loaders
def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_loaders_accept_openai_tool_calls_and_sharegpt_function_calls(tmp_path):
    openai = {"messages": CONV, "tools": [ADD]}
    sharegpt = {"conversations": [
        {"from": "human", "value": "2 + 3?"},
        {"from": "function_call", "value": json.dumps({"name": "add", "arguments": {"a": 2, "b": 3}})},
        {"from": "observation", "value": "5"},
        {"from": "gpt", "value": "5"},
    ], "tools": json.dumps([ADD])}
    convs = list(read_sft_conversations(_write(tmp_path / "t.jsonl", [openai, sharegpt])))
    assert convs[0] == convs[1] == prepare_messages(CONV, tools=[ADD])
    assert convs[0][0]["role"] == "system" and "# Tools" in convs[0][0]["content"]
    assert convs[0][2]["content"] == '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'
    assert [m["role"] for m in convs[0]] == ["system", "user", "assistant", "tool", "assistant"]


@pytest.mark.parametrize("record, words", [
    ({"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "5"}]}, "turn 1: a tool turn must follow"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"function": {"name": "add", "arguments": "{oops"}}]}]}, "turn 0: tool call 0: .*not valid JSON"),
    ({"conversations": [{"from": "function_call", "value": "add(1, 2)"}]}, "turn 0: a function_call value must be JSON"),
    ({"messages": [{"role": "user", "content": "q", "tool_calls": [CALL]}]}, "only an assistant turn can have tool_calls"),
    ({"messages": [{"role": "user", "content": "q"}], "tools": "[{"}, "field 'tools' is a string but not JSON"),
    ({"messages": [{"role": "user", "content": "q"}], "tools": [{"type": "function"}]}, "field 'tools'.*no function name"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "unknown role 'robot'"),
])
def test_bad_tool_records_are_refused_by_line(tmp_path, record, words):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = _write(tmp_path / "s.jsonl", [good, record])
    with pytest.raises(DataFormatError, match=words) as e:
        list(read_sft_conversations(path))
    assert e.value.line == 2
    reader = read_sft_conversations(path, skip_bad_lines=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(list(reader)) == 1


def test_normalize_keeps_tool_messages_in_place():
    conv = normalize_conversation({"messages": CONV})
    assert [m["role"] for m in conv] == ["user", "assistant", "tool", "assistant"] and conv[2]["content"] == "5"


# ----------------------------------------------------------------------------- SFT masks
def test_sft_trains_the_calls_and_answers_never_the_tool_results(tok):
    conv = prepare_messages(CONV, tools=[ADD], tool_style="brief")
    ids, labels = tokenize_conversation(conv, tok)
    assert tok.decode(ids) == apply_chat_template(conv)
    trained = tok.decode([i for i, y in zip(ids, labels) if y != IGNORE_INDEX])
    assert trained == '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call><|im_end|>5<|im_end|>'
    # OpenAI tool_calls straight into SFTDataset give the same example
    ds = SFTDataset([[{"role": "system", "content": conv[0]["content"]}] + CONV], tok, 256)
    x, y = ds[0]
    assert list(x) == ids[:-1] and list(y) == labels[1:]
