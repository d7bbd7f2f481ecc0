"""Issue 25, tokenizer files: bounded cost on hostile files (5), no silent garbage (4), no overwritten
neighbours (4). Variants of each class."""
import json
import time

import pytest

from minillm.tokenizers import GPT4_PATTERN, BPETokenizer, CharTokenizer, WordTokenizer, load_tokenizer
from minillm.tokenizers.bpe import check_pattern_cost

TEXTS = ["In the morning, Tom walks to the river. 早上，汤姆去河边。 12 + 30 = 42"] * 20


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(TEXTS, vocab_size=6 + 256 + 40, show_progress=False)


def _saved(tmp_path, tok):
    tok.save(tmp_path / "t")
    path = tmp_path / "t" / "tokenizer.json"
    return path, json.loads(path.read_text(encoding="utf-8"))


def _write(path, data):
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


# ------------------------------------------------------------------ 5. ids checked before anything is built
@pytest.mark.parametrize("where", ["added", "vocab"])
@pytest.mark.parametrize("bad_id", [300_000_000, 2**63, -1, -(2**40), 3.0, "3", True, None])
def test_bpe_file_ids_outside_the_vocab_are_refused_quickly(tmp_path, bpe, where, bad_id):
    path, data = _saved(tmp_path, bpe)
    if where == "added":
        data["added_tokens"][1]["id"] = bad_id
    else:
        data["model"]["vocab"][next(iter(k for k in data["model"]["vocab"] if len(k) > 1))] = bad_id
    _write(path, data)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"tokenizer\.json"):
        load_tokenizer(path)
    assert time.perf_counter() - t0 < 10  # no table sized by the id (that took 25 s and 6 GB): a generous bound for busy machines


@pytest.mark.parametrize("cls", [WordTokenizer, CharTokenizer])
@pytest.mark.parametrize("bad_id", [300_000_000, -3, 2.5, False])
def test_word_level_file_ids_are_checked(tmp_path, cls, bad_id):
    tok = cls.train(TEXTS, vocab_size=40) if cls is WordTokenizer else cls.train(TEXTS)
    path, data = _saved(tmp_path, tok)
    data["model"]["vocab"][next(k for k in data["model"]["vocab"] if not k.startswith("<"))] = bad_id
    _write(path, data)
    with pytest.raises(ValueError, match=r"tokenizer\.json"):
        load_tokenizer(path)


# ------------------------------------------------------------------ 5. the file's regex
@pytest.mark.parametrize("pattern", [r"(a|a)+$", r"(a|aa)+$", r"(\s|\s)+$", r"(1|1)+$"])
def test_catastrophic_pre_tokenizer_pattern_is_refused_at_load(tmp_path, bpe, pattern):
    path, data = _saved(tmp_path, bpe)
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = pattern
    _write(path, data)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="backtracks catastrophically"):
        load_tokenizer(path)
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("pattern", [GPT4_PATTERN, r"\p{L}+|\p{N}|[^\p{L}\p{N}]+", r" ?\w+|\s+|."])
def test_reasonable_patterns_still_load_and_round_trip(tmp_path, bpe, pattern):
    check_pattern_cost(pattern, "test")
    path, data = _saved(tmp_path, bpe)
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = pattern
    _write(path, data)
    tok = load_tokenizer(path)
    assert tok.decode(tok.encode(TEXTS[0])) == TEXTS[0]


def test_a_slow_pattern_on_use_raises_instead_of_hanging(bpe, monkeypatch):
    import minillm.tokenizers.bpe as bpe_mod

    tok = BPETokenizer(pattern=r"(x|x)+y|.", special_tokens=["<unk>"])  # passes the probes (no 'x' in them)
    monkeypatch.setattr(bpe_mod, "regex_timeout", lambda n: 0.2)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="catastrophic backtracking"):
        tok.encode("x" * 40)
    assert time.perf_counter() - t0 < 10
    assert tok.decode(tok.encode("hello")) == "hello"  # ordinary text is fine


def test_invalid_pattern_in_file_is_named(tmp_path, bpe):
    path, data = _saved(tmp_path, bpe)
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"
    _write(path, data)
    with pytest.raises(ValueError, match=r"tokenizer\.json: invalid pre_tokenizer pattern"):
        load_tokenizer(path)


# ------------------------------------------------------------------ 4. save next to another tokenizer
@pytest.mark.parametrize("name", ["other.json", "tok2.json", "a.b.json"])
def test_saving_under_another_name_keeps_the_neighbour_intact(tmp_path, bpe, name):
    first = BPETokenizer.train(TEXTS, vocab_size=6 + 256 + 20, show_progress=False)
    first.default_system = "You are the first."
    first.save(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    bpe.default_system = "You are the second."
    try:
        bpe.save(tmp_path / name)
    finally:
        bpe.default_system = None
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {k: after[k] for k in before} == before  # tokenizer.json, tokenizer_config.json, merges.txt untouched
    stem = name[: -len(".json")]
    assert set(after) - set(before) == {name, f"{stem}_config.json"}
    one, two = load_tokenizer(tmp_path), load_tokenizer(tmp_path / name)
    assert one.default_system == "You are the first." and two.default_system == "You are the second."
    assert one.vocab_size == first.vocab_size and two.vocab_size == bpe.vocab_size


def test_saving_to_a_config_name_is_refused(tmp_path, bpe):
    with pytest.raises(ValueError, match="config file name"):
        bpe.save(tmp_path / "tokenizer_config.json")


@pytest.mark.parametrize("field, value", [("default_system", 3), ("default_system", ["hi"]), ("default_system", True),
                                          ("class", 5), ("minillm", "BPETokenizer")])
def test_tokenizer_config_fields_are_type_checked(tmp_path, bpe, field, value):
    bpe.save(tmp_path)
    cfg_path = tmp_path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if field == "minillm":
        cfg["minillm"] = value
    else:
        cfg["minillm"][field] = value
    _write(cfg_path, cfg)
    with pytest.raises(ValueError, match=r"tokenizer_config\.json.*(minillm|default_system|class)"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("role, value", [("eos_token", 5), ("pad_token", ["<pad>"])])
def test_tokenizer_config_role_names_are_type_checked(tmp_path, bpe, role, value):
    bpe.save(tmp_path)
    cfg_path = tmp_path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg[role] = value
    _write(cfg_path, cfg)
    with pytest.raises(ValueError, match=role):
        load_tokenizer(tmp_path)
