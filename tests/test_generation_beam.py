"""Beam search (minillm.generation.beam) for decoder-only LLaMA2 and for encoder-decoder models:
num_beams=1 is greedy, a wide enough beam finds the best sequence (brute force over a tiny
vocabulary), num_return_sequences ordering, padded batches, bad arguments, and (optional)
the same token ids as transformers' beam search on an exported LLaMA."""
import itertools
from types import SimpleNamespace

import numpy as np
import pytest

import minillm as mi
import minillm.nn as nn
import minillm.nn.functional as F
from minillm.generation import GenerationConfig, generate
from minillm.models.llama import ModelConfig, Transformer
from minillm.nn.kv_cache import KVCache
from _helpers import scramble


# ----------------------------------------------------------------------------- models
def llama(V=4, seed=0, std=0.8, dtype=np.float64, **kw):
    mi.manual_seed(seed)
    cfg = dict(dim=16, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=V, max_seq_len=24)
    cfg.update(kw)
    model = Transformer(ModelConfig(**cfg))
    return scramble(model, std).to(dtype).eval()  # large weights: peaked, prompt-dependent distributions


class TinySeq2Seq(nn.Module):
    """A test-only encoder-decoder following generation's protocol: the memory is the embedded
    source; the decoder adds its masked mean to every target position, then runs one causal
    self-attention layer (KV-cached) and an output head."""

    is_encoder_decoder = True

    def __init__(self, V=4, C=16, max_seq_len=8, seed=0):
        super().__init__()
        mi.manual_seed(seed)
        self.config = SimpleNamespace(max_seq_len=max_seq_len, vocab_size=V)
        self.C = C
        self.src_emb, self.tgt_emb, self.pos_emb = nn.Embedding(V, C), nn.Embedding(V, C), nn.Embedding(max_seq_len, C)
        self.wq, self.wk, self.wv = (nn.Linear(C, C, bias=False) for _ in range(3))
        self.head = nn.Linear(C, V)
        for p in self.parameters():
            nn.init.normal_(p, 0.0, 0.7)
        self.to(np.float64)
        self.encode_calls = 0

    def encode(self, src_ids, src_mask):
        self.encode_calls += 1
        return self.src_emb(np.asarray(src_ids))  # (B, S) -> (B, S, C)

    def new_kv_cache(self, batch_size, max_len):
        return [KVCache(batch_size, 1, self.C, max_len, np.float64)]

    def decode(self, tgt_ids, memory, src_mask, kv_cache=None):
        tgt_ids = np.asarray(tgt_ids)
        B, T = tgt_ids.shape
        start = kv_cache[0].length if kv_cache is not None else 0
        m = np.ones(memory.shape[:2]) if src_mask is None else np.asarray(src_mask, dtype=np.float64)  # (B, S)
        pooled = (memory * mi.tensor(m[:, :, None])).sum(dim=1) / mi.tensor(m.sum(axis=1, keepdims=True))  # (B, C)
        h = self.tgt_emb(tgt_ids) + self.pos_emb(np.arange(start, start + T)) + pooled.view(B, 1, self.C)  # (B, T, C)
        q, k, v = (w(h).view(B, T, 1, self.C).transpose(1, 2) for w in (self.wq, self.wk, self.wv))  # (B, 1, T, C)
        if kv_cache is not None:
            k, v = kv_cache[0].update(k, v)  # (B, 1, P+T, C)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, 1, T, C)
        return self.head(h + a.transpose(1, 2).reshape(B, T, self.C))  # (B, T, V)


# ----------------------------------------------------------------------------- brute force
def next_logprobs_fn(model, prompt, start=None):
    """prefix (list) -> log-probs (V,) of the token after prompt + prefix, from a full forward pass."""

    def f(prefix):
        with mi.no_grad():
            if getattr(model, "is_encoder_decoder", False):
                memory = model.encode(np.array([prompt]), None)
                logits = model.decode(np.array([[start] + prefix]), memory, None).data[0, -1]
            else:
                logits = model(np.array([prompt + prefix])).logits.data[0, -1]
        x = logits.astype(np.float64) - logits.max()
        return x - np.log(np.exp(x).sum())

    return f


def all_scored(next_logprobs, V, length, eos, length_penalty):
    """Every sequence beam search can return (ending with EOS, or of the full length), with
    HF's score: sum log-probs / (length with EOS) ** length_penalty. Best first."""
    cache, out = {}, []
    for n in range(1, length + 1):
        for seq in itertools.product(range(V), repeat=n):
            if eos in seq[:-1] or (n < length and seq[-1] != eos):
                continue
            total = 0.0
            for i, tok in enumerate(seq):
                key = seq[:i]
                if key not in cache:
                    cache[key] = next_logprobs(list(key))
                total += cache[key][tok]
            out.append((total / n**length_penalty, [t for t in seq if t != eos]))
    out.sort(key=lambda item: -item[0])
    return out


def llama_case():
    return llama(V=4, seed=1), [1, 2, 3]


def seq2seq_case():
    return TinySeq2Seq(V=4, seed=2), [1, 3, 0, 2]


@pytest.mark.parametrize("case", [llama_case, seq2seq_case], ids=["llama", "seq2seq"])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, -0.7, 2.0])
def test_wide_beam_finds_the_best_sequences(case, length_penalty):
    """With num_beams >= V^(length-1) every prefix stays in the beam, so beam search must
    return exactly the brute-force ranking (early_stopping="never": the exact stopping rule)."""
    model, prompt = case()
    V, L, eos, start = 4, 3, 0, 3
    enc_dec = getattr(model, "is_encoder_decoder", False)
    ranked = all_scored(next_logprobs_fn(model, prompt, start), V, L, eos, length_penalty)
    nb = V ** (L - 1)
    kw = dict(decoder_start_token_id=start) if enc_dec else {}
    got = generate(model, prompt, L, num_beams=nb, num_return_sequences=nb, eos_token_id=eos,
                   length_penalty=length_penalty, early_stopping="never", **kw)
    want = [seq for _, seq in ranked[:nb]]
    assert got == want
    assert len({tuple(s) for s in want}) == nb and len({len(s) for s in want}) > 1  # varied lengths: a real test
    # a narrow beam is not exhaustive, but its best is never better than the true best
    narrow = generate(model, prompt, L, num_beams=2, eos_token_id=eos, length_penalty=length_penalty, **kw)
    assert narrow in [seq for _, seq in ranked]


@pytest.mark.parametrize("case", [llama_case, seq2seq_case], ids=["llama", "seq2seq"])
def test_num_beams_1_is_greedy(case):
    model, prompt = case()
    kw = dict(decoder_start_token_id=3) if getattr(model, "is_encoder_decoder", False) else {}
    for eos in (None, 0, 2):
        greedy = generate(model, prompt, 6, temperature=0, eos_token_id=eos, **kw)
        assert generate(model, prompt, 6, num_beams=1, do_sample=False, eos_token_id=eos, **kw) == greedy
        # the beam machinery with a single beam picks the argmax too
        from minillm.generation.beam import beam_search
        from minillm.generation import _Job

        with mi.no_grad():
            job = _Job(model, prompt, None, GenerationConfig(max_new_tokens=6, temperature=0, eos_token_id=eos, **kw))
            assert beam_search(job.runner, job.config, 6, job.context_ids, job.context_mask) == [greedy]


def test_cache_and_no_cache_and_fused_agree_for_beams():
    model = llama(V=50, seed=3, std=0.5, dtype=np.float32, max_seq_len=16)
    prompts = [[1, 2, 3, 4], [7], [9, 9, 8]]
    ref = generate(model, prompts, 14, num_beams=3, num_return_sequences=2, eos_token_id=5, use_cache=False)
    assert generate(model, prompts, 14, num_beams=3, num_return_sequences=2, eos_token_id=5) == ref  # fused + cache
    assert generate(model, prompts, 14, num_beams=3, num_return_sequences=2, eos_token_id=5, fused_decode=False) == ref
    # 4 + 14 > max_seq_len 16: the context was cropped on the way, identically on every path
    alone = [generate(model, p, 14, num_beams=3, num_return_sequences=2, eos_token_id=5) for p in prompts]
    assert ref == [s for pair in alone for s in pair]  # a left-padded batch gives each prompt's own beams


def test_seq2seq_encodes_once_and_padded_sources_match_alone():
    model = TinySeq2Seq(V=6, seed=4)
    srcs = [[1, 2, 3, 4], [5, 1]]
    batch = generate(model, srcs, 5, num_beams=3, decoder_start_token_id=0, eos_token_id=2)
    assert model.encode_calls == 1  # the encoder runs once for all beams
    assert batch == [generate(model, s, 5, num_beams=3, decoder_start_token_id=0, eos_token_id=2) for s in srcs]
    assert batch == generate(model, srcs, 5, num_beams=3, decoder_start_token_id=0, eos_token_id=2, use_cache=False)
    # greedy and sampling work on the encoder-decoder too, with and without the cache
    g = generate(model, srcs, 5, temperature=0, decoder_start_token_id=0)
    assert g == generate(model, srcs, 5, temperature=0, decoder_start_token_id=0, use_cache=False)
    s = generate(model, srcs, 5, temperature=1.0, seed=1, decoder_start_token_id=0)
    assert s == generate(model, srcs, 5, temperature=1.0, seed=1, decoder_start_token_id=0, use_cache=False)
    assert all(0 <= t < 6 for row in s for t in row)
    # the target cannot outgrow max_seq_len (8, including the start token)
    assert len(generate(model, srcs[0], 50, temperature=0, decoder_start_token_id=0)) == 7


def test_num_return_sequences_are_best_first_and_distinct():
    model = llama(V=30, seed=5, std=0.6)
    prompt = [1, 2, 3]
    out = generate(model, prompt, 6, num_beams=5, num_return_sequences=5)
    assert len(out) == 5 and len({tuple(s) for s in out}) == 5
    f = next_logprobs_fn(model, prompt)
    scores = [sum(f(s[:i])[t] for i, t in enumerate(s)) / len(s) for s in out]  # no EOS: all length 6
    assert scores == sorted(scores, reverse=True)
    assert generate(model, prompt, 6, num_beams=5, num_return_sequences=2) == out[:2]
    assert generate(model, prompt, 6, num_beams=5) == out[0]


def test_early_stopping_true_stops_once_num_beams_hypotheses_exist(monkeypatch):
    from minillm.generation.decode import CausalLMRunner

    model = llama(V=4, seed=1)
    prompt, eos = [1, 2, 3], 0
    steps = []
    step = CausalLMRunner.step
    monkeypatch.setattr(CausalLMRunner, "step", lambda self, nxt: (steps.append(1), step(self, nxt))[1])
    out = generate(model, prompt, 10, num_beams=2, num_return_sequences=2, eos_token_id=eos, early_stopping=True)
    n_true, steps[:] = len(steps), []
    never = generate(model, prompt, 10, num_beams=2, num_return_sequences=2, eos_token_id=eos, early_stopping="never")
    assert n_true < len(steps) and n_true < 9  # stopped before max_new_tokens, and before the exact rule did
    # it stopped at the step that finished the second hypothesis: that one has n_true tokens + EOS
    assert max(len(s) for s in out) == n_true
    assert out != never and all(0 < t < 4 for s in out + never for t in s)  # EOS is never returned


def test_bad_beam_arguments():
    model = llama(V=10)
    with pytest.raises(ValueError, match=r"num_return_sequences \(3\) must be <= num_beams \(2\)"):
        generate(model, [1, 2], 3, num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="GenerationConfig.num_beams"):
        generate(model, [1, 2], 3, num_beams=0)
    with pytest.raises(ValueError, match="GenerationConfig.early_stopping"):
        generate(model, [1, 2], 3, num_beams=2, early_stopping="sometimes")
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        generate(TinySeq2Seq(), [1, 2], 3, num_beams=2)
    assert generate(model, [1, 2], 0, num_beams=2) == []


# ----------------------------------------------------------------------------- HF parity (optional)
@pytest.mark.parametrize(
    "settings",
    [
        dict(length_penalty=1.0, early_stopping=False),
        dict(length_penalty=0.5, early_stopping=True),
        dict(length_penalty=2.0, early_stopping="never"),
        dict(length_penalty=-1.0, early_stopping=False, num_return_sequences=3),
    ],
)
def test_beam_search_matches_transformers(tmp_path, settings):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from minillm.io import export_hf

    mi.manual_seed(0)
    V = 48
    model = Transformer(ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=V, max_seq_len=64))
    scramble(model, 0.1, vectors=(0.5, 1.5)).eval()
    export_hf(model, tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    settings = {"num_return_sequences": 4, **settings}  # compare every returned hypothesis, in order
    n = settings["num_return_sequences"]
    rng = np.random.default_rng(0)
    found_eos = False
    for _ in range(3):
        prompt = rng.integers(0, V, size=10).tolist()
        eos = generate(model, prompt, 4, temperature=0)[3]  # a token the model is likely to produce: EOS matters
        ours = generate(model, prompt, 12, num_beams=4, eos_token_id=eos, **settings)
        ours = ours if n > 1 else [ours]
        with torch.no_grad():
            theirs = hf.generate(
                torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long), max_new_tokens=12,
                num_beams=4, do_sample=False, eos_token_id=eos, pad_token_id=eos, **settings,
            )[:, len(prompt) :].tolist()
        theirs = [row[: row.index(eos)] if eos in row else row for row in theirs]  # HF pads with pad = eos
        assert ours == theirs
        found_eos |= any(len(s) < 12 for s in ours)
    # some hypotheses ended with EOS, so length_penalty and early_stopping mattered (length_penalty 2
    # favours long sequences so strongly that the best four run to max_new_tokens)
    assert found_eos or settings["length_penalty"] > 1
