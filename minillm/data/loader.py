"""A small, deterministic, resumable DataLoader (Happy LLM 5.3.3 / 6.1, ``torch.utils.data.DataLoader``).

What it does, in order, for epoch ``e``:

1. order the sample indices: ``np.random.default_rng([seed, e]).permutation(n)``
   if ``shuffle`` else ``0 .. n-1``; every epoch is reshuffled, and epoch ``e``
   is always shuffled the same way for the same seed;
2. cut the order into batches of ``batch_size`` (the last, short batch is
   dropped if ``drop_last``);
3. build each batch with ``collate_fn`` (default: stack every field of the
   items, e.g. ``(x, y)`` pairs -> two int64 arrays of shape (B, T)).

Unlike PyTorch's loader this one is **stateful**: it remembers ``epoch`` and
``position`` (how many batches of that epoch were handed out), and iterating
continues from there. ``state_dict()`` / ``load_state_dict()`` save and restore
that state, so a run resumed from a checkpoint sees exactly the batches the
uninterrupted run would have seen::

    loader = DataLoader(ds, batch_size=8, seed=0)
    for step, (x, y) in zip(range(max_steps), loader.iter_forever()):
        ...
        save(loader.state_dict())          # {"epoch": 3, "position": 17, "seed": 0}

    loader2 = DataLoader(ds, batch_size=8, seed=0)
    loader2.load_state_dict(saved)         # next batch == the one the first run got next

The state is advanced *before* a batch is handed out, so ``state_dict()`` taken
while you hold a batch always points at the next one.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import numpy as np

__all__ = ["DataLoader", "default_collate"]


def default_collate(items: list):
    """Stack a list of samples into a batch.

    Tuples/lists are collated field by field (``[(x, y), ...] -> (X, Y)``),
    dicts key by key, arrays/numbers are stacked with ``np.stack``; integer
    data becomes int64. Items of different lengths cannot be stacked: pad them
    with a collate function such as ``collate_sft``.
    """
    first = items[0]
    if isinstance(first, tuple) or isinstance(first, list):
        return tuple(default_collate([it[k] for it in items]) for k in range(len(first)))
    if isinstance(first, dict):
        return {k: default_collate([it[k] for it in items]) for k in first}
    arrs = [np.asarray(it) for it in items]
    shapes = {a.shape for a in arrs}
    if len(shapes) > 1:
        raise ValueError(
            f"default_collate cannot stack items of different shapes {sorted(shapes)[:4]}; "
            "pass a padding collate_fn, e.g. functools.partial(collate_sft, pad_id=tokenizer.pad_token_id)"
        )
    out = np.stack(arrs)
    if np.issubdtype(out.dtype, np.integer) or out.dtype == np.bool_:
        out = out.astype(np.int64, copy=False)
    return out


class DataLoader:
    """Batches over ``dataset`` (anything with ``len()`` and ``[i]``), deterministic and resumable.

    ``len(loader)`` is the number of batches per epoch. See the module docstring.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        collate_fn: Optional[Callable] = None,
    ):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.collate_fn = collate_fn if collate_fn is not None else default_collate
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out
        self._order_cache = (None, None)  # (epoch, index order)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Sample indices of ``epoch`` in the order they are batched."""
        if self._order_cache[0] != epoch:
            n = len(self.dataset)
            order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            self._order_cache = (epoch, order)
        return self._order_cache[1]

    def _batch(self, epoch: int, k: int):
        idx = self.epoch_order(epoch)[k * self.batch_size : (k + 1) * self.batch_size]
        return self.collate_fn([self.dataset[int(i)] for i in idx])

    def __iter__(self) -> Iterator:
        """The remaining batches of the current epoch; afterwards the loader is at the next epoch."""
        epoch = self.epoch
        while self.epoch == epoch and self.position < len(self):
            k = self.position
            # advance first, so state_dict() always names the *next* batch
            self.position += 1
            if self.position >= len(self):
                self.epoch, self.position = epoch + 1, 0
            yield self._batch(epoch, k)

    def iter_forever(self) -> Iterator:
        """Batches across epochs without end (for step-based training loops)."""
        if len(self) == 0:
            raise ValueError(
                f"dataset of {len(self.dataset)} samples gives no batch of {self.batch_size} "
                f"(drop_last={self.drop_last})"
            )
        while True:
            yield from self

    def state_dict(self) -> dict:
        """``{"epoch", "position", "seed"}``: where the next batch comes from."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()`` output (the seed is restored as well)."""
        missing = [k for k in ("epoch", "position", "seed") if k not in state]
        if missing:
            raise ValueError(f"loader state is missing {missing}; got keys {sorted(state)}")
        epoch, position, seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
        if epoch < 0 or seed < 0:
            raise ValueError(f"loader state needs epoch >= 0 and seed >= 0, got epoch={epoch}, seed={seed}")
        if not 0 <= position <= len(self):
            raise ValueError(f"loader state position={position} is outside [0, {len(self)}] batches per epoch")
        if position == len(self):  # saved after the last batch by an older convention: next epoch
            epoch, position = epoch + 1, 0
        self.epoch, self.position, self.seed = epoch, position, seed
        self._order_cache = (None, None)

    def __repr__(self) -> str:
        return (
            f"DataLoader(batches={len(self)}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"seed={self.seed}, drop_last={self.drop_last}, epoch={self.epoch}, position={self.position})"
        )
