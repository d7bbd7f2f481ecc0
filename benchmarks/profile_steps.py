"""Where the time goes: cProfile of a tiny-model training step and of batch-1 decoding.

    python benchmarks/profile_steps.py                       # both, top 15 functions by own time
    python benchmarks/profile_steps.py --what train --top 25
    python benchmarks/profile_steps.py --what decode --fused off   # the layer-by-layer decode path

Each section warms up first (Numba compilation, caches), then profiles ``--steps`` training
steps or ``--tokens`` decoded tokens and prints the functions with the most *own* time
(``tottime``: time inside the function itself, not in what it calls) plus the share of the
total. A Numba kernel shows up as one entry (its compiled code has no Python frames), so the
table separates array work (kernels, BLAS inside ``reference.matmul``) from Python overhead
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
    p.add_argument("--what", choices=["train", "decode", "both"], default="both")
    p.add_argument("--steps", type=int, default=10, help="training steps profiled")
    p.add_argument("--tokens", type=int, default=200, help="decoded tokens profiled")
    p.add_argument("--fused", choices=["on", "off"], default="on", help="decode with the fused kernel (generate's default) or layer by layer")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--json", action="store_true", help="print JSON instead of the tables")
    return p.parse_args(argv)


ARGS = parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)  # before numpy / numba start their thread pools

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


def main():
    mi.tune_malloc()  # as the Trainer and the CLI do
    if not ARGS.json:
        print(f"threads={ARGS.threads} kernels={mi.get_kernels()}")
    if ARGS.what in ("train", "both"):
        profile_train()
    if ARGS.what in ("decode", "both"):
        profile_decode()
    if ARGS.json:
        print(json.dumps({"threads": ARGS.threads, "kernels": mi.get_kernels(), "profiles": RESULTS}, indent=2))


if __name__ == "__main__":
    main()
