"""Processes and collectives (Happy LLM 6.1.5; ``torch.distributed`` on MPI).

Data-parallel training runs the same script in N processes ("ranks"), started by ``mpiexec``::

    mpiexec -n 2 python -m minillm pretrain --out runs/pre2

Each process is one copy of the model. They talk only through *collectives*: calls every rank
makes together, with the same sizes, in the same order. We use four, from MPI via ``mpi4py``
(``pip install -e ".[distributed]"`` installs it with ``mpich``, whose ``mpiexec`` starts the ranks)::

    all_reduce_     every rank gives an array; every rank gets the elementwise sum
    reduce_scatter  every rank gives an array of N equal blocks; rank r gets the sum of block r
    all_gather      every rank gives one block; every rank gets all N blocks, in rank order
    broadcast_      rank 0's array is copied into every rank's array

Worked example with N=2: rank 0 holds [1, 2, 3, 4], rank 1 holds [10, 20, 30, 40].
``reduce_scatter`` gives rank 0 [11, 22] and rank 1 [33, 44]; ``all_gather`` of those gives
both ranks [11, 22, 33, 44] -- which is ``all_reduce``. That is how ``all_reduce_`` is built
here (it is the "ring all-reduce" NCCL and Horovod use): each sum is computed by exactly one
rank and then copied, so every rank ends with *bit-identical* numbers. (MPI's own Allreduce
only recommends that; replicas whose weights drift apart by rounding would train slowly apart.)

``init_process_group()`` returns a ``ProcessGroup``: an MPI one when the script was started by
``mpiexec`` with more than one process, otherwise ``SingleProcessGroup`` (rank 0 of 1, every
collective a copy), so the same code runs with and without MPI.
"""
from __future__ import annotations

import os
import sys
import time
from abc import ABC, abstractmethod
from typing import Optional

import numpy as np

__all__ = [
    "ProcessGroup", "SingleProcessGroup", "MPIProcessGroup", "init_process_group", "get_process_group",
    "launched_world_size", "is_mpi_available", "current_process_group",
]

# Set by the launchers: MPICH/Intel MPI (Hydra) set PMI_SIZE, Open MPI sets OMPI_COMM_WORLD_SIZE.
_WORLD_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_world_size() -> int:
    """How many processes the launcher started (1 when the script was run directly)."""
    for var in _WORLD_SIZE_VARS:
        value = os.environ.get(var)
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                raise ValueError(f"environment variable {var}={value!r} is not a process count") from None
    return 1


def is_mpi_available() -> bool:
    """True if ``mpi4py`` can be imported (the ``[distributed]`` extra is installed)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def _check_array(a, what: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what} expects a NumPy array, got {type(a).__name__}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what} needs a C-contiguous array (got strides {a.strides} for shape {a.shape})")
    return a


class ProcessGroup(ABC):
    """The ranks of one job and the collectives between them (see the module docstring).

    ``rank`` is this process's number (0 .. world_size - 1); rank 0 writes the files.
    """

    rank: int = 0
    world_size: int = 1

    # --- subclasses implement these four + barrier and the object versions
    def all_reduce_(self, array: np.ndarray) -> np.ndarray:
        """Sum ``array`` over all ranks, in place (every rank gets bit-identical values); returns it."""
        _check_array(array, "all_reduce_")
        n = self.world_size
        if n == 1:
            return array
        flat = array.reshape(-1)
        pad = (-flat.size) % n
        padded = np.concatenate([flat, np.zeros(pad, flat.dtype)]) if pad else flat
        shard = self.reduce_scatter(padded)  # (size/n,): this rank's block, summed over ranks
        full = self.all_gather(shard)  # (size,): every block, from its owner
        flat[...] = full[: flat.size]
        return array

    @abstractmethod
    def reduce_scatter(self, array: np.ndarray) -> np.ndarray:
        """``array`` (length divisible by world_size) summed over ranks; returns this rank's block."""

    @abstractmethod
    def all_gather(self, shard: np.ndarray) -> np.ndarray:
        """Every rank's ``shard`` (all the same shape), concatenated in rank order along axis 0."""

    @abstractmethod
    def broadcast_(self, array: np.ndarray, src: int = 0) -> np.ndarray:
        """Copy rank ``src``'s ``array`` into every rank's ``array`` (in place); returns it."""

    @abstractmethod
    def barrier(self) -> None:
        """Wait until every rank got here."""

    @abstractmethod
    def broadcast_object(self, obj, src: int = 0):
        """Rank ``src``'s Python object (JSON-like data), returned on every rank."""

    @abstractmethod
    def all_gather_object(self, obj) -> list:
        """Every rank's Python object, as a list in rank order."""

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (one failing rank would leave the others waiting forever in
        their next collective). A no-op for one process."""

    def is_main_process(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size})"


class SingleProcessGroup(ProcessGroup):
    """One process: rank 0 of 1. Every collective is the identity (``all_gather`` copies)."""

    def reduce_scatter(self, array):
        return _check_array(array, "reduce_scatter").copy()

    def all_gather(self, shard):
        return _check_array(shard, "all_gather").copy()

    def broadcast_(self, array, src: int = 0):
        if src != 0:
            raise ValueError(f"broadcast_: src={src} but the only rank is 0")
        return _check_array(array, "broadcast_")

    def barrier(self):
        return None

    def broadcast_object(self, obj, src: int = 0):
        return obj

    def all_gather_object(self, obj):
        return [obj]


class MPIProcessGroup(ProcessGroup):
    """The ranks of ``MPI.COMM_WORLD`` (or ``comm``), through mpi4py's buffer calls (no pickling of arrays)."""

    def __init__(self, comm=None):
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = int(self.comm.Get_rank())
        self.world_size = int(self.comm.Get_size())

    def reduce_scatter(self, array):
        _check_array(array, "reduce_scatter")
        n = self.world_size
        if array.shape[0] % n:
            raise ValueError(f"reduce_scatter: length {array.shape[0]} is not divisible by world_size={n}")
        out = np.empty((array.shape[0] // n,) + array.shape[1:], dtype=array.dtype)
        self.comm.Reduce_scatter_block(array, out, op=self._MPI.SUM)
        return out

    def all_gather(self, shard):
        _check_array(shard, "all_gather")
        out = np.empty((shard.shape[0] * self.world_size,) + shard.shape[1:], dtype=shard.dtype)
        self.comm.Allgather(shard, out)
        return out

    def broadcast_(self, array, src: int = 0):
        if not 0 <= src < self.world_size:
            raise ValueError(f"broadcast_: src={src} is not a rank of {self.world_size}")
        self.comm.Bcast(_check_array(array, "broadcast_"), root=src)
        return array

    def barrier(self):
        # MPI's Barrier spins at 100 % CPU while it waits; a rank waiting for rank 0 (writing files,
        # training the tokenizer, evaluating) would take a core from it. Poll a non-blocking barrier
        # and sleep in between: 1 ms of latency, and barriers are rare (never inside a training step).
        request = self.comm.Ibarrier()
        while not request.Test():
            time.sleep(0.001)

    def broadcast_object(self, obj, src: int = 0):
        return self.comm.bcast(obj, root=src)

    def all_gather_object(self, obj):
        return self.comm.allgather(obj)

    def abort(self, code: int = 1) -> None:
        # mpiexec forwards each rank's stdout/stderr through pipes, and Abort kills the job at once:
        # on a busy machine the launcher had not yet read the failing rank's message and the user saw
        # nothing (a test run under load lost it). Flush, then give the forwarder a moment.
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(0.5)
        self.comm.Abort(int(code))


_GROUP: Optional[ProcessGroup] = None


def init_process_group(backend: str = "auto") -> ProcessGroup:
    """The process group of this job (created once; later calls return the same one).

    ``backend``: ``"auto"`` (MPI when started by ``mpiexec -n N`` with N > 1, else one process),
    ``"mpi"`` (always MPI; needs mpi4py) or ``"single"``.
    """
    global _GROUP
    if backend not in ("auto", "mpi", "single"):
        raise ValueError(f"init_process_group: backend must be 'auto', 'mpi' or 'single', got {backend!r}")
    if _GROUP is not None:
        if backend == "mpi" and not isinstance(_GROUP, MPIProcessGroup):
            raise RuntimeError("init_process_group: a single-process group was already created in this process")
        return _GROUP
    launched = launched_world_size()
    if backend == "single" or (backend == "auto" and launched == 1):
        _GROUP = SingleProcessGroup()
        return _GROUP
    if not is_mpi_available():
        raise RuntimeError(
            f"this process was started as one of {launched} MPI ranks, but mpi4py is not installed; "
            'install the distributed extra: pip install -e ".[distributed]" (mpi4py + mpich)'
        )
    _GROUP = MPIProcessGroup()
    if _GROUP.world_size != launched and launched > 1:
        raise RuntimeError(f"the launcher says {launched} processes but MPI sees {_GROUP.world_size}: "
                           "was mpiexec from another MPI than the one mpi4py was built with?")
    return _GROUP


def current_process_group() -> Optional[ProcessGroup]:
    """The group made by ``init_process_group()``, or None if none was made in this process."""
    return _GROUP


def get_process_group() -> ProcessGroup:
    """The group ``init_process_group()`` made (made now with ``backend="auto"`` if needed)."""
    return _GROUP if _GROUP is not None else init_process_group()
