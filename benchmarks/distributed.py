"""Training speed and per-rank memory: 1 process vs 2 MPI ranks (data parallel, ZeRO-1, ZeRO-2), and bf16.

    python benchmarks/distributed.py                 # the table (LLaMA tiny, global batch 8 x 128 tokens)
    python benchmarks/distributed.py --json          # the same, machine-readable
    python benchmarks/distributed.py --runs 1x2,1x2-bf16 --steps 4    # a subset

Every contender trains the same model on the same global batch with ``DistributedTrainer``, each
in its own launch (``mpiexec -n 2`` for 2 ranks), one after the other in this one invocation:

    run         processes x threads   what
    1x2         1 x 2                 the single-process baseline on both cores (Numba + BLAS threads)
    1x1         1 x 1                 one core: what one rank of a 2-rank run has
    2x1         2 x 1                 data parallel, gradients all-reduced in buckets (ZeRO 0)
    2x1-z1      2 x 1                 ZeRO-1: AdamW state sharded
    2x1-z2      2 x 1                 ZeRO-2: gradients sharded too
    1x2-bf16    1 x 2                 TrainConfig(bf16=True): emulated bfloat16 forward/backward
    1x1-bf16    1 x 1                 the same on one thread (compare with 1x1 on a busy machine)
    1x2-fp16    1 x 2                 TrainConfig(fp16=True): NumPy float16 (slow: not in the default set)

Reported per run: tokens/s over the timed steps (after ``--warmup`` steps that load Numba's cache
and grow the heap), seconds per step, the share of step time spent averaging gradients, and per
rank: the gradient and AdamW bytes the trainer held (ZeRO's formula), peak RSS, and RSS growth
during training. The load average is printed: on a shared machine the speed columns move by 2x
or more; only ratios from one run on an idle machine mean much.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

RUNS = {  # name -> (ranks, threads per rank, zero stage, precision)
    "1x2": (1, 2, 0, None), "1x1": (1, 1, 0, None), "2x1": (2, 1, 0, None), "2x1-z1": (2, 1, 1, None),
    "2x1-z2": (2, 1, 2, None), "1x2-bf16": (1, 2, 0, "bf16"), "1x1-bf16": (1, 1, 0, "bf16"),
    "1x2-fp16": (1, 2, 0, "fp16"),
}
DEFAULT_RUNS = "1x2,1x1,2x1,2x1-z1,2x1-z2,1x2-bf16"


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RandomBlocks:
    """Fixed random token blocks (speed only: what is learned does not matter here)."""

    def __init__(self, n: int, T: int, vocab: int):
        self.ids = np.random.default_rng(0).integers(0, vocab, size=(n, T + 1))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i, :-1], self.ids[i, 1:]


def worker(args) -> None:
    """One contender; under mpiexec every rank runs this and rank 0 prints the JSON result."""
    import minillm as mi
    from minillm.data import DataLoader
    from minillm.distributed import DistributedTrainer, init_process_group
    from minillm.models.llama import ModelConfig, Transformer
    from minillm.train import TrainConfig

    mi.tune_malloc()
    group = init_process_group()
    mi.manual_seed(0)
    cfg = ModelConfig.preset(args.preset, vocab_size=args.vocab_size, max_seq_len=args.block_size)
    model = Transformer(cfg)
    steps = args.warmup + args.steps
    config = TrainConfig(out_dir=args.out, max_steps=args.warmup, lr=1e-3, warmup_steps=0, lr_decay_steps=steps,
                         eval_interval=0, log_interval=steps, checkpoint_interval=0, progress=False, plot=False,
                         overwrite=True, bf16=args.precision == "bf16", fp16=args.precision == "fp16")
    loader = DataLoader(RandomBlocks(64 * args.batch_size, args.block_size, args.vocab_size), args.batch_size, seed=0)
    trainer = DistributedTrainer(model, None, loader, None, config, group=group, zero_stage=args.zero_stage)
    trainer.save_checkpoint = lambda: None  # timing the steps, not the disk
    rss_before = _rss_mib()
    trainer.train()  # warmup: Numba's compile cache, the heap's growth, the first AdamW state
    sync0 = trainer.grad_sync_seconds
    group.barrier()
    t0 = time.perf_counter()
    trainer.config.max_steps = steps
    trainer.train()
    group.barrier()
    seconds = time.perf_counter() - t0
    mine = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_growth_mib": _rss_mib() - rss_before, **(trainer.memory or {})}
    per_rank = group.all_gather_object(mine)
    if group.rank == 0:
        tokens = args.steps * args.batch_size * args.block_size
        print(json.dumps({
            "ranks": group.world_size, "threads": args.threads, "zero_stage": args.zero_stage,
            "precision": args.precision or "float32", "params": model.num_parameters(),
            "tokens_per_sec": tokens / seconds, "seconds_per_step": seconds / args.steps,
            "grad_sync_share": (trainer.grad_sync_seconds - sync0) / seconds, "last_loss": trainer.losses[-1],
            "per_rank": per_rank,
        }))


def launch(args, name: str, out: str) -> dict:
    ranks, threads, stage, precision = RUNS[name]
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--out", out, "--zero-stage", str(stage),
           "--threads", str(threads), "--preset", args.preset, "--vocab-size", str(args.vocab_size),
           "--block-size", str(args.block_size), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
           "--warmup", str(args.warmup)] + (["--precision", precision] if precision else [])
    if ranks > 1:
        mpiexec = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
        if mpiexec is None:
            raise SystemExit('2-rank runs need MPI: pip install -e ".[distributed]" (mpi4py + mpich)')
        cmd = [mpiexec, "-n", str(ranks)] + cmd
    env = {**os.environ, "NUMBA_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "OMP_NUM_THREADS": str(threads)}
    for var in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE"):
        env.pop(var, None)
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"run {name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"run": name, "load_before": load, "load_after": os.getloadavg()[0], **result}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=DEFAULT_RUNS, help=f"comma-separated, from {', '.join(RUNS)} (default: %(default)s)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--vocab-size", type=int, default=2048)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8, help="global batch (all ranks together)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--zero-stage", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--precision", choices=("bf16", "fp16"), default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        ap.error(f"unknown run(s) {unknown}; choose from {list(RUNS)}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results.append(launch(args, name, os.path.join(tmp, name)))
            if not args.json:
                print(f"  {name}: {results[-1]['tokens_per_sec']:,.0f} tokens/s", file=sys.stderr, flush=True)
    report = {"preset": args.preset, "global_batch": args.batch_size, "block_size": args.block_size,
              "timed_steps": args.steps, "cpu_count": os.cpu_count(), "results": results}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    base = results[0]["tokens_per_sec"]
    print(f"LLaMA {args.preset} ({results[0]['params']:,} parameters), global batch {args.batch_size} x {args.block_size}"
          f" tokens, {args.steps} timed steps after {args.warmup}; {os.cpu_count()} cores")
    head = (f"{'run':>9} {'ranks x thr':>11} {'ZeRO':>4} {'prec':>8} {'tokens/s':>9} {'vs ' + results[0]['run']:>8} "
            f"{'s/step':>7} {'sync %':>6} {'grads MiB/rank':>14} {'AdamW MiB/rank':>14} {'peak RSS MiB/rank':>17} "
            f"{'load':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        pr = r["per_rank"][0]
        rss = "/".join(f"{p['peak_rss_mib']:.0f}" for p in r["per_rank"])
        print(f"{r['run']:>9} {r['ranks']:>5} x {r['threads']:<3} {r['zero_stage']:>4} {r['precision']:>8} "
              f"{r['tokens_per_sec']:9,.0f} {r['tokens_per_sec'] / base:7.2f}x {r['seconds_per_step']:7.3f} "
              f"{100 * r['grad_sync_share']:6.1f} {pr.get('gradients', 0) / 2**20:14.2f} "
              f"{pr.get('optimizer_state', 0) / 2**20:14.2f} {rss:>17} {r['load_before']:4.1f}-{r['load_after']:<4.1f}")


if __name__ == "__main__":
    main()
