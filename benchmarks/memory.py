"""Peak memory (RSS) of a short training run, minillm vs PyTorch eager, per config.

Each contender runs in its OWN subprocess (peak RSS is per process), doing the same
training steps as benchmarks/train_step.py (forward, cross-entropy, backward, AdamW).
Reported: RSS after imports and model construction, peak RSS after the steps, and the
difference (what training itself needed: activations, gradients, optimizer state).

    python benchmarks/memory.py                   # tiny and small, table
    python benchmarks/memory.py --configs tiny --json
    python benchmarks/memory.py --checkpointing   # gradient checkpointing on/off at long sequences (6.1)

``--checkpointing`` measures one training step of the LLaMA "tiny" preset with and without
``model.gradient_checkpointing_enable()``, as the peak of the NumPy arrays alive during forward +
backward (``tracemalloc``, which sees every NumPy allocation; RSS would add the allocator's slack),
at growing sequence lengths, and the step time of each.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

CONTENDERS = ("minillm (numba)", "minillm (numpy)", "torch (manual)", "torch (sdpa)")


def _rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc), falling back to the peak."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(contender: str, config: str, steps: int, threads: int) -> dict:
    import train_step as ts

    c = ts.CONFIGS[config]
    if contender.startswith("minillm"):  # no torch in this process: its libraries would count against us
        import numba
        from threadpoolctl import threadpool_limits

        import minillm  # before numba.set_num_threads: picks the threading layer

        minillm.tune_malloc()  # as the Trainer does
        threadpool_limits(threads)
        numba.set_num_threads(threads)
        step, n_params = ts.make_minillm(c, "numba" if "numba" in contender else "numpy")
    else:
        ts.set_threads(threads)
        step, n_params = ts.make_torch(c, sdpa="sdpa" in contender)
    rng = np.random.default_rng(0)
    b = rng.integers(0, c["vocab_size"], size=(c["batch_size"], c["seq_len"] + 1))
    x, y = b[:, :-1].copy(), b[:, 1:].copy()
    before = _rss_mb()
    for _ in range(steps):
        step(x, y, [])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    return {"config": config, "contender": contender, "n_params": n_params, "rss_before_mb": before,
            "peak_rss_mb": peak, "training_mb": peak - before}


def checkpointing_rows(seq_lens, batch: int = 4, preset: str = "tiny") -> list:
    """Peak traced MiB and seconds of one forward + backward, without and with gradient checkpointing."""
    import time
    import tracemalloc

    import minillm as mi
    from minillm.models.llama import ModelConfig, Transformer

    rows = []
    for T in seq_lens:
        ids = np.random.default_rng(0).integers(0, 2048, size=(batch, T + 1))
        x, y = mi.Tensor(ids[:, :-1]), mi.Tensor(ids[:, 1:])
        row = {"seq_len": T, "batch": batch}
        for use in (False, True):
            mi.manual_seed(0)
            model = Transformer(ModelConfig.preset(preset, vocab_size=2048, max_seq_len=max(T, 256)))
            if use:
                model.gradient_checkpointing_enable()
            model(x, targets=y).loss.backward()  # warm-up: kernels compiled, caches filled
            model.zero_grad()
            tracemalloc.start()
            t0 = time.perf_counter()
            model(x, targets=y).loss.backward()
            seconds = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            key = "checkpointed" if use else "plain"
            row[f"{key}_mib"], row[f"{key}_s"] = peak, seconds
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["tiny", "small"], choices=["tiny", "small"])
    p.add_argument("--steps", type=int, default=3, help="training steps per run (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print JSON results instead of the table")
    p.add_argument("--worker", nargs=2, metavar=("CONTENDER", "CONFIG"), help=argparse.SUPPRESS)
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on/off instead")
    p.add_argument("--seq-lens", type=int, nargs="+", default=[256, 512, 1024])
    args = p.parse_args(argv)
    if args.checkpointing:
        rows = checkpointing_rows(args.seq_lens)
        if args.json:
            print(json.dumps(rows, indent=2))
            return
        print("one training step (forward + backward) of LLaMA tiny, batch 4: peak MiB of live NumPy arrays")
        head = f"{'T':>5} {'plain MiB':>10} {'checkpointed MiB':>17} {'saved':>6} {'plain s':>8} {'checkpointed s':>15}"
        print(head)
        print("-" * len(head))
        for r in rows:
            saved = 1 - r["checkpointed_mib"] / r["plain_mib"]
            print(f"{r['seq_len']:5d} {r['plain_mib']:10.1f} {r['checkpointed_mib']:17.1f} {saved:6.0%} "
                  f"{r['plain_s']:8.2f} {r['checkpointed_s']:15.2f}")
        return
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.steps, args.threads)))
        return
    results = []
    for config in args.configs:
        for contender in CONTENDERS:
            cmd = [sys.executable, __file__, "--worker", contender, config, "--steps", str(args.steps),
                   "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                if "No module named 'torch'" in proc.stderr:
                    continue  # torch not installed: skip its contenders
                raise RuntimeError(f"{contender} / {config} failed:\n{proc.stderr[-2000:]}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps({"steps": args.steps, "threads": args.threads, "results": results}, indent=2))
        return
    print(f"peak RSS of {args.steps} training steps (B=8, T=256), each contender in its own process")
    head = f"{'config':6} {'contender':17} {'after setup MiB':>16} {'peak MiB':>9} {'training MiB':>13}"
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['config']:6} {r['contender']:17} {r['rss_before_mb']:16.0f} {r['peak_rss_mb']:9.0f} {r['training_mb']:13.0f}")


if __name__ == "__main__":
    main()
