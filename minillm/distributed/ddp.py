"""Data parallel: average the gradients of N replicas in buckets (``DistributedDataParallel``).

Every rank holds the whole model and computes the gradient of its own shard of the global
batch. Averaging those gradients gives exactly the gradient of the whole batch (the loss is a
mean over equally sized shards), so after ``all_reduce_mean_`` every rank takes the same
optimizer step a single process would take with the global batch::

    grad(batch) = mean over ranks r of grad(shard_r)          (equal shard sizes)

*Buckets*: one collective per parameter would pay MPI's per-message latency hundreds of
times; one collective for the whole model would need a model-sized extra buffer. PyTorch's
DDP (``bucket_cap_mb=25``) and DeepSpeed (``reduce_bucket_size``) pack the gradients into
flat buffers of a fixed size and reduce one buffer at a time. The buckets are filled in
reverse parameter order -- the order backward produces the gradients, so a bucket could be sent
while backward still runs (DDP's overlap). Here the reduction runs after backward: on a
2-core CPU both ranks already use both cores for backward, so there is nothing to overlap
with (docs/chapter6.md measures the communication time).

A parameter without a gradient (``p.grad is None``: unused in this forward) counts as zero in
the average, and it stays without a gradient only if it got none on *every* rank -- so the
optimizer skips it exactly when a single process would. Each bucket carries one extra flag
per parameter for that.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ..tensor import Tensor
from .comm import ProcessGroup

__all__ = ["GradientBuckets", "broadcast_parameters", "replicas_max_difference"]


class GradientBuckets:
    """Bucketed gradient averaging for ``params`` over ``group``.

    ``bucket_cap_mb`` (PyTorch's name): the size of one flat buffer; a parameter larger than a
    bucket gets a bucket of its own.
    """

    def __init__(self, params: Iterable[Tensor], group: ProcessGroup, bucket_cap_mb: float = 4.0):
        self.params = list(params)
        if not self.params:
            raise ValueError("GradientBuckets: no parameters")
        if not isinstance(bucket_cap_mb, (int, float)) or isinstance(bucket_cap_mb, bool) or not bucket_cap_mb > 0:
            raise ValueError(f"GradientBuckets: bucket_cap_mb must be a number > 0, got {bucket_cap_mb!r}")
        dtypes = {p.dtype for p in self.params}
        if len(dtypes) != 1:
            raise TypeError(f"GradientBuckets: all parameters must share one dtype, got {sorted(map(str, dtypes))}")
        self.dtype = dtypes.pop()
        self.group = group
        cap = int(bucket_cap_mb * 2**20) // self.dtype.itemsize  # elements per bucket
        self.buckets: list = []  # lists of parameters, last parameters first
        current, size = [], 0
        for p in reversed(self.params):
            if current and size + p.data.size > cap:
                self.buckets.append(current)
                current, size = [], 0
            current.append(p)
            size += p.data.size
        self.buckets.append(current)
        self.calls = 0  # collectives issued (the tests check that bucketing bounds it)

    def all_reduce_mean_(self) -> None:
        """Replace every ``p.grad`` by its mean over the ranks (in place, bucket by bucket)."""
        n = self.group.world_size
        if n == 1:
            return
        for bucket in self.buckets:
            sizes = [p.data.size for p in bucket]
            flat = np.zeros(sum(sizes) + len(bucket), dtype=self.dtype)  # the gradients, then one flag each
            offset = 0
            for i, (p, size) in enumerate(zip(bucket, sizes)):
                if p.grad is not None:
                    flat[offset : offset + size] = p.grad.data.reshape(-1)
                    flat[sum(sizes) + i] = 1.0
                offset += size
            self.group.all_reduce_(flat)  # sum over ranks
            self.calls += 1
            flat *= self.dtype.type(1.0 / n)  # the mean
            offset = 0
            for i, (p, size) in enumerate(zip(bucket, sizes)):
                if flat[sum(sizes) + i] > 0:  # some rank had a gradient
                    mean = flat[offset : offset + size].reshape(p.shape)
                    if p.grad is None:
                        p.grad = Tensor(mean.copy())
                    else:
                        p.grad.data[...] = mean
                offset += size


def broadcast_parameters(params: Iterable[Tensor], group: ProcessGroup, src: int = 0) -> None:
    """Copy rank ``src``'s parameter values to every rank (DDP does this when it wraps a model)."""
    for p in params:
        if not p.data.flags.c_contiguous:
            p.data = np.ascontiguousarray(p.data)
        group.broadcast_(p.data, src=src)


def replicas_max_difference(params: Iterable[Tensor], group: ProcessGroup) -> float:
    """The largest absolute difference between any rank's parameters and rank 0's (0.0: in sync)."""
    worst = 0.0
    for p in params:
        mine = np.ascontiguousarray(p.data)
        ref = group.broadcast_(mine.copy(), src=0)
        worst = max(worst, float(np.max(np.abs(mine - ref))) if mine.size else 0.0)
    return max(group.all_gather_object(worst))
