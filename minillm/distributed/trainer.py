"""``DistributedTrainer``: the Trainer on N MPI ranks -- data parallel, optionally with ZeRO-1/2.

It is ``minillm.train.Trainer`` with its five seams filled in; the training loop itself is
unchanged and knows nothing of MPI::

    seam                        one process                 N ranks (this file)
    _loss_weight                1.0                         N * (my target tokens / all ranks' target tokens)
    _reduce_step_stats          the step's loss, tokens     averaged loss, summed tokens (one all-reduce)
    _clip_and_step              clip, step, zero_grad       average the gradients in buckets (ZeRO: reduce-scatter
                                                            to shards), clip by the global norm, step (ZeRO: my
                                                            shard, then all-gather the weights), zero_grad
    is_world_process_zero       True                        rank 0 alone writes metrics, plots, checkpoints, evaluates
    _prepare_out_dir            check, clear, config.json   every rank checks; rank 0 writes; a barrier

fp16 uses a ``ShardedGradScaler``: with ZeRO each rank sees only its gradient shard, so "did any
gradient overflow?" is all-reduced before the step is taken or skipped, on every rank alike.

And three changes around them: the train loader becomes a ``DistributedDataLoader`` (rank r reads
slice r of every global batch), every rank starts from rank 0's weights (a broadcast), and a
checkpoint is first gathered to rank 0 (ZeRO's shards) so it is the *same files* a single process
writes: a run resumes with any number of ranks.

    group = init_process_group()                      # mpiexec -n 2 python train.py
    trainer = DistributedTrainer(model, None, train_loader, val_loader, config, zero_stage=2)
    trainer.train()                                   # rank 0 writes out_dir/

Dropout: every rank seeds minillm's generator with ``config.seed``, as ``torch.manual_seed`` in a
DDP script does, so two ranks draw the same masks for their different samples. With dropout on,
N ranks therefore train *a* correct data-parallel run, not bit-for-bit the single-process one;
with dropout 0 (the LLaMA presets) they are equal to rounding.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional

import numpy as np

from ..data.loader import DataLoader
from ..optim import clip_grad_norm_
from ..tensor import Tensor
from ..train.config import TrainConfig
from ..train.trainer import Trainer, check_out_dir
from .amp import ShardedGradScaler
from .comm import ProcessGroup, init_process_group
from .data import DistributedDataLoader
from .ddp import GradientBuckets, broadcast_parameters
from .zero import ZeroRedundancyOptimizer, held_bytes

__all__ = ["DistributedTrainer"]


class DistributedTrainer(Trainer):
    """``Trainer`` on the ranks of ``group`` (default: ``init_process_group()``, one process when not under mpiexec).

    ``zero_stage``: 0 plain data parallel, 1 shard the optimizer state, 2 shard the gradients too.
    ``bucket_cap_mb``: the gradient bucket size of stage 0 (PyTorch DDP's ``bucket_cap_mb``).
    ``train_loader`` must be a ``minillm.data.DataLoader`` whose ``batch_size`` is the *global*
    batch size (divisible by the number of ranks); it is sharded here.
    """

    def __init__(self, model, optimizer=None, train_loader=None, val_loader=None, config: Optional[TrainConfig] = None,
                 sample_fn: Optional[Callable] = None, forward_fn: Optional[Callable] = None,
                 group: Optional[ProcessGroup] = None, zero_stage: int = 0, bucket_cap_mb: float = 4.0):
        self.group = group if group is not None else init_process_group()
        if zero_stage not in (0, 1, 2) or isinstance(zero_stage, bool):
            raise ValueError(f"DistributedTrainer: zero_stage must be 0, 1 or 2, got {zero_stage!r}")
        rank, n = self.group.rank, self.group.world_size
        if isinstance(train_loader, DistributedDataLoader):
            if (train_loader.rank, train_loader.world_size) != (rank, n):
                raise ValueError(f"DistributedTrainer: the train loader is sharded for rank {train_loader.rank} of "
                                 f"{train_loader.world_size}, but this is rank {rank} of {n}")
        elif isinstance(train_loader, DataLoader):
            train_loader = DistributedDataLoader.from_loader(train_loader, rank, n)
        elif train_loader is not None and n > 1:
            raise TypeError("DistributedTrainer needs a minillm.data.DataLoader (it shards its global batches over "
                            f"the ranks), got {type(train_loader).__name__}")
        super().__init__(model, optimizer, train_loader, val_loader, config, sample_fn=sample_fn, forward_fn=forward_fn)
        self.zero_stage = zero_stage
        params = self._params()
        broadcast_parameters(params, self.group)  # every replica starts from rank 0's weights
        self.zero = ZeroRedundancyOptimizer(self.optimizer, self.group, zero_stage) if zero_stage else None
        self.buckets = None if zero_stage else GradientBuckets(params, self.group, bucket_cap_mb)
        if self.scaler is not None:  # fp16: every rank must agree to skip an overflowed step
            self.scaler = ShardedGradScaler(self.group)
        self.memory: Optional[dict] = None  # this rank's bytes of gradients / optimizer state (first step)
        self.memory_per_rank: Optional[list] = None  # every rank's, gathered
        self.grad_sync_seconds = 0.0  # wall time spent averaging gradients (the price of data parallel)

    def train(self) -> dict:
        """``Trainer.train`` on every rank. An error on one rank ends the whole job (MPI Abort): the
        other ranks would otherwise wait forever in their next collective."""
        try:
            return super().train()
        except BaseException as e:
            if self.group.world_size > 1:
                import traceback

                print(f"rank {self.group.rank}: {type(e).__name__}: {e} -- aborting all {self.group.world_size} ranks",
                      file=sys.stderr, flush=True)
                traceback.print_exc()
                self.group.abort(1)
            raise

    # ------------------------------------------------------------------ the seams
    def is_world_process_zero(self) -> bool:
        return self.group.rank == 0

    def _prepare_out_dir(self) -> None:
        if self.step == 0 and not self._resumed:  # every rank refuses a used out_dir together (no rank left waiting)
            check_out_dir(self.config.out_dir, overwrite=self.config.overwrite, resume=self._resume_requested)
        self.group.barrier()  # nobody looks at out_dir after rank 0 starts clearing it
        if self.is_world_process_zero():
            super()._prepare_out_dir()
        self.group.barrier()

    def _loss_weight(self, batch) -> float:
        """``N * n_r / n``: rank r's share of the micro-batch's target tokens (not -100), times N.

        Each rank's loss is the mean over *its* target tokens; averaging the ranks' means weights a
        token on a rank with few targets more than one on a rank with many. Scaling rank r's loss by
        ``N * n_r / n`` turns the average of the ranks' gradients into the gradient of the mean over
        all ``n`` target tokens of the global micro-batch -- what one process computes (SFT with
        padding and masked prompts). With equal counts (pretraining) the weight is exactly 1.0. A
        custom ``forward_fn`` (DPO, reward models) defines its own loss: weight 1 (so every rank must
        pass a ``forward_fn``, or none: the all-reduce here is collective).
        """
        n = self.group.world_size
        if n == 1 or self.forward_fn is not None:
            return 1.0
        if isinstance(batch, dict):
            targets = batch["targets"] if "targets" in batch else batch.get("labels")
        else:
            targets = batch[1] if isinstance(batch, (tuple, list)) and len(batch) >= 2 else None
        if targets is None:  # default_forward will refuse this batch with a clear error
            return 1.0
        targets = targets.data if isinstance(targets, Tensor) else np.asarray(targets)
        mine = float(np.count_nonzero(targets != -100))
        total = self.group.all_reduce_(np.array([mine]))[0]  # collective: every rank, every micro-batch
        return n * mine / total if total > 0 else 1.0

    def _reduce_step_stats(self, loss_sum: float, tokens: int) -> tuple:
        stats = np.array([loss_sum, tokens], dtype=np.float64)
        self.group.all_reduce_(stats)
        return float(stats[0]) / self.group.world_size, int(round(stats[1]))  # mean of the ranks' means: equal shards

    def _clip_and_step(self, params: list, max_norm: float) -> float:
        first = self.memory is None
        t0 = time.perf_counter()
        if self.zero is not None:
            self.zero.reduce_gradients()  # stage 1: all-reduce; stage 2: reduce-scatter, full grads freed
            self.grad_sync_seconds += time.perf_counter() - t0
            grad_bytes = self.zero.memory_report()["gradients"]
            if self.scaler is not None:
                self.scaler.unscale_(self.zero.inner)  # my gradient shard; inf/nan on any rank is agreed by all
            grad_norm = self.zero.clip_grad_norm_(max_norm)
            if self.scaler is None:
                self.zero.step()  # my shard of AdamW, then all-gather the weights
            else:
                self.scaler.step(self.zero)  # all ranks step, or all skip
                self.scaler.update()
            state_bytes = self.zero.memory_report()["optimizer_state"]
            self.zero.zero_grad()
        else:
            self.buckets.all_reduce_mean_()  # every rank: the global batch's gradient
            self.grad_sync_seconds += time.perf_counter() - t0
            grad_bytes = held_bytes([p.grad.data for p in params if p.grad is not None])
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            grad_norm = clip_grad_norm_(params, max_norm)
            if self.scaler is None:
                self.optimizer.step()
            else:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            state_bytes = held_bytes([v for st in self.optimizer.state.values() for v in st.values()
                                      if isinstance(v, np.ndarray)])
            self.optimizer.zero_grad()
        if first:
            self.memory = {"rank": self.group.rank, "gradients": int(grad_bytes), "optimizer_state": int(state_bytes)}
            self.memory_per_rank = self.group.all_gather_object(self.memory)
            if self.is_world_process_zero():
                self.metrics.log({"step": self.step + 1, "zero_stage": self.zero_stage,
                                  "world_size": self.group.world_size, "memory_per_rank": self.memory_per_rank})
        return grad_norm

    # ------------------------------------------------------------------ checkpoints: the single-process files
    def save_checkpoint(self) -> str:
        """*Collective.* Gather ZeRO's shards, let rank 0 write the checkpoint; every rank gets its path."""
        if self.zero is not None:
            self.zero.consolidate_state_dict()
        try:
            path = super().save_checkpoint() if self.is_world_process_zero() else None
        finally:
            if self.zero is not None:
                self.zero.release_consolidated()
        path = self.group.broadcast_object(path)  # the other ranks wait here until the files exist
        self.last_checkpoint = path
        return path

    def _apply_checkpoint(self, plan: dict) -> None:
        super()._apply_checkpoint(plan)  # full optimizer state, weights, loader position, RNG: same on every rank
        if self.zero is not None:
            self.zero.shard_from_optimizer()  # keep my shard, drop the rest

    def __repr__(self) -> str:
        return (f"DistributedTrainer(rank={self.group.rank}, world_size={self.group.world_size}, "
                f"zero_stage={self.zero_stage}, step={self.step})")
