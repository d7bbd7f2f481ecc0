"""Optional parity tests against Hugging Face ``tokenizers`` / ``transformers`` and ``tiktoken``.

Each test skips cleanly when its library is not installed.
"""

from __future__ import annotations

import pytest

from minillm.tokenizers import GPT4_PATTERN, BPETokenizer, CharTokenizer, WordTokenizer
from minillm.tokenizers.corpus import sample_corpus

MIXED = (
    "The quick brown fox jumps over the lazy dog's tail. 12345 678!!\n"
    "大语言模型的训练需要大量的数据，数据的质量决定了模型的能力。😀 café\n\n  x = f(y)  \n"
)


@pytest.fixture(scope="module")
def corpus() -> str:
    return sample_corpus(400_000, seed=2)


@pytest.fixture(scope="module")
def bpe(corpus) -> BPETokenizer:
    return BPETokenizer.train([corpus], vocab_size=2048, show_progress=False)


def _docs(corpus: str) -> list[str]:
    return [d for d in corpus.split("\n\n") if d]


def test_hf_tokenizers_loads_our_file_and_agrees(tmp_path, bpe, corpus):
    tokenizers = pytest.importorskip("tokenizers")
    bpe.save(tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.get_vocab_size() == bpe.vocab_size
    docs = _docs(corpus)[:300] + [MIXED, MIXED + "<|im_start|>user\nhi<|im_end|>\n", "", " ", "\n\n\n"]
    for d in docs:
        ours = bpe.encode(d, allowed_special="all")
        assert hf.encode(d, add_special_tokens=False).ids == ours
        assert hf.decode(ours, skip_special_tokens=False) == d
    # add_special_tokens=True prepends BOS in both
    assert hf.encode("hello").ids == bpe.encode("hello", add_special_tokens=True)
    assert hf.token_to_id("<|im_end|>") == bpe.im_end_id == 4


def test_hf_tokenizers_agree_with_custom_pattern_and_nfkc(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    pattern = r"""\p{Han}|[\p{L}\p{M}]+| ?\p{N}|[^\s\p{L}\p{N}]+|\s+"""
    tok = BPETokenizer.train([MIXED * 10 + "ＡＢＣ①"], 6 + 256 + 100, pattern=pattern, normalization="NFKC",
                             show_progress=False)
    tok.save(tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for d in [MIXED, "ＡＢＣ①ﬁ full-width", "数字 123 45"]:
        assert hf.encode(d, add_special_tokens=False).ids == tok.encode(d)


@pytest.mark.parametrize("cls", [CharTokenizer, WordTokenizer])
def test_hf_tokenizers_load_word_level(tmp_path, cls, corpus):
    tokenizers = pytest.importorskip("tokenizers")
    tok = cls.train([corpus[:100_000]], vocab_size=800)
    tok.save(tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for d in _docs(corpus)[-50:] + [MIXED]:
        assert hf.encode(d, add_special_tokens=False).ids == tok.encode(d)
    if cls is CharTokenizer:
        ids = tok.encode(MIXED)
        assert hf.decode(ids, skip_special_tokens=False) == tok.decode(ids)
        assert hf.decode(ids) == tok.decode(ids, skip_special_tokens=True)


def test_compression_within_1pct_of_hf_bytelevel_bpe(bpe, corpus):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated"),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048, min_frequency=2, special_tokens=list(bpe.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    hf.train_from_iterator([corpus], trainer)
    assert hf.get_vocab_size() == bpe.vocab_size
    docs = _docs(corpus)
    ours = sum(len(bpe.encode(d)) for d in docs)
    theirs = sum(len(e.ids) for e in hf.encode_batch(docs, add_special_tokens=False))
    assert abs(ours - theirs) / theirs < 0.01, (ours, theirs)


def test_transformers_autotokenizer(tmp_path, bpe):
    transformers = pytest.importorskip("transformers")
    bpe.default_system = "You are a helpful assistant."
    try:
        bpe.save(tmp_path)
    finally:
        bpe.default_system = None
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id, hf.unk_token_id) == (1, 2, 5, 0)
    msgs = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "Hi!"}]
    for gen in (False, True):
        ours = bpe.apply_chat_template(msgs, add_generation_prompt=gen, default_system="You are a helpful assistant.")
        assert hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen) == ours
    with_sys = [{"role": "system", "content": "S"}] + msgs
    assert hf.apply_chat_template(with_sys, tokenize=False) == bpe.apply_chat_template(with_sys)
    assert hf(MIXED)["input_ids"] == bpe.encode(MIXED, add_special_tokens=True)
    assert hf.decode(bpe.encode(MIXED)) == MIXED


def test_tiktoken_from_our_merges(bpe, corpus):
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {bpe.id_to_bytes(i): i for i in range(bpe.vocab_size) if i not in bpe.all_special_ids}
    enc = tiktoken.Encoding("minillm", pat_str=bpe.pattern, mergeable_ranks=ranks, special_tokens=bpe.special_tokens)
    for d in _docs(corpus)[:200] + [MIXED]:
        assert enc.encode_ordinary(d) == bpe.encode(d)
