"""Data-parallel pretraining on 1 and 2 MPI ranks, plain and with ZeRO-1/2 (Happy LLM 6.1.5).

    python examples/data_parallel.py            # the default run (a few minutes on an idle 2-core machine)
    python examples/data_parallel.py --quick    # a smoke run in seconds

The book trains with DeepSpeed ZeRO-2 on several GPUs. This script does the same thing on the
cores of one CPU, with ``mpiexec`` starting the ranks (``pip install -e ".[distributed]"``):

  1. writes a byte-level corpus from the built-in story world (next-byte prediction, vocab 256+);
  2. trains a LLaMA on it with ``DistributedTrainer`` four times, all with the same global batch:
     1 rank; 2 ranks, plain data parallel; 2 ranks, ZeRO-1; 2 ranks, ZeRO-2;
  3. prints, per run: the training losses' largest difference from the 1-rank run (they must
     agree to float32 rounding), the held-out loss, seconds per step, tokens per second, the
     time spent averaging gradients, and the bytes of gradients and AdamW state each rank held,
     next to the ZeRO paper's formula.

Each rank gets ``2 / N`` threads (Numba and BLAS), so N=1 and N=2 use the same two cores. On a
laptop-sized model a step is mostly small matrix products, which two threads of one process
already share well; the runs measure what splitting the batch over processes instead buys (or
costs) here -- see docs/chapter6.md for the numbers and why.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


class ByteBlocks:
    """(x, y) blocks of ``T`` bytes from a UTF-8 byte stream; y is x shifted by one."""

    def __init__(self, data: np.ndarray, T: int):
        self.data, self.T = data, T

    def __len__(self):
        return (len(self.data) - 1) // self.T

    def __getitem__(self, i):
        chunk = self.data[i * self.T : i * self.T + self.T + 1].astype(np.int64)
        return chunk[:-1], chunk[1:]


def write_corpus(out_dir: str, n_stories: int) -> None:
    from minillm.data.world import generate_stories

    os.makedirs(out_dir, exist_ok=True)
    for split, n in (("train", n_stories), ("val", max(20, n_stories // 10))):
        text = "\n".join(generate_stories(n, split=split)) + "\n"
        np.frombuffer(text.encode("utf-8"), dtype=np.uint8).tofile(os.path.join(out_dir, f"{split}.u8"))


def worker(args) -> None:
    """One run; under mpiexec every rank executes this, rank 0 writes ``result.json``."""
    import minillm as mi
    from minillm.data import DataLoader
    from minillm.distributed import DistributedTrainer, init_process_group
    from minillm.models.llama import ModelConfig, Transformer
    from minillm.train import TrainConfig

    group = init_process_group()
    data = {s: np.fromfile(os.path.join(args.data, f"{s}.u8"), dtype=np.uint8) for s in ("train", "val")}
    train, val = ByteBlocks(data["train"], args.block_size), ByteBlocks(data["val"], args.block_size)
    mi.manual_seed(0)
    dims = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2) if args.quick else dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2)
    model = Transformer(ModelConfig(vocab_size=256, max_seq_len=args.block_size, **dims))
    config = TrainConfig(out_dir=args.out, max_steps=args.steps, lr=3e-3, min_lr=3e-4, warmup_steps=max(1, args.steps // 10),
                         eval_interval=args.steps, eval_batches=4, log_interval=max(1, args.steps // 5),
                         checkpoint_interval=0, progress=False, plot=False, overwrite=True)
    trainer = DistributedTrainer(model, None, DataLoader(train, args.batch_size, seed=0),
                                 DataLoader(val, args.batch_size, shuffle=False), config, zero_stage=args.zero_stage)
    trainer.train()  # step 1 includes Numba's compile-cache load; the timed steps are 2..K
    if group.rank == 0:
        steps = [json.loads(line) for line in open(os.path.join(args.out, "metrics.jsonl"))]
        tok_s = [r["tokens_per_sec"] for r in steps if "tokens_per_sec" in r]
        result = {
            "world_size": group.world_size, "zero_stage": args.zero_stage, "losses": trainer.losses,
            "val_loss": trainer.last_eval["val_loss"] if trainer.last_eval else None,
            "tokens_per_sec": tok_s[-1] if tok_s else None, "memory_per_rank": trainer.memory_per_rank,
            "grad_sync_seconds": trainer.grad_sync_seconds, "num_params": model.num_parameters(),
            "seconds": time.perf_counter() - args.t0,
        }
        with open(os.path.join(args.out, "result.json"), "w") as f:
            json.dump(result, f)


def launch(args, ranks: int, stage: int, out: str, cores: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--data", args.data_dir, "--out", out,
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--block-size", str(args.block_size),
           "--zero-stage", str(stage)] + (["--quick"] if args.quick else [])
    if ranks > 1:
        mpiexec = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
        cmd = [mpiexec, "-n", str(ranks)] + cmd
    threads = str(max(1, cores // ranks))  # the same cores either way: N ranks x (cores / N) threads
    env = {**os.environ, "NUMBA_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
    for var in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE"):
        env.pop(var, None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"run with {ranks} rank(s), ZeRO {stage} failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "result.json")) as f:
        result = json.load(f)
    result["wall_seconds"] = time.perf_counter() - t0
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    ap.add_argument("--out-dir", default="runs/data_parallel")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 60; 3 with --quick)")
    ap.add_argument("--batch-size", type=int, default=8, help="global batch (sequences per step, all ranks together)")
    ap.add_argument("--block-size", type=int, default=None, help="bytes per sequence (default 256; 32 with --quick)")
    ap.add_argument("--cores", type=int, default=2, help="cores to share between the ranks (default: %(default)s)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--zero-stage", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.t0 = time.perf_counter()
    args.steps = args.steps or (3 if args.quick else 60)
    args.block_size = args.block_size or (32 if args.quick else 256)
    if args.worker:
        worker(args)
        return

    from minillm.distributed import is_mpi_available, zero_memory_formula

    if not is_mpi_available() or not (shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))):
        raise SystemExit('needs MPI: pip install -e ".[distributed]" (mpi4py + mpich, which brings mpiexec)')
    args.data_dir = os.path.join(args.out_dir, "data")
    write_corpus(args.data_dir, 60 if args.quick else 2000)
    runs = [(1, 0), (2, 0), (2, 1), (2, 2)]
    results = {}
    for ranks, stage in runs:
        out = os.path.join(args.out_dir, f"n{ranks}_zero{stage}")
        results[(ranks, stage)] = r = launch(args, ranks, stage, out, args.cores)
        print(f"  ran {ranks} rank(s), ZeRO {stage}: {r['wall_seconds']:.1f} s", flush=True)

    base = results[(1, 0)]
    n = base["num_params"]
    print(f"\nLLaMA {n:,} parameters, global batch {args.batch_size} x {args.block_size} bytes, {args.steps} steps, "
          f"{args.cores} cores shared by the ranks")
    head = (f"{'ranks':>5} {'ZeRO':>4} {'max |loss - 1 rank|':>20} {'val loss':>8} {'tokens/s':>9} {'grad sync s':>11} "
            f"{'grads B/rank':>13} {'AdamW B/rank':>13} {'paper grads':>12} {'paper AdamW':>12}")
    print(head)
    print("-" * len(head))
    for (ranks, stage), r in results.items():
        diff = max(abs(a - b) for a, b in zip(r["losses"], base["losses"]))
        mem = r["memory_per_rank"][0]
        paper = zero_memory_formula(n, ranks, stage, itemsize=4)
        print(f"{ranks:5d} {stage:4d} {diff:20.2e} {r['val_loss']:8.4f} {r['tokens_per_sec']:9,.0f} "
              f"{r['grad_sync_seconds']:11.2f} {mem['gradients']:13,d} {mem['optimizer_state']:13,d} "
              f"{paper['gradients']:12,d} {paper['optimizer_state']:12,d}")
    speed = results[(2, 0)]["tokens_per_sec"] / base["tokens_per_sec"]
    print(f"\n2 ranks x {max(1, args.cores // 2)} thread(s) vs 1 rank x {args.cores} threads: {speed:.2f}x the tokens per second")
    try:
        print(f"load average while measuring: {os.getloadavg()[0]:.1f} (timings are only meaningful on an idle machine)")
    except OSError:
        pass


if __name__ == "__main__":
    main()
