"""Benchmark: decoding speed of the LLaMA2 model (Happy LLM 5.1.6 / generation), batch 1.

For each preset (``tiny``, ``small``) it measures greedy generation with minillm

* with the KV cache and the fused decode step (``FusedDecoder``: one kernel call per token
  for the whole model; the default of ``generate``, after it checked the kernel against the
  model's modules on the prompt),
* with the KV cache through the model's modules (``fused_decode=False``: ~100 autograd ops
  per token), and
* without a cache (the book's loop: the whole prefix again for every token),

speculative (assisted) decoding with a draft model (``generate(..., assistant_model=draft)``).
Nothing is trained, and that shapes what these rows mean: at random init with tied embeddings
a model's logits are about its last token's embedding dotted with every embedding, so every
such model greedily repeats its last token, and any such draft "agrees" with the target
(acceptance 1.0): the rows with a ``tiny`` draft (for presets larger than ``tiny``) and with a
copy of the model truncated to its first layer measure the best case of the machinery. A
``tiny`` draft with an untied output head predicts an unrelated token (acceptance ~0): the
worst case, k wasted draft steps per token. The "accept" column is the share of draft tokens
the target kept.

And, when torch is installed, a plain PyTorch eager LLaMA with the *same weights* (the
same interleaved RoPE; a hand-written decoding loop with a preallocated KV cache).
Every implementation must produce the same greedy tokens (checked) before its speed
counts. All libraries get the same number of threads (``--threads``; set before NumPy,
Numba and torch start their thread pools).

GPT-2 and T5 (Happy LLM 3.3.1 / 3.2.1, ``--families``; their ``tiny`` preset only): minillm with
the KV cache (``generation.generate`` for GPT, ``models.t5.greedy_generate`` for T5; the fused
kernel is LLaMA's only) and without a cache for GPT, against Hugging Face's
``GPT2LMHeadModel`` / ``T5ForConditionalGeneration`` (PyTorch eager, its own KV cache) loaded
from our export, so both hold the same weights and must give the same tokens. T5's prompt is the
encoder's input; its new tokens come from the decoder.

    python benchmarks/generate.py                    # tiny + small, 64 new tokens after a 32-token prompt
    python benchmarks/generate.py --threads 2 --json

"prefill ms" is the time to produce the first new token; "decode tok/s" counts the
remaining tokens: (N - 1) / (time(N tokens) - time(1 token)).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "small"])
    p.add_argument("--families", nargs="+", default=["llama", "gpt", "t5"], choices=["llama", "gpt", "t5"],
                   help="model families (GPT and T5 at the presets they have)")
    p.add_argument("--vocab-size", type=int, default=6144, help="the book's tokenizer size")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="best of N timings")
    p.add_argument("--threads", type=int, default=1, help="threads for BLAS, Numba and torch (default 1: batch-1 decoding is latency bound)")
    p.add_argument("--kernels", default="numba", choices=["numba", "numpy"])
    p.add_argument("--assistant-tokens", type=int, default=4, help="draft tokens per round for speculative decoding")
    p.add_argument("--batch-sizes", type=int, nargs="*", default=[8, 16, 32],
                   help="batched greedy decoding of this many left-padded prompts (LLaMA; none to skip)")
    p.add_argument("--score-questions", type=int, default=16,
                   help="log-likelihood scoring: questions of 4 choices each, with and without context reuse (0 to skip)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p.parse_args(argv)


ARGS = parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)  # before numpy / numba / torch are imported

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import minillm as mi  # noqa: E402
from minillm.generation import GenerationConfig, generate  # noqa: E402
from minillm.generation.speculative import AssistedStats, assisted_decode  # noqa: E402
from minillm.models.llama import ModelConfig, Transformer  # noqa: E402


# ------------------------------------------------------------------------------ PyTorch baseline
def torch_llama(model):
    """A plain PyTorch LLaMA holding ``model``'s weights, with a greedy KV-cache decoding loop:
    ``run(prompt, n)`` -> n new ids (``torch_llama_batched`` with one row: no padding, so no mask)."""
    batched = torch_llama_batched(model)
    return lambda prompt, n_new: batched([prompt], n_new)[0]


def torch_llama_batched(model):
    """A plain PyTorch LLaMA holding ``model``'s weights, greedy with a KV cache, for a batch of
    prompts of different lengths, left-padded as ``generate`` pads them: a padding mask on the
    keys, RoPE positions counted from each row's first real token. Without padding (one prompt,
    or equal lengths) no mask is built and SDPA runs with ``is_causal``, its fastest path.
    ``run(prompts, n)`` -> n new ids per prompt."""
    import torch
    import torch.nn.functional as TF

    a = model.args
    W = {k: torch.from_numpy(v.data.copy()) for k, v in model.state_dict().items()}
    cos = torch.from_numpy(model.freqs_cos.data.copy())  # (max_seq_len, D/2)
    sin = torch.from_numpy(model.freqs_sin.data.copy())
    H, Hkv, D = a.n_heads, a.n_kv_heads, a.head_dim

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + a.norm_eps) * w

    def rope(x, c, s):  # x (B, T, H, D); c, s (B, T, D/2)
        xr, xi = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
        c, s = c[:, :, None, :], s[:, :, None, :]
        return torch.stack([xr * c - xi * s, xr * s + xi * c], dim=-1).flatten(3)

    def forward(ids, pos, attn_mask, cache, start):
        B, T = ids.shape
        h = W["tok_embeddings.weight"][ids]
        c, s = cos[pos], sin[pos]  # (B, T, D/2)
        for i in range(a.n_layers):
            p = f"layers.{i}."
            x = rms(h, W[p + "attention_norm.weight"])
            q = TF.linear(x, W[p + "attention.wq.weight"]).view(B, T, H, D)
            k = TF.linear(x, W[p + "attention.wk.weight"]).view(B, T, Hkv, D)
            v = TF.linear(x, W[p + "attention.wv.weight"]).view(B, T, Hkv, D)
            q, k = rope(q, c, s).transpose(1, 2), rope(k, c, s).transpose(1, 2)
            kc, vc = cache[i]
            kc[:, :, start : start + T] = k
            vc[:, :, start : start + T] = v.transpose(1, 2)
            o = TF.scaled_dot_product_attention(q, kc[:, :, : start + T], vc[:, :, : start + T], attn_mask=attn_mask,
                                                is_causal=attn_mask is None and T > 1, enable_gqa=True)
            h = h + TF.linear(o.transpose(1, 2).reshape(B, T, H * D), W[p + "attention.wo.weight"])
            x = rms(h, W[p + "ffn_norm.weight"])
            gate = TF.silu(TF.linear(x, W[p + "feed_forward.w1.weight"])) * TF.linear(x, W[p + "feed_forward.w3.weight"])
            h = h + TF.linear(gate, W[p + "feed_forward.w2.weight"])
        h = rms(h[:, -1:], W["norm.weight"])
        return TF.linear(h, W["output.weight"])  # (B, 1, V)

    @torch.inference_mode()
    def run(prompts, n_new):
        B, T = len(prompts), max(map(len, prompts))
        ids = torch.zeros(B, T, dtype=torch.long)
        valid = torch.zeros(B, T, dtype=torch.bool)  # left padding
        for b, p in enumerate(prompts):
            ids[b, T - len(p):] = torch.tensor(p)
            valid[b, T - len(p):] = True
        pos = (valid.long().cumsum(1) - 1).clamp(min=0)  # (B, T)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        # padded query rows see themselves, so no row is all -inf (their outputs are never used)
        mask = (causal[None] & valid[:, None, :]) | torch.eye(T, dtype=torch.bool)[None]  # (B, T, T)
        cache = [(torch.zeros(B, Hkv, a.max_seq_len, D), torch.zeros(B, Hkv, a.max_seq_len, D)) for _ in range(a.n_layers)]
        padded = not bool(valid.all())
        logits = forward(ids, pos, mask[:, None] if padded else None, cache, 0)
        last, out = pos[:, -1], []
        for step in range(n_new):
            nxt = logits[:, -1].argmax(-1)  # (B,)
            out.append(nxt)
            if len(out) == n_new:
                break
            valid = torch.cat([valid, torch.ones(B, 1, dtype=torch.bool)], dim=1)
            last = last + 1
            logits = forward(nxt[:, None], last[:, None], valid[:, None, None, :] if padded else None, cache, T + step)
        return torch.stack(out, 1).tolist()

    return run


# ------------------------------------------------------------------------------ drafts
def truncated_copy(model, n_layers=1):
    """The model cut to its first ``n_layers`` layers (same embeddings, norm and head)."""
    draft = Transformer(dataclasses.replace(model.args, n_layers=n_layers))
    keep = {k: v for k, v in model.state_dict().items() if not k.startswith("layers.") or int(k.split(".")[1]) < n_layers}
    draft.load_state_dict(keep)
    return draft.eval()


def acceptance(model, draft, prompt, n_new):
    stats = AssistedStats()
    cfg = GenerationConfig(max_new_tokens=n_new, temperature=0, num_assistant_tokens=ARGS.assistant_tokens)
    with mi.no_grad():
        list(assisted_decode(model, draft, np.array(prompt), cfg, None, stats))
    return stats.acceptance_rate


def hf_twin(model, family):
    """Hugging Face's model with our weights (through our exporter); ``run(prompt, n)`` -> n new ids."""
    import tempfile

    import torch
    import transformers

    from minillm.io import export_hf_gpt2, export_hf_t5

    folder = tempfile.mkdtemp(prefix=f"hf_{family}_")
    if family == "gpt":
        export_hf_gpt2(model, folder)
        hf = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    else:
        export_hf_t5(model, folder)
        hf = transformers.T5ForConditionalGeneration.from_pretrained(folder).eval()
    hf.generation_config.eos_token_id = None  # always n tokens, as our rows
    hf.generation_config.pad_token_id = 0

    def run(prompt, n_new):
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), max_new_tokens=n_new, do_sample=False, num_beams=1)
        return out[0, len(prompt):].tolist() if family == "gpt" else out[0, 1:].tolist()  # T5: drop the start token

    return run


def family_impls(family, preset):
    """(model, {name: run}) for GPT-2 or T5 at ``preset``, or None if the family lacks it."""
    if family == "gpt":
        from minillm.models.gpt import GPT, GPTConfig

        if preset not in GPTConfig.PRESETS:
            return None
        model = GPT(GPTConfig.preset(preset, vocab_size=ARGS.vocab_size)).eval()
        return model, {
            "GPT-2 minillm + KV cache": lambda p, n: generate(model, p, n, temperature=0),
            "GPT-2 minillm, no cache": lambda p, n: generate(model, p, n, temperature=0, use_cache=False),
        }
    from minillm.models.t5 import T5Config, T5ForConditionalGeneration, greedy_generate

    if preset not in T5Config.PRESETS:
        return None
    model = T5ForConditionalGeneration(T5Config.preset(preset, vocab_size=ARGS.vocab_size, dropout_rate=0.0)).eval()
    return model, {"T5 minillm + KV cache": lambda p, n: greedy_generate(model, [p], None, n, eos_token_id=-1)[0]}


# ------------------------------------------------------------------------------ timing
def best_time(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def measure(run, prompt, n_new, repeats):
    run(prompt, 2)  # warm-up (JIT, caches)
    t1, _ = best_time(lambda: run(prompt, 1), repeats)
    tn, tokens = best_time(lambda: run(prompt, n_new), repeats)
    # On a busy machine the best 1-token run can take longer than the best N-token run: no rate then.
    rate = (n_new - 1) / (tn - t1) if tn > t1 else float("nan")
    return {"prefill_ms": 1000 * t1, "decode_tok_s": rate, "tokens": tokens}


def batched_rows(preset, B, have_torch):
    """Greedy decoding of B prompts of different lengths (prompt_len/2 .. prompt_len), left-padded."""
    mi.manual_seed(0)
    model = Transformer(ModelConfig.preset(preset, vocab_size=ARGS.vocab_size)).eval()
    rng = np.random.default_rng(B)
    prompts = [rng.integers(0, ARGS.vocab_size, int(rng.integers(ARGS.prompt_len // 2, ARGS.prompt_len + 1))).tolist()
               for _ in range(B)]
    impls = {
        "minillm fused decode": lambda p, n: generate(model, p, n, temperature=0),
        "minillm + KV cache, modules": lambda p, n: generate(model, p, n, temperature=0, fused_decode=False),
    }
    if have_torch:
        impls["PyTorch eager + KV cache"] = torch_llama_batched(model)
    # Contenders interleaved, best of `repeats` for 1 and for N tokens each: on a shared machine a
    # slow moment then hits every contender alike instead of one whole row.
    best, tokens = {}, {}
    for name, run in impls.items():
        run(prompts, 2)  # warm-up (JIT, caches)
    for _ in range(ARGS.repeats):
        for name, run in impls.items():
            for n in (1, ARGS.new_tokens):
                t = time.perf_counter()
                out = run(prompts, n)
                best[name, n] = min(best.get((name, n), float("inf")), time.perf_counter() - t)
                tokens[name] = out
    rows, reference = [], None
    for name in impls:
        t1, tn = best[name, 1], best[name, ARGS.new_tokens]
        reference = tokens[name] if reference is None else reference
        rate = B * (ARGS.new_tokens - 1) / (tn - t1) if tn > t1 else float("nan")
        rows.append({"preset": preset, "params": model.num_parameters(), "impl": name, "batch": B,
                     "prefill_ms": round(1000 * t1, 2), "decode_tok_s": round(rate, 1),
                     "same_tokens": tokens[name] == reference, "accept": None})
    return rows


def scoring_rows(preset):
    """``ModelLM.loglikelihood_tokens`` on multiple-choice requests (a context of ~prompt_len*3
    tokens, 4 choices of 2-8 tokens): the context once + a KV-cache copy per choice, against
    scoring every (context, choice) sequence whole. Same scores required."""
    from types import SimpleNamespace

    from minillm.eval.harness import ModelLM

    mi.manual_seed(0)
    model = Transformer(ModelConfig.preset(preset, vocab_size=ARGS.vocab_size)).eval()
    lm = ModelLM(model, SimpleNamespace(eos_token_id=0), batch_size=32)
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(ARGS.score_questions):
        ctx = rng.integers(0, ARGS.vocab_size, 3 * ARGS.prompt_len).tolist()
        pairs += [(ctx, rng.integers(0, ARGS.vocab_size, int(rng.integers(2, 9))).tolist()) for _ in range(4)]
    seqs = [(c + x, len(x)) for c, x in pairs]

    def whole():
        out = [0.0] * len(pairs)
        with mi.no_grad(), model.mode(training=False):
            lm._score_full(seqs, list(range(len(pairs))), out)
        return out

    whole()  # warm-up
    t_shared, shared = best_time(lambda: lm.loglikelihood_tokens(pairs), ARGS.repeats)
    t_whole, full = best_time(whole, ARGS.repeats)
    same = bool(np.allclose(shared, full, rtol=1e-4, atol=1e-4))
    return [{"preset": preset, "requests": len(pairs), "impl": name, "seconds": round(t, 4),
             "pairs_per_s": round(len(pairs) / t, 1), "same_scores": same}
            for name, t in (("context once + KV cache per choice", t_shared), ("every pair whole", t_whole))]


def main():
    mi.set_kernels(ARGS.kernels)
    have_torch = False
    if not ARGS.no_torch:
        try:
            import torch

            torch.set_num_threads(ARGS.threads)
            have_torch = True
        except ImportError:
            pass
    rows = []
    for preset in (ARGS.presets if "llama" in ARGS.families else ()):
        mi.manual_seed(0)
        cfg = ModelConfig.preset(preset, vocab_size=ARGS.vocab_size)
        if ARGS.prompt_len + ARGS.new_tokens > cfg.max_seq_len:
            raise SystemExit(f"prompt + new tokens ({ARGS.prompt_len + ARGS.new_tokens}) exceed max_seq_len {cfg.max_seq_len}")
        model = Transformer(cfg).eval()
        prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, ARGS.prompt_len).tolist()
        impls = {
            "minillm fused decode": lambda p, n: generate(model, p, n, temperature=0),
            "minillm + KV cache, modules": lambda p, n: generate(model, p, n, temperature=0, fused_decode=False),
            "minillm, no cache (book)": lambda p, n: generate(model, p, n, temperature=0, use_cache=False),
        }
        drafts = {}
        mi.manual_seed(1)
        if preset != "tiny":
            drafts["speculative, draft tiny"] = Transformer(ModelConfig.preset("tiny", vocab_size=ARGS.vocab_size)).eval()
        drafts["speculative, draft 1st layer"] = truncated_copy(model, 1)
        untied = ModelConfig.preset("tiny", vocab_size=ARGS.vocab_size, tie_word_embeddings=False)
        drafts["speculative, draft tiny untied"] = Transformer(untied).eval()
        k = ARGS.assistant_tokens
        for name, draft in drafts.items():
            impls[name] = lambda p, n, d=draft: generate(model, p, n, temperature=0, assistant_model=d, num_assistant_tokens=k)
        if have_torch:
            impls["PyTorch eager + KV cache"] = torch_llama(model)
        reference = None
        for name, run in impls.items():
            r = measure(run, prompt, ARGS.new_tokens, ARGS.repeats)
            reference = r["tokens"] if reference is None else reference
            rows.append({
                "preset": preset, "params": model.num_parameters(), "impl": name, "batch": 1, "prefill_ms": round(r["prefill_ms"], 2),
                "decode_tok_s": round(r["decode_tok_s"], 1), "same_tokens": r["tokens"] == reference,
                "accept": round(acceptance(model, drafts[name], prompt, ARGS.new_tokens), 3) if name in drafts else None,
            })
    for preset in (ARGS.presets if "llama" in ARGS.families else ()):
        for B in ARGS.batch_sizes:
            rows += batched_rows(preset, B, have_torch)
    for family in ARGS.families:
        if family == "llama":
            continue
        for preset in ARGS.presets:
            mi.manual_seed(0)
            built = family_impls(family, preset)
            if built is None:
                continue
            model, impls = built
            if have_torch:
                try:
                    impls[f"{'GPT-2' if family == 'gpt' else 'T5'} transformers (eager) + KV cache"] = hf_twin(model, family)
                except ImportError:
                    pass
            prompt = np.random.default_rng(0).integers(0, ARGS.vocab_size, ARGS.prompt_len).tolist()
            reference = None
            for name, run in impls.items():
                r = measure(run, prompt, ARGS.new_tokens, ARGS.repeats)
                reference = r["tokens"] if reference is None else reference
                rows.append({"preset": preset, "params": model.num_parameters(), "impl": name, "batch": 1,
                             "prefill_ms": round(r["prefill_ms"], 2), "decode_tok_s": round(r["decode_tok_s"], 1),
                             "same_tokens": r["tokens"] == reference, "accept": None})
    scoring = [r for preset in (ARGS.presets if ARGS.score_questions and "llama" in ARGS.families else ())
               for r in scoring_rows(preset)]
    meta = {
        "load_average": os.getloadavg(), "batch_sizes": ARGS.batch_sizes,
        "threads": ARGS.threads, "kernels": ARGS.kernels, "prompt_len": ARGS.prompt_len, "new_tokens": ARGS.new_tokens,
        "vocab_size": ARGS.vocab_size, "assistant_tokens": ARGS.assistant_tokens, "python": platform.python_version(), "numpy": np.__version__,
        "machine": platform.machine(), "cpus": os.cpu_count(),
    }
    if have_torch:
        import torch

        meta["torch"] = torch.__version__
    if ARGS.json:
        print(json.dumps({"meta": meta, "results": rows, "scoring": scoring}, indent=2))
        return
    print(f"greedy decoding, prompt {ARGS.prompt_len} + {ARGS.new_tokens} new tokens, {ARGS.threads} thread(s), kernels={ARGS.kernels}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"speculative rows: greedy, {ARGS.assistant_tokens} draft tokens per round; batch > 1: prompts of "
          f"{ARGS.prompt_len // 2}-{ARGS.prompt_len} tokens, left-padded; decode tok/s counts every row's tokens")
    header = f"{'preset':<7} {'params':>10} {'batch':>5} {'implementation':<40} {'prefill ms':>11} {'decode tok/s':>13} {'same tokens':>12} {'accept':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        accept = "" if r["accept"] is None else f"{r['accept']:.2f}"
        print(f"{r['preset']:<7} {r['params']:>10,} {r['batch']:>5} {r['impl']:<40} {r['prefill_ms']:>11.1f} {r['decode_tok_s']:>13.1f} {str(r['same_tokens']):>12} {accept:>7}")
    for preset in ARGS.presets:
        for B in ARGS.batch_sizes:
            by = {r["impl"]: r["decode_tok_s"] for r in rows if r["preset"] == preset and r["batch"] == B}
            if "PyTorch eager + KV cache" in by and "minillm fused decode" in by:
                print(f"target: {preset} batch {B}: fused decode {by['minillm fused decode'] / by['PyTorch eager + KV cache']:.2f}x "
                      f"PyTorch eager (>= 2x wanted)")
    if scoring:
        print()
        print(f"log-likelihood scoring: {ARGS.score_questions} questions x 4 choices, contexts of {3 * ARGS.prompt_len} tokens, batch 32")
        print(f"{'preset':<7} {'implementation':<36} {'seconds':>8} {'pairs/s':>8} {'same scores':>12}")
        for r in scoring:
            print(f"{r['preset']:<7} {r['impl']:<36} {r['seconds']:>8.3f} {r['pairs_per_s']:>8.1f} {str(r['same_scores']):>12}")
    if not all(r["same_tokens"] for r in rows) or not all(r["same_scores"] for r in scoring):
        raise SystemExit("implementations disagree on the greedy tokens or the scores")


if __name__ == "__main__":
    main()
