"""ZeRO stages 1 and 2: shard the optimizer state and the gradients over the ranks (DeepSpeed's ZeRO).

Plain data parallel (stage 0) keeps N full copies of everything. With Adam in float32 a
model of P parameters costs, per rank, 4P bytes of weights, 4P of gradients and 8P of Adam
moments (``exp_avg``, ``exp_avg_sq``). ZeRO (Rajbhandari et al., 2020) notices that each rank
only *needs* the part of the optimizer it updates:

    stage 0  (DDP)  weights 4P   gradients 4P     Adam state 8P       all-reduce the gradients
    stage 1  (P_os) weights 4P   gradients 4P     Adam state 8P / N   all-reduce, update my shard, all-gather weights
    stage 2  (P_g)  weights 4P   gradients 4P / N Adam state 8P / N   reduce-scatter, update my shard, all-gather weights

How one step goes, for each parameter group (its parameters laid end to end as one flat
vector of ``numel`` values, padded to ``N * L``; rank r owns elements ``[r*L, (r+1)*L)``)::

    flat_grad = concat(p.grad for p in group)            # (N*L,)
    stage 1:  all_reduce_(flat_grad) / N; my_grad = flat_grad[r*L:(r+1)*L]
    stage 2:  my_grad = reduce_scatter(flat_grad) / N; every p.grad freed
    clip:     total_norm = sqrt(sum over ranks of |my_grad|^2)   (one all-reduce of a number)
    update:   the wrapped optimizer's own step, on my shard only (same elementwise arithmetic)
    weights:  flat = all_gather(my_shard); copy back into every p.data

Adam's update is elementwise, so updating the shards one by one is the same arithmetic as
updating the whole model: the weights equal stage 0's (``tests/test_distributed.py``).

Checkpoints stay those of a single process: ``consolidate_state_dict()`` (every rank) gathers
the shards back into the wrapped optimizer's per-parameter ``state_dict`` format, and
``load_state_dict`` slices a full one into this rank's shard -- so a run saved with ZeRO on 2
ranks resumes on 1 rank without it, and back.

Honest limit: our autograd writes each ``p.grad`` in full during backward, so stage 2 frees the
full gradients only after the reduce-scatter; DeepSpeed reduces buckets *during* backward so
the full gradient never exists at once. The per-rank bytes we report are those held from the
reduction to the next step.
"""
from __future__ import annotations

import math

import numpy as np

from ..optim import Adam, SGD
from ..optim.optimizer import Optimizer
from ..tensor import Tensor
from .comm import ProcessGroup

__all__ = ["ZeroRedundancyOptimizer", "held_bytes", "zero_memory_formula"]

_HYPER_SKIP = ("params", "param_names")


def zero_memory_formula(num_params: int, world_size: int, stage: int, itemsize: int = 4, state_arrays: int = 2) -> dict:
    """Bytes per rank the ZeRO paper predicts for gradients and optimizer state (Adam: 2 arrays).

    Sharded sizes round each parameter group up to a multiple of ``world_size`` in the real
    optimizer; this formula uses ``ceil(num_params / world_size)``.
    """
    shard = math.ceil(num_params / world_size)
    grads = num_params if stage < 2 else shard
    state = num_params if stage < 1 else shard
    return {"gradients": grads * itemsize, "optimizer_state": state * state_arrays * itemsize}


def held_bytes(arrays) -> int:
    """Bytes of memory behind ``arrays``, each buffer counted once (views of one buffer share it)."""
    seen, total = set(), 0
    for a in arrays:
        base = a
        while isinstance(base.base, np.ndarray):
            base = base.base
        if id(base) not in seen:
            seen.add(id(base))
            total += base.nbytes
    return int(total)


class _GroupShard:
    """One parameter group laid flat: where each parameter sits, and this rank's slice."""

    def __init__(self, params: list, world_size: int, rank: int):
        self.params = params
        self.sizes = [int(p.data.size) for p in params]
        self.offsets = np.cumsum([0] + self.sizes[:-1]).tolist()
        self.numel = sum(self.sizes)
        self.shard_len = -(-self.numel // world_size)  # ceil: the last rank's slice ends in padding
        self.padded = self.shard_len * world_size
        self.lo = rank * self.shard_len
        self.dtype = params[0].dtype

    def flat(self, arrays: list) -> np.ndarray:
        """The arrays (one per parameter; None counts as zeros) laid end to end and padded: (N*L,)."""
        out = np.zeros(self.padded, dtype=self.dtype)
        for a, off, size in zip(arrays, self.offsets, self.sizes):
            if a is not None:
                out[off : off + size] = a.reshape(-1)
        return out

    def take_mine(self, arrays: list) -> np.ndarray:
        """This rank's slice of ``flat(arrays)``, copied without building the whole flat vector: (L,)."""
        out = np.zeros(self.shard_len, dtype=self.dtype)
        hi = self.lo + self.shard_len
        for a, off, size in zip(arrays, self.offsets, self.sizes):
            start, stop = max(off, self.lo), min(off + size, hi)
            if start < stop:
                out[start - self.lo : stop - self.lo] = a.reshape(-1)[start - off : stop - off]
        return out

    def mine(self, flat: np.ndarray) -> np.ndarray:
        """This rank's slice of a flat (N*L,) vector: (L,)."""
        return flat[self.lo : self.lo + self.shard_len]

    def split(self, flat: np.ndarray) -> list:
        """The flat vector cut back into one array per parameter (views)."""
        return [flat[off : off + size].reshape(p.shape) for p, off, size in zip(self.params, self.offsets, self.sizes)]


class ZeroRedundancyOptimizer:
    """Wrap ``optimizer`` (Adam, AdamW or SGD) so each rank of ``group`` keeps only its shard of the state.

    ``stage=1`` shards the optimizer state; ``stage=2`` the gradients as well. The wrapped
    optimizer keeps its ``param_groups`` (the lr scheduler changes them there, and they are
    copied to the shard's optimizer at each step); its ``state`` stays empty except while a
    checkpoint is written or read. Every method that talks to other ranks is marked
    *collective*: every rank must call it, in the same order.
    """

    def __init__(self, optimizer: Optimizer, group: ProcessGroup, stage: int = 1):
        if not isinstance(optimizer, (Adam, SGD)):
            raise TypeError("ZeroRedundancyOptimizer shards elementwise optimizers (SGD, Adam, AdamW), "
                            f"got {type(optimizer).__name__}")
        if stage not in (1, 2):
            raise ValueError(f"ZeroRedundancyOptimizer: stage must be 1 or 2 (stage 0 is plain data parallel), got {stage!r}")
        if optimizer.state:
            raise ValueError("ZeroRedundancyOptimizer: wrap the optimizer before its first step (it already has "
                             "state); load a checkpoint through load_state_dict instead")
        self.optimizer = optimizer
        self.group = group
        self.stage = stage
        n, r = group.world_size, group.rank
        self.shards = [_GroupShard(g["params"], n, r) for g in optimizer.param_groups]
        for gi, g in enumerate(optimizer.param_groups):
            if len({p.dtype for p in g["params"]}) != 1:
                raise TypeError(f"ZeroRedundancyOptimizer: param group {gi} mixes dtypes")
        # this rank's slice of the weights, as one parameter per group, updated by an optimizer of the same class
        self.shard_params = [Tensor(s.take_mine([p.data for p in s.params]), requires_grad=True)
                             for s in self.shards]
        inner_groups = [{**{k: v for k, v in g.items() if k not in _HYPER_SKIP}, "params": [sp]}
                        for g, sp in zip(optimizer.param_groups, self.shard_params)]
        self.inner = type(optimizer)(inner_groups)
        self._reduced = False
        self._consolidated = None

    @property
    def param_groups(self) -> list:
        return self.optimizer.param_groups

    # ------------------------------------------------------------------ one step
    def reduce_gradients(self) -> None:
        """*Collective.* Average the gradients over the ranks and keep this rank's shard of them."""
        inv = None
        for gi, (s, sp) in enumerate(zip(self.shards, self.shard_params)):
            missing = [i for i, p in enumerate(s.params) if p.grad is None]
            if missing:
                names = self.optimizer.param_groups[gi].get("param_names")
                which = names[missing[0]] if names else f"param {missing[0]}"
                raise ValueError(f"ZeroRedundancyOptimizer: {which} of group {gi} has no gradient; ZeRO shards flat "
                                 "gradients, so every parameter it holds needs one (leave frozen ones out of the optimizer)")
            flat = s.flat([p.grad.data for p in s.params])  # (N*L,) this rank's gradient
            inv = s.dtype.type(1.0 / self.group.world_size)
            if self.stage == 1:
                self.group.all_reduce_(flat)  # every rank: the summed gradient
                flat *= inv
                for p, avg in zip(s.params, s.split(flat)):  # the full averaged gradients stay (stage 1), as views
                    p.grad = Tensor(avg)
                mine = s.mine(flat)  # my shard is a view of the same buffer: no second copy
            else:
                mine = self.group.reduce_scatter(flat)  # only my slice of the sum
                mine *= inv
                for p in s.params:
                    p.grad = None  # stage 2: the full gradients are gone
            sp.grad = Tensor(mine)
        self._reduced = True

    def clip_grad_norm_(self, max_norm: float) -> float:
        """*Collective.* ``clip_grad_norm_`` on the sharded gradients; returns the global norm before clipping."""
        if not self._reduced:
            self.reduce_gradients()
        max_norm = float(max_norm)
        if max_norm < 0:
            raise ValueError(f"max_norm must be >= 0, got {max_norm}")
        local = np.array([sum(float(np.dot(sp.grad.data, sp.grad.data)) for sp in self.shard_params)])
        total = math.sqrt(float(self.group.all_reduce_(local)[0]))  # sum of squares over all ranks
        if math.isfinite(total):
            coef = max_norm / (total + 1e-6)
            if coef < 1.0:
                for sp in self.shard_params:
                    sp.grad.data *= sp.grad.data.dtype.type(coef)
        return total

    def step(self) -> None:
        """*Collective.* Update this rank's shard, then all-gather the new weights into every parameter."""
        if not self._reduced:
            self.reduce_gradients()
        for outer, inner in zip(self.optimizer.param_groups, self.inner.param_groups):
            inner.update({k: v for k, v in outer.items() if k not in _HYPER_SKIP})  # the scheduler's lr
        for s, sp in zip(self.shards, self.shard_params):  # my slice of the weights as they are now (a resume may load them)
            sp.data[...] = s.take_mine([p.data for p in s.params])
        self.inner.step()
        for s, sp in zip(self.shards, self.shard_params):
            flat = self.group.all_gather(sp.data)  # (N*L,) the updated weights of every rank
            for p, new in zip(s.params, s.split(flat)):
                p.data[...] = new
        self._reduced = False
        self._consolidated = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)
        self.inner.zero_grad(set_to_none=True)
        self._reduced = False

    # ------------------------------------------------------------------ memory
    def memory_report(self) -> dict:
        """Bytes this rank holds now: gradients (full ``p.grad`` + shard) and optimizer state arrays."""
        grads = [p.grad.data for s in self.shards for p in s.params if p.grad is not None]
        grads += [sp.grad.data for sp in self.shard_params if sp.grad is not None]
        state = [v for st in self.inner.state.values() for v in st.values() if isinstance(v, np.ndarray)]
        state += [v for st in self.optimizer.state.values() for v in st.values() if isinstance(v, np.ndarray)]
        return {"gradients": held_bytes(grads), "optimizer_state": held_bytes(state),
                "shard_weights": held_bytes([sp.data for sp in self.shard_params])}

    # ------------------------------------------------------------------ checkpoints
    def consolidate_state_dict(self) -> None:
        """*Collective.* Gather every rank's shard of the state into ``optimizer.state`` (full, per parameter).

        Afterwards ``state_dict()`` (and the wrapped optimizer's) is exactly what a single process
        would save; ``release_consolidated()`` frees it again.
        """
        full: dict = {}
        for s, sp in zip(self.shards, self.shard_params):
            st = self.inner.state.get(sp)
            if not st:  # before the first step: no state anywhere
                continue
            gathered = {k: self.group.all_gather(np.ascontiguousarray(v)) for k, v in st.items() if isinstance(v, np.ndarray)}
            for i, p in enumerate(s.params):
                pstate = {k: v for k, v in st.items() if not isinstance(v, np.ndarray)}  # e.g. step
                for k, flat in gathered.items():
                    pstate[k] = s.split(flat)[i].copy()
                full[p] = pstate
        self.optimizer.state = full
        self._consolidated = True

    def release_consolidated(self) -> None:
        self.optimizer.state = {}
        self._consolidated = None

    def state_dict(self) -> dict:
        """The single-process ``state_dict`` (call ``consolidate_state_dict()`` on every rank first)."""
        if not self._consolidated:
            raise RuntimeError("ZeroRedundancyOptimizer.state_dict(): call consolidate_state_dict() on every rank "
                               "first (the state is sharded over the ranks)")
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a single-process ``state_dict`` (validated by the wrapped optimizer) and keep this rank's shard."""
        self.optimizer.load_state_dict(state_dict)
        self.shard_from_optimizer()

    def shard_from_optimizer(self) -> None:
        """Take this rank's shard of the wrapped optimizer's full state (and weights); then free the full state."""
        for outer, inner in zip(self.optimizer.param_groups, self.inner.param_groups):
            inner.update({k: v for k, v in outer.items() if k not in _HYPER_SKIP})
        self.inner.state = {}
        for s, sp in zip(self.shards, self.shard_params):
            sp.data[...] = s.take_mine([p.data for p in s.params])
            states = [self.optimizer.state.get(p) for p in s.params]
            if not any(states):
                continue
            if not all(states):
                raise ValueError("ZeroRedundancyOptimizer: the state covers only some parameters of a group")
            pstate = {k: v for k, v in states[0].items() if not isinstance(v, np.ndarray)}
            for k, v in states[0].items():
                if isinstance(v, np.ndarray):
                    pstate[k] = s.take_mine([st[k] for st in states])
            self.inner.state[sp] = pstate
        self.release_consolidated()
