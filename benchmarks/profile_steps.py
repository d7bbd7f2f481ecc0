"""Where the time goes: cProfile of a tiny-model training step and of batch-1 decoding; wall
time per op at 1 vs 2 threads.

    python benchmarks/profile_steps.py                       # both, top 15 functions by own time
    python benchmarks/profile_steps.py --what train --top 25
    python benchmarks/profile_steps.py --what decode --fused off   # the layer-by-layer decode path
    python benchmarks/profile_steps.py --what ops --threads 1 2 --torch   # per op, 1 vs 2 threads

``--what ops`` times every autograd op's forward and backward (wall clock, inclusive of the
kernels it calls; the GEMMs are also summed on their own) over blocks of steps at each thread
count of ``--threads``, the thread counts alternating block by block in one process (the same
model, so only the thread count differs), and prints the median per step and the speed-up.
With ``--torch`` the PyTorch eager twin of ``train_step.py`` (SDPA) is profiled the same way by
``torch.profiler`` (self CPU time of the main thread per aten op, which includes waiting for its
OpenMP workers). ``--config small`` profiles the small model.

Each section warms up first (Numba compilation, caches), then profiles ``--steps`` training
steps or ``--tokens`` decoded tokens and prints the functions with the most *own* time
(``tottime``: time inside the function itself, not in what it calls) plus the share of the
total. A Numba kernel shows up as one entry (its compiled code has no Python frames), so the
table separates array work (kernels, BLAS inside ``_matmul.matmul``) from Python overhead
(``autograd``, ``ops``, ``Tensor`` bookkeeping). benchmarks/README.md discusses a run.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", choices=["train", "decode", "both", "ops"], default="both")
    p.add_argument("--steps", type=int, default=10, help="training steps profiled")
    p.add_argument("--tokens", type=int, default=200, help="decoded tokens profiled")
    p.add_argument("--fused", choices=["on", "off"], default="on", help="decode with the fused kernel (generate's default) or layer by layer")
    p.add_argument("--threads", type=int, nargs="+", default=[2], help="thread count(s); --what ops alternates between them")
    p.add_argument("--config", choices=["tiny", "small"], default="tiny", help="model for --what ops (train_step.py's shapes)")
    p.add_argument("--rounds", type=int, default=6, help="--what ops: blocks per thread count")
    p.add_argument("--torch", action="store_true", help="--what ops: profile the PyTorch eager twin too")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--json", action="store_true", help="print JSON instead of the tables")
    return p.parse_args(argv)


ARGS = parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = str(max(ARGS.threads))  # before numpy / numba start their thread pools

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import minillm as mi  # noqa: E402
from minillm.generation import generate  # noqa: E402
from minillm.models.llama import ModelConfig, Transformer  # noqa: E402
from minillm.optim import AdamW  # noqa: E402


RESULTS = []


def report(profiler: cProfile.Profile, title: str, wall: float, top: int) -> None:
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, name), (_cc, ncalls, tottime, _cum, _callers) in stats.stats.items():
        short = filename.split("minillm/")[-1] if "minillm/" in filename else Path(filename).name
        rows.append((tottime, ncalls, f"{short}:{line}({name})" if line else name))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    RESULTS.append({
        "title": title, "wall_ms": wall * 1e3, "profiled_ms": total * 1e3,
        "top": [{"function": w, "own_ms": t * 1e3, "share": t / total, "calls": n} for t, n, w in rows[:top]],
    })
    if ARGS.json:
        return
    print(f"\n{title}: {wall * 1e3:.1f} ms wall; own times below are totals over the profiled run ({total * 1e3:.1f} ms)")
    print(f"{'own ms':>9} {'share':>6} {'calls':>8}  function")
    for tottime, ncalls, where in rows[:top]:
        print(f"{tottime * 1e3:9.2f} {100 * tottime / total:5.1f}% {ncalls:8d}  {where}")


def profile_train() -> None:
    mi.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=2048))
    opt = AdamW(model.parameters(), lr=1e-3)
    batch = np.random.default_rng(0).integers(0, 2048, (8, 257))

    def step():
        out = model(batch[:, :-1], targets=batch[:, 1:])
        out.loss.backward()
        opt.step()
        opt.zero_grad()

    for _ in range(3):
        step()
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    for _ in range(ARGS.steps):
        step()
    prof.disable()
    wall = (time.perf_counter() - t) / ARGS.steps
    report(prof, f"tiny training step (B=8, T=256), {ARGS.steps} steps, per step", wall, ARGS.top)


def profile_decode() -> None:
    mi.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=6144)).eval()
    fused = ARGS.fused == "on"
    prompt = list(range(1, 33))
    n = min(ARGS.tokens, model.args.max_seq_len - len(prompt))
    generate(model, prompt, 4, temperature=0, fused_decode=fused)  # warm-up
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    generate(model, prompt, n, temperature=0, fused_decode=fused)
    prof.disable()
    wall = time.perf_counter() - t
    report(prof, f"tiny greedy decoding, {n} tokens after a 32-token prompt, fused_decode={fused}", wall, ARGS.top)


def set_threads(n: int) -> None:
    """Numba's (which the kernel thread pool and the split GEMMs follow), OpenBLAS's and torch's."""
    import numba

    numba.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def profile_ops() -> None:
    """Wall time per autograd op (forward / backward), per step, at each thread count."""
    import collections
    import statistics

    from minillm.autograd import Function
    from minillm import kernels

    acc = collections.defaultdict(float)

    def timed(key, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[key] += time.perf_counter() - t
        return wrapper

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    patched = []
    for cls in set(subclasses(Function)):
        for half, tag in (("forward", "fwd"), ("backward", "bwd")):
            if half in cls.__dict__:
                patched.append((cls, half, cls.__dict__[half]))
                setattr(cls, half, staticmethod(timed(f"{cls.__name__} {tag}", getattr(cls, half))))
    real_matmul = kernels.matmul
    kernels.matmul = timed("  of which GEMMs (kernels.matmul)", real_matmul)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train_step

    c = train_step.CONFIGS[ARGS.config]
    step_fn, _ = train_step.make_minillm(c, mi.get_kernels())
    batch = np.random.default_rng(0).integers(0, c["vocab_size"], (c["batch_size"], c["seq_len"] + 1))
    x, y = batch[:, :-1].copy(), batch[:, 1:].copy()
    per = {n: collections.defaultdict(list) for n in ARGS.threads}

    def block(n, record):
        set_threads(n)
        step_fn(x, y, [])  # one untimed step after the switch
        for _ in range(ARGS.steps):
            acc.clear()
            timings = []
            step_fn(x, y, timings)
            if record:
                fwd, bwd, opt = timings[0][:3]
                acc["step"], acc["optimizer (AdamW + zero_grad)"] = fwd + bwd + opt, opt
                for k, v in acc.items():
                    per[n][k].append(v)

    for n in ARGS.threads:
        block(n, False)  # compile / warm up at every thread count
    for r in range(ARGS.rounds):
        for n in (ARGS.threads if r % 2 == 0 else ARGS.threads[::-1]):
            block(n, True)
    for cls, half, fn in patched:
        setattr(cls, half, fn)
    kernels.matmul = real_matmul
    load = os.getloadavg()[0]
    rows = []
    for key in per[ARGS.threads[0]]:
        meds = [1e3 * statistics.median(per[n][key]) for n in ARGS.threads]
        rows.append((key, meds))
    rows.sort(key=lambda r: (r[0] != "step", -r[1][0]))
    step = {n: 1e3 * statistics.median(per[n]["step"]) for n in ARGS.threads}
    named = {n: sum(1e3 * statistics.median(v) for k, v in per[n].items() if k not in ("step",) and not k.startswith("  ")) for n in ARGS.threads}
    rows.insert(1, ("rest: Python engine, glue", [step[n] - named[n] for n in ARGS.threads]))
    RESULTS.append({"title": f"minillm {ARGS.config} step, ms per step (median of {ARGS.rounds * ARGS.steps})",
                    "threads": ARGS.threads, "load": load,
                    "rows": [{"op": k, "ms": dict(zip(map(str, ARGS.threads), v))} for k, v in rows]})
    if not ARGS.json:
        print(f"\nminillm {ARGS.config} training step: wall ms per step by op, median of {ARGS.rounds * ARGS.steps} steps "
              f"per thread count (alternating blocks; load average {load:.1f})")
        print(f"{'op':36}" + "".join(f"{f'{n} thr':>9}" for n in ARGS.threads) + (f"{'speed-up':>9}" if len(ARGS.threads) == 2 else ""))
        for key, meds in rows:
            extra = f"{meds[0] / meds[1]:9.2f}" if len(meds) == 2 and meds[1] > 0 else ""
            print(f"{key[:36]:36}" + "".join(f"{m:9.2f}" for m in meds) + extra)
    if ARGS.torch:
        profile_torch_ops(train_step, c, x, y)


def profile_torch_ops(train_step, c, x, y) -> None:
    """The PyTorch eager twin (SDPA): self CPU time per aten op, per step, at each thread count."""
    import collections

    import torch
    from torch.profiler import ProfilerActivity, profile

    step_fn, _ = train_step.make_torch(c, True)
    per = {n: collections.defaultdict(float) for n in ARGS.threads}
    steps = {n: [] for n in ARGS.threads}
    for n in ARGS.threads:
        set_threads(n)
        step_fn(x, y, [])
        step_fn(x, y, [])
    for r in range(ARGS.rounds):
        for n in (ARGS.threads if r % 2 == 0 else ARGS.threads[::-1]):
            set_threads(n)
            step_fn(x, y, [])
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(ARGS.steps):
                    t = time.perf_counter()
                    step_fn(x, y, [])
                    steps[n].append(time.perf_counter() - t)
            for e in prof.key_averages():
                per[n][e.key] += e.self_cpu_time_total / 1e3  # µs -> ms
    total = ARGS.rounds * ARGS.steps
    keys = sorted(per[ARGS.threads[0]], key=lambda k: -per[ARGS.threads[0]][k])[: ARGS.top]
    import statistics
    if not ARGS.json:
        print(f"\ntorch eager (SDPA) {c['dim']}-dim step: self CPU ms per step by aten op, mean of {total} steps "
              f"(under the profiler: step {', '.join(f'{statistics.median(steps[n]) * 1e3:.1f} ms at {n} thr' for n in ARGS.threads)})")
        print(f"{'op':36}" + "".join(f"{f'{n} thr':>9}" for n in ARGS.threads) + (f"{'speed-up':>9}" if len(ARGS.threads) == 2 else ""))
        for k in keys:
            v = [per[n][k] / total for n in ARGS.threads]
            extra = f"{v[0] / v[1]:9.2f}" if len(v) == 2 and v[1] > 0 else ""
            print(f"{k[:36]:36}" + "".join(f"{m:9.2f}" for m in v) + extra)
    RESULTS.append({"title": "torch eager SDPA, self CPU ms per step", "threads": ARGS.threads,
                    "rows": [{"op": k, "ms": {str(n): per[n][k] / total for n in ARGS.threads}} for k in keys]})
    del torch


def main():
    mi.tune_malloc()  # as the Trainer and the CLI do
    if not ARGS.json:
        print(f"threads={','.join(map(str, ARGS.threads))} kernels={mi.get_kernels()}")
    if ARGS.what == "ops":
        profile_ops()
    else:
        set_threads(ARGS.threads[0])
    if ARGS.what in ("train", "both"):
        profile_train()
    if ARGS.what in ("decode", "both"):
        profile_decode()
    if ARGS.json:
        print(json.dumps({"threads": ARGS.threads, "kernels": mi.get_kernels(), "profiles": RESULTS}, indent=2))


if __name__ == "__main__":
    main()
