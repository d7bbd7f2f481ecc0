"""Training runs, on however many ranks started it (``mpiexec -n 2 python tests/_mpi_worker.py ...``).

``tests/test_distributed.py`` runs it without MPI (the single-process references) and under
``mpiexec -n 2``, then compares the losses and weights rank 0 saved. Small on purpose: a 2-layer
LLaMA, 16-token blocks, a few steps. ``--runs FILE`` (a JSON list of argument lists) runs several
trainings one after the other in one launch: starting two Python processes with NumPy, Numba and
MPI costs more than a run itself, so the tests share one ``mpiexec`` for all their 2-rank runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import minillm as mi  # noqa: E402
from minillm.data import DataLoader  # noqa: E402
from minillm.distributed import DistributedTrainer, init_process_group, replicas_max_difference  # noqa: E402
from minillm.models.llama import ModelConfig, Transformer  # noqa: E402
from minillm.train import TrainConfig  # noqa: E402


class Blocks:
    """Fixed random token blocks: (x, y) with y = x shifted by one.

    ``masked=True``: like SFT, each sample's targets start with a random number of -100s (a prompt
    not trained on), so the ranks' shards hold different numbers of target tokens."""

    def __init__(self, n: int, T: int, vocab: int, seed: int = 0, masked: bool = False):
        rng = np.random.default_rng(seed)
        self.ids = rng.integers(0, vocab, size=(n, T + 1))
        self.prompt = rng.integers(0, T - 1, size=n) if masked else np.zeros(n, dtype=int)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        y = self.ids[i, 1:].copy()
        y[: self.prompt[i]] = -100
        return self.ids[i, :-1], y


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="where rank 0 writes result.json / result.npz (and the run's files)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4, help="global batch")
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--zero-stage", type=int, default=0)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--checkpoint-interval", type=int, default=0)
    ap.add_argument("--grad-clip", type=float, default=0.5)
    ap.add_argument("--masked", action="store_true", help="SFT-like targets: a random -100 prefix per sample")
    ap.add_argument("--precision", choices=("float32", "bf16", "fp16"), default="float32",
                    help="mixed precision (TrainConfig.bf16 / fp16; needs --dtype float32)")
    ap.add_argument("--fail-on-rank", type=int, default=None, help="this rank raises at its 2nd batch")
    ap.add_argument("--runs", help="a JSON file holding a list of argument lists: run each in turn")
    args = ap.parse_args(argv)
    if args.runs:
        with open(args.runs) as f:
            for run_argv in json.load(f):
                main(["--out", args.out] + run_argv)  # each run names its own --out (the last one wins)
        return

    group = init_process_group()
    mi.manual_seed(0)
    model = Transformer(ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, max_seq_len=16))
    model.to(np.dtype(args.dtype))
    loader = DataLoader(Blocks(64, 16, 64, masked=args.masked), args.batch_size, shuffle=True, seed=1)
    config = TrainConfig(out_dir=args.out, max_steps=args.steps, lr=3e-3, min_lr=3e-4, warmup_steps=1, lr_decay_steps=8,
                         grad_accum_steps=args.grad_accum, grad_clip=args.grad_clip, eval_interval=0, log_interval=1,
                         checkpoint_interval=args.checkpoint_interval, progress=False, plot=False, overwrite=not args.resume,
                         bf16=args.precision == "bf16", fp16=args.precision == "fp16")
    forward_fn = None
    if args.fail_on_rank is not None:  # every rank the same forward_fn (the Trainer's choices must agree); one fails
        calls = []

        def forward_fn(model, batch):
            calls.append(1)
            if len(calls) == 2 and group.rank == args.fail_on_rank:
                raise ValueError(f"injected failure on rank {group.rank}")
            return model(mi.Tensor(batch[0]), targets=mi.Tensor(batch[1]))

    trainer = DistributedTrainer(model, None, loader, None, config, group=group, zero_stage=args.zero_stage,
                                 forward_fn=forward_fn)
    if args.resume:
        trainer.resume()
    trainer.train()
    drift = replicas_max_difference(trainer._params(), group)
    if group.rank == 0:
        weights = {k: v.data for k, v in model.state_dict().items()}
        np.savez(os.path.join(args.out, "result.npz"), **weights)
        with open(os.path.join(args.out, "result.json"), "w") as f:
            json.dump({"losses": trainer.losses, "world_size": group.world_size, "replica_drift": drift,
                       "memory_per_rank": trainer.memory_per_rank, "num_params": model.num_parameters(),
                       "checkpoints": sorted(os.listdir(os.path.join(args.out, "checkpoints"))),
                       "loss_scale": trainer.scaler.get_scale() if trainer.scaler else None,
                       "skipped_steps": trainer.scaler.skipped_steps if trainer.scaler else None}, f)


if __name__ == "__main__":
    main()
