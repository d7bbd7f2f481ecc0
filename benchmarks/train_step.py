"""Tokens/s of one full training step (forward, cross-entropy, backward, AdamW, zero_grad).

Contenders, run side by side in ONE process (blocks of steps, two rounds in opposite order)
so their ratio is meaningful on a noisy machine:
  minillm (numba)   the default fast path
  minillm (numpy)   every fused op on the NumPy reference kernels
  torch (manual)    PyTorch eager, attention written out (softmax(QKᵀ)V), when torch is installed
  torch (sdpa)      PyTorch eager with F.scaled_dot_product_attention
  torch (sdpa, compile)  the same model under torch.compile (with --compile; issue 23 asks to be at
                    least level with it "where it runs": it needs a C++ compiler for inductor)

The ``gpt-tiny`` and ``t5-tiny`` configs (Happy LLM 3.3.1 / 3.2.1) time ``models/gpt.py`` and
``models/t5.py`` against their PyTorch eager twins of the same size, Hugging Face's
``GPT2LMHeadModel`` and ``T5ForConditionalGeneration`` (``attn_implementation`` "eager" for the
manual row, "sdpa" where the model has it; T5's trained position bias has no sdpa path), when
transformers is installed. A T5 step reads B·T encoder tokens and predicts B·T decoder tokens;
tokens/s counts the predicted ones.

Prints a table (median step time after warm-up, tokens/s, per-phase breakdown, model FLOPs
utilisation against the FP32 peak) and, with --json, machine-readable results.

    python benchmarks/train_step.py                  # tiny and small, 2 threads
    python benchmarks/train_step.py --configs tiny --steps 5 --json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

CONFIGS = {
    # the benchmark shapes: vocab, dim, layers, heads, kv heads, T, B
    "tiny": dict(vocab_size=2048, dim=128, n_layers=4, n_heads=4, n_kv_heads=2, seq_len=256, batch_size=8),
    "small": dict(vocab_size=4096, dim=288, n_layers=6, n_heads=6, n_kv_heads=6, seq_len=256, batch_size=8),
    # GPT-2 and T5 at their examples' `tiny` presets (models/gpt.py, models/t5.py)
    "gpt-tiny": dict(arch="gpt", vocab_size=2048, dim=128, n_layers=4, n_heads=4, seq_len=256, batch_size=8),
    "t5-tiny": dict(arch="t5", vocab_size=1024, dim=128, n_layers=3, n_heads=4, seq_len=128, batch_size=16),
}


def set_threads(n: int) -> None:
    """The same thread count for every contender: BLAS, Numba and torch; and malloc tuned for
    training, as minillm's Trainer and CLI do (it then helps every contender in this process)."""
    import minillm  # first: it picks Numba's threading layer before set_num_threads starts it

    minillm.tune_malloc()

    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover
        pass
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def peak_gflops(cores: int, ghz: float) -> float:
    return cores * ghz * 32  # AVX2 + FMA: 2 FMA units × 8 float32 lanes × 2 FLOP


def model_flops_per_token(c: dict, n_params: int) -> float:
    """6·N for the matmuls (forward 2N, backward 4N) plus the attention scores/values (PaLM)."""
    return 6 * n_params + 12 * c["n_layers"] * c["dim"] * c["seq_len"]


def timed_step(compute_loss, opt, timings: list) -> float:
    """One training step, the same for every contender: appends (forward, backward, optimizer)
    seconds and the process's CPU seconds (every thread's, spinning included) to ``timings`` and
    returns the loss."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    loss = compute_loss()
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    opt.zero_grad(set_to_none=True)
    t3 = time.perf_counter()
    timings.append((t1 - t0, t2 - t1, t3 - t2, time.process_time() - c0))
    return float(loss.item())


# ----------------------------------------------------------------------------- minillm
def gpt_config(c: dict):
    from minillm.models.gpt import GPTConfig

    return GPTConfig(vocab_size=c["vocab_size"], max_seq_len=c["seq_len"], n_embd=c["dim"], n_layer=c["n_layers"],
                     n_head=c["n_heads"], dropout=0.0)


def t5_config(c: dict):
    from minillm.models.t5 import T5Config

    return T5Config.preset("tiny", vocab_size=c["vocab_size"], d_model=c["dim"], num_layers=c["n_layers"],
                           num_heads=c["n_heads"], d_kv=c["dim"] // c["n_heads"], d_ff=4 * c["dim"], dropout_rate=0.0)


def make_minillm(c: dict, backend: str):
    import minillm as mi

    mi.set_kernels(backend)
    mi.manual_seed(0)
    arch = c.get("arch", "llama")
    if arch == "gpt":
        from minillm.models.gpt import GPT

        model = GPT(gpt_config(c))
        loss_fn = lambda x, y: model(x, targets=y).loss  # noqa: E731
    elif arch == "t5":
        from minillm.models.t5 import T5ForConditionalGeneration

        model = T5ForConditionalGeneration(t5_config(c))
        loss_fn = lambda x, y: model(x, labels=y).loss  # noqa: E731
    else:
        from minillm.models.llama import ModelConfig, Transformer

        cfg = ModelConfig(
            dim=c["dim"], n_layers=c["n_layers"], n_heads=c["n_heads"], n_kv_heads=c["n_kv_heads"],
            vocab_size=c["vocab_size"], max_seq_len=c["seq_len"],
        )
        model = Transformer(cfg)
        loss_fn = lambda x, y: model(x, targets=y).loss  # noqa: E731
    opt = mi.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    n_params = sum(p.numel() for p in model.parameters())

    def step(x, y, timings):
        mi.set_kernels(backend)
        return timed_step(lambda: loss_fn(x, y), opt, timings)

    return step, n_params


def make_transformers(c: dict, sdpa: bool):
    """The Hugging Face twin (PyTorch eager) of ``models/gpt.py`` or ``models/t5.py`` at the same size."""
    import torch
    import transformers

    from minillm.io.hf_gpt2 import gpt2_hf_config
    from minillm.io.hf_t5 import t5_hf_config

    torch.manual_seed(0)
    if c["arch"] == "t5" and sdpa:
        raise ImportError("T5 has no sdpa attention in transformers (its position bias is trained)")
    impl = "sdpa" if sdpa else "eager"
    if c["arch"] == "gpt":
        cfg = transformers.GPT2Config(**{k: v for k, v in gpt2_hf_config(gpt_config(c)).items() if k not in ("dtype", "torch_dtype")})
        model = transformers.GPT2LMHeadModel._from_config(cfg, attn_implementation=impl)
    else:
        cfg = transformers.T5Config(**{k: v for k, v in t5_hf_config(t5_config(c)).items() if k not in ("dtype", "torch_dtype")})
        model = transformers.T5ForConditionalGeneration._from_config(cfg, attn_implementation=impl)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    n_params = sum(p.numel() for p in model.parameters())  # a tied head is counted once, as ours

    def step(x, y, timings):
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        if c["arch"] == "gpt":  # HF shifts the labels itself (T - 1 predictions instead of T)
            return timed_step(lambda: model(input_ids=xt, labels=xt).loss, opt, timings)
        return timed_step(lambda: model(input_ids=xt, labels=yt).loss, opt, timings)

    return step, n_params


# ----------------------------------------------------------------------------- torch
def make_torch(c: dict, sdpa: bool, compile_model: bool = False):
    import torch
    import torch.nn as tnn
    import torch.nn.functional as tF

    torch.manual_seed(0)
    D, H, Hkv = c["dim"], c["n_heads"], c["n_kv_heads"]
    hd = D // H
    hidden = 64 * ((int(8 * D / 3) + 63) // 64)

    class RMSNorm(tnn.Module):
        def __init__(self, d):
            super().__init__()
            self.weight = tnn.Parameter(torch.ones(d))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight

    def rope(x, cos, sin):  # interleaved pairs, as the book
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)

    class Layer(tnn.Module):
        def __init__(self):
            super().__init__()
            self.wq = tnn.Linear(D, H * hd, bias=False)
            self.wk = tnn.Linear(D, Hkv * hd, bias=False)
            self.wv = tnn.Linear(D, Hkv * hd, bias=False)
            self.wo = tnn.Linear(H * hd, D, bias=False)
            self.w1 = tnn.Linear(D, hidden, bias=False)
            self.w2 = tnn.Linear(hidden, D, bias=False)
            self.w3 = tnn.Linear(D, hidden, bias=False)
            self.n1, self.n2 = RMSNorm(D), RMSNorm(D)

        def forward(self, x, cos, sin, causal):
            B, T, _ = x.shape
            h = self.n1(x)
            q = rope(self.wq(h).view(B, T, H, hd), cos, sin).transpose(1, 2)
            k = rope(self.wk(h).view(B, T, Hkv, hd), cos, sin).transpose(1, 2)
            v = self.wv(h).view(B, T, Hkv, hd).transpose(1, 2)
            if Hkv != H:
                k = k.repeat_interleave(H // Hkv, dim=1)
                v = v.repeat_interleave(H // Hkv, dim=1)
            if sdpa:
                a = tF.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                s = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
                a = torch.softmax(s.masked_fill(causal, float("-inf")), dim=-1) @ v
            x = x + self.wo(a.transpose(1, 2).reshape(B, T, D))
            h = self.n2(x)
            return x + self.w2(tF.silu(self.w1(h)) * self.w3(h))

    class Model(tnn.Module):
        def __init__(self):
            super().__init__()
            self.emb = tnn.Embedding(c["vocab_size"], D)
            self.layers = tnn.ModuleList([Layer() for _ in range(c["n_layers"])])
            self.norm = RMSNorm(D)
            self.out = tnn.Linear(D, c["vocab_size"], bias=False)
            self.out.weight = self.emb.weight
            for p in self.parameters():
                if p.dim() == 2:
                    tnn.init.normal_(p, std=0.02)

        def forward(self, x, y):
            T = x.shape[1]
            freqs = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
            ang = torch.outer(torch.arange(T).float(), freqs)
            cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
            causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
            h = self.emb(x)
            for layer in self.layers:
                h = layer(h, cos, sin, causal)
            logits = self.out(self.norm(h))
            return tF.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))

    model = Model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    n_params = sum(p.numel() for p in model.parameters())
    run_model = torch.compile(model) if compile_model else model  # compiled on the first (warm-up) step

    def step(x, y, timings):
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        return timed_step(lambda: run_model(xt, yt), opt, timings)

    return step, n_params


# ----------------------------------------------------------------------------- driver
def run(name: str, c: dict, contenders: list, steps: int, warmup: int, peak: float, rounds: int = 2) -> list:
    contenders = [(label, f) for label, f, arch in contenders if arch == c.get("arch", "llama")]
    rng = np.random.default_rng(0)
    tokens = c["batch_size"] * c["seq_len"]
    batches = [rng.integers(0, c["vocab_size"], size=(c["batch_size"], c["seq_len"] + 1)) for _ in range(4)]
    results = []
    built = []
    for label, factory in contenders:
        t0 = time.perf_counter()
        try:
            step, n_params = factory(c)
        except ImportError as e:
            print(f"  skipping {label}: {e}", file=sys.stderr)
            continue
        built.append((label, step, n_params))
        timings = []
        for i in range(warmup):  # the first step compiles / warms caches
            b = batches[i % len(batches)]
            step(b[:, :-1].copy(), b[:, 1:].copy(), timings)
        results.append(dict(config=name, contender=label, first_step_s=time.perf_counter() - t0))
    # Each contender runs its timed steps as one block (thread pools of different libraries
    # spin after their work and would slow a neighbour's very next step), in `rounds` rounds of
    # alternating order, so a slow patch of the machine hits every contender alike.
    per = {label: [] for label, _, _ in built}
    for r in range(rounds):
        for label, step, _ in (built if r % 2 == 0 else built[::-1]):
            b = batches[0]
            step(b[:, :-1].copy(), b[:, 1:].copy(), [])  # one untimed step after the switch
            for i in range((steps + rounds - 1) // rounds):
                b = batches[i % len(batches)]
                step(b[:, :-1].copy(), b[:, 1:].copy(), per[label])
    for r, (label, _, n_params) in zip(results, built):
        t = np.array(per[label])  # (steps, 4): forward, backward, optimizer, CPU seconds
        total = t[:, :3].sum(axis=1)
        med = float(statistics.median(total))
        tps = tokens / med
        r.update(
            n_params=n_params, tokens_per_step=tokens, median_step_s=med, tokens_per_s=tps,
            forward_s=float(np.median(t[:, 0])), backward_s=float(np.median(t[:, 1])),
            optimizer_s=float(np.median(t[:, 2])), cpu_s=float(np.median(t[:, 3])),
            step_q1_s=float(np.percentile(total, 25)), step_q3_s=float(np.percentile(total, 75)),
            mfu=model_flops_per_token(c, n_params) * tps / (peak * 1e9),
        )
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["tiny", "small", "gpt-tiny", "t5-tiny"], choices=sorted(CONFIGS))
    p.add_argument("--steps", type=int, default=10, help="timed steps per contender (median reported)")
    p.add_argument("--rounds", type=int, default=2, help="blocks per contender, in alternating order (more: steadier on a busy machine)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, caches)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ghz", type=float, default=2.45, help="clock used for the FP32 peak")
    p.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy reference path")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--compile", action="store_true",
                   help="also PyTorch SDPA under torch.compile (inductor; needs a C++ compiler; compiles for ~1 min in warm-up)")
    p.add_argument("--json", action="store_true", help="print JSON results instead of the table")
    args = p.parse_args(argv)

    set_threads(args.threads)
    peak = peak_gflops(args.threads, args.ghz)
    contenders = []  # (label, factory, the architecture it builds)
    for arch in ("llama", "gpt", "t5"):
        contenders.append(("minillm (numba)", lambda c: make_minillm(c, "numba"), arch))
        if not args.no_numpy:
            contenders.append(("minillm (numpy)", lambda c: make_minillm(c, "numpy"), arch))
    if not args.no_torch:
        contenders += [("torch (manual)", lambda c: make_torch(c, False), "llama"), ("torch (sdpa)", lambda c: make_torch(c, True), "llama")]
        if args.compile:
            contenders.append(("torch (sdpa, compile)", lambda c: make_torch(c, True, compile_model=True), "llama"))
        for arch in ("gpt", "t5"):
            contenders += [("transformers (eager)", lambda c: make_transformers(c, False), arch),
                           ("transformers (sdpa)", lambda c: make_transformers(c, True), arch)]

    all_results = []
    for name in args.configs:
        all_results += run(name, CONFIGS[name], contenders, args.steps, args.warmup, peak, args.rounds)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if args.json:
        print(json.dumps({"threads": args.threads, "peak_gflops": peak, "load_average": load, "results": all_results}, indent=2))
        return
    print(f"training step, {args.threads} threads, FP32 peak {peak:.0f} GFLOP/s, median of {args.steps} steps "
          f"({args.rounds} alternating rounds), load average {load:.1f} at the end")
    head = (f"{'config':8} {'contender':22} {'tokens/s':>9} {'step ms':>8} {'q1-q3 ms':>13} {'CPU ms':>7} {'fwd ms':>7} {'bwd ms':>7} "
            f"{'opt ms':>7} {'MFU':>6} {'vs best torch':>13}")
    print(head)
    print("-" * len(head))
    for name in args.configs:
        rows = [r for r in all_results if r["config"] == name]
        torch_best = max((r["tokens_per_s"] for r in rows if r["contender"].startswith(("torch", "transformers"))), default=None)
        for r in rows:
            ratio = f"{r['tokens_per_s'] / torch_best:.2f}x" if torch_best else "-"
            spread = f"{1e3 * r['step_q1_s']:.0f}-{1e3 * r['step_q3_s']:.0f}"
            print(
                f"{name:8} {r['contender']:22} {r['tokens_per_s']:9.0f} {1e3 * r['median_step_s']:8.1f} "
                f"{spread:>13} {1e3 * r['cpu_s']:7.1f} "
                f"{1e3 * r['forward_s']:7.1f} {1e3 * r['backward_s']:7.1f} {1e3 * r['optimizer_s']:7.1f} "
                f"{100 * r['mfu']:5.1f}% {ratio:>13}"
            )


if __name__ == "__main__":
    main()
