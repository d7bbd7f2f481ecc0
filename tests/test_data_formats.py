"""Tests for minillm.data.formats: reading pretraining and SFT files, and their errors."""

import json
import warnings

import pytest

from minillm.data import DataFormatError, normalize_conversation, read_pretrain_texts, read_sft_conversations


def write(path, text, mode="w"):
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_pretrain_jsonl_and_txt(tmp_path):
    j = write(tmp_path / "a.jsonl", '{"text": "hello"}\n\n{"text": "汤姆去了市场。", "id": 3}\n{"text": ""}\n')
    assert list(read_pretrain_texts(j)) == ["hello", "汤姆去了市场。", ""]
    t = write(tmp_path / "b.txt", "para one\nstill one\n\n\n  \npara two\n")
    assert list(read_pretrain_texts(t)) == ["para one\nstill one", "para two"]
    # several files, in the given order; a directory gives its files sorted
    assert list(read_pretrain_texts([t, j]))[:2] == ["para one\nstill one", "para two"]
    assert list(read_pretrain_texts(tmp_path)) == ["hello", "汤姆去了市场。", "", "para one\nstill one", "para two"]


def test_utf8_bom_and_crlf(tmp_path):
    p = write(tmp_path / "bom.jsonl", '\ufeff{"text": "x"}\r\n{"text": "y"}\r\n')
    assert list(read_pretrain_texts(p)) == ["x", "y"]
    t = write(tmp_path / "crlf.txt", b"a\r\nb\r\n\r\nc\r\n", mode="wb")
    assert list(read_pretrain_texts(t)) == ["a\nb", "c"]


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"text": "ok"', "invalid JSON"),
        ('["text"]', "expected a JSON object, got list"),
        ('{"content": "x"}', "missing field 'text'"),
        ('{"text": 5}', "field 'text' must be a string, got int"),
    ],
)
def test_pretrain_bad_line_names_file_and_line(tmp_path, line, reason):
    p = write(tmp_path / "d.jsonl", '{"text": "a"}\n\n' + line + '\n{"text": "b"}\n')
    reader = read_pretrain_texts(p)
    assert next(reader) == "a"
    with pytest.raises(DataFormatError, match=reason) as e:
        list(reader)
    assert e.value.path == str(p) and e.value.line == 3
    assert str(e.value).startswith(f"{p}:3: ")
    assert isinstance(e.value, ValueError)


def test_bad_utf8_names_line(tmp_path):
    p = write(tmp_path / "u.jsonl", b'{"text": "a"}\n{"text": "\xff"}\n', mode="wb")
    with pytest.raises(DataFormatError, match=r"u\.jsonl:2: not valid UTF-8"):
        list(read_pretrain_texts(p))


def test_skip_bad_lines_counts_and_warns(tmp_path):
    p = write(tmp_path / "d.jsonl", '{"text": "a"}\nnope\n{"text": 1}\n{"text": "b"}\n')
    reader = read_pretrain_texts(p, skip_bad_lines=True)
    with pytest.warns(UserWarning, match="skipped 2 malformed"):
        assert list(reader) == ["a", "b"]
    assert reader.skipped == 2
    assert [e.line for e in reader.errors] == [2, 3]


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_pretrain_texts(tmp_path / "nope.jsonl")
    p = write(tmp_path / "x.csv", "text\nhello\n")
    with pytest.raises(DataFormatError, match="unsupported pretraining file type"):
        read_pretrain_texts(p)
    with pytest.raises(DataFormatError, match="unsupported SFT file type"):
        read_sft_conversations(write(tmp_path / "x.txt", "hi"))


def test_sft_belle_and_openai_shapes(tmp_path):
    belle = {"id": "1", "conversations": [{"from": "human", "value": "hi"}, {"from": "assistant", "value": "yo"}]}
    sharegpt = {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    openai = {"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}], "meta": {}}
    minimind = {"conversations": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}
    p = write(tmp_path / "s.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in (belle, sharegpt, openai, minimind)) + "\n")
    assert list(read_sft_conversations(p)) == [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
        [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}],
        [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
    ]


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"text": "x"}, "expected a 'conversations' or 'messages' field"),
        ({"messages": []}, "'messages' is empty"),
        ({"messages": "hi"}, "must be a list of turns"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "turn 0: a tool turn must follow an assistant turn"),
        ({"conversations": [{"from": "human", "value": "x"}, {"from": "assistant"}]}, "turn 1: missing field 'value'"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "multi-part content"),
        ({"messages": [], "conversations": []}, "ambiguous"),
        ({"messages": ["hi"]}, "turn 0: expected an object"),
    ],
)
def test_sft_bad_records(tmp_path, record, reason):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    p = write(tmp_path / "s.jsonl", json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataFormatError, match=reason) as e:
        list(read_sft_conversations(p))
    assert e.value.line == 2 and str(p) in str(e.value)
    reader = read_sft_conversations(p, skip_bad_lines=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(list(reader)) == 1
    assert reader.skipped == 1


def test_normalize_conversation_accepts_plain_lists():
    msgs = [{"role": "user", "content": "a"}]
    assert normalize_conversation(msgs) == msgs
    assert normalize_conversation({"conversations": [{"from": "Human", "value": "a"}]}) == msgs
