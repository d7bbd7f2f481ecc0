"""``ShardedGradScaler``: fp16 loss scaling when each rank holds only a shard of the gradients.

``GradScaler.unscale_`` looks for inf/nan in the gradients it can see. Under plain data parallel
every rank holds the same averaged gradients, so every rank finds the same answer; under ZeRO
(and torch's FSDP, whose class this is named after) rank r sees only shard r, and an overflow in
rank 1's shard must make rank 0 skip the step too -- otherwise the replicas' weights part ways.
One all-reduce of a single flag settles it::

    found = any inf/nan in my shard        (GradScaler.unscale_)
    found = all_reduce(found) > 0          (every rank: the same decision)
"""
from __future__ import annotations

import numpy as np

from ..train.amp import GradScaler
from .comm import ProcessGroup

__all__ = ["ShardedGradScaler"]


class ShardedGradScaler(GradScaler):
    """``GradScaler`` whose overflow check covers the gradients of every rank of ``group``."""

    def __init__(self, group: ProcessGroup, **kwargs):
        super().__init__(**kwargs)
        self.group = group

    def unscale_(self, optimizer) -> bool:
        found = super().unscale_(optimizer)
        if self.enabled and self.group.world_size > 1:
            flag = np.array([1.0 if found else 0.0])
            self.group.all_reduce_(flag)  # collective: every rank calls unscale_ once per step
            found = bool(flag[0] > 0)
            self._found_inf = found
        return found
