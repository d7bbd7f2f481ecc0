"""A rank-aware DataLoader: every rank reads its own slice of every global batch (``DistributedSampler``).

The single-process ``DataLoader`` cuts epoch ``e``'s shuffled order into global batches of
``batch_size`` samples. ``DistributedDataLoader`` walks the *same* global batches (same seed,
same order, same ``state_dict``), and rank ``r`` of ``N`` builds only samples
``[r * b, (r + 1) * b)`` of each one, with ``b = batch_size / N``::

    global batch k:   s0 s1 s2 s3 s4 s5 s6 s7          (batch_size = 8)
    rank 0 of 2:      s0 s1 s2 s3
    rank 1 of 2:                  s4 s5 s6 s7

So the shards are disjoint, together they are exactly the single-process batch, and the
loader's position is a global one: a checkpoint written with N ranks resumes with any other N
that divides the batch size (``tests/test_distributed.py`` checks N=2 against N=1).
"""
from __future__ import annotations

from typing import Callable, Optional

from ..data.loader import DataLoader

__all__ = ["DistributedDataLoader"]


class DistributedDataLoader(DataLoader):
    """``DataLoader`` whose batches are this rank's shard of the global batch of ``batch_size``.

    ``batch_size`` stays the *global* batch size (what ``TrainConfig.batch_size`` and checkpoints
    record); each rank's batches hold ``per_rank_batch_size = batch_size // world_size`` samples.
    """

    def __init__(self, dataset, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = True,
                 collate_fn: Optional[Callable] = None, rank: int = 0, world_size: int = 1):
        for name, value in (("rank", rank), ("world_size", world_size)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"DistributedDataLoader: {name} must be an int, got {value!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"DistributedDataLoader: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        super().__init__(dataset, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, collate_fn=collate_fn)
        if self.batch_size % world_size:
            raise ValueError(f"DistributedDataLoader: batch_size={self.batch_size} is not divisible by world_size="
                             f"{world_size}; every rank must get the same number of samples")
        if not self.drop_last and len(self.dataset) % self.batch_size:
            raise ValueError("DistributedDataLoader needs drop_last=True when the dataset size "
                             f"({len(self.dataset)}) is not a multiple of batch_size={self.batch_size}: the last, short "
                             "batch cannot be split evenly")
        self.rank, self.world_size = rank, world_size
        self.per_rank_batch_size = self.batch_size // world_size

    @classmethod
    def from_loader(cls, loader: DataLoader, rank: int, world_size: int) -> "DistributedDataLoader":
        """The same loader (dataset, batch size, seed, collate, position), sharded for ``rank``."""
        if not isinstance(loader, DataLoader):
            raise TypeError(f"from_loader expects a minillm.data.DataLoader, got {type(loader).__name__}")
        new = cls(loader.dataset, loader.batch_size, shuffle=loader.shuffle, seed=loader.seed,
                  drop_last=loader.drop_last, collate_fn=loader.collate_fn, rank=rank, world_size=world_size)
        new.load_state_dict(loader.state_dict())
        return new

    def _batch(self, epoch: int, k: int):
        start = k * self.batch_size + self.rank * self.per_rank_batch_size
        idx = self.epoch_order(epoch)[start : start + self.per_rank_batch_size]  # this rank's slice of global batch k
        return self.collate_fn([self.dataset[int(i)] for i in idx])

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", rank={self.rank}, world_size={self.world_size})"
