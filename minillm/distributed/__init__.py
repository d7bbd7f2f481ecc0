"""``minillm.distributed``: training on N processes with MPI (Happy LLM 6.1.5: DDP and DeepSpeed ZeRO).

    mpiexec -n 2 python -m minillm pretrain --out runs/pre2 --zero-stage 2

    comm.py     ProcessGroup: rank, world_size and the collectives (all_reduce_, reduce_scatter,
                all_gather, broadcast_) on mpi4py; one process without MPI
    data.py     DistributedDataLoader: rank r reads slice r of every global batch
    ddp.py      GradientBuckets: average the gradients over the ranks, bucket by bucket
    zero.py     ZeroRedundancyOptimizer: ZeRO-1 (optimizer state) and ZeRO-2 (+ gradients) sharding
    trainer.py  DistributedTrainer: the Trainer with its seams filled in for N ranks
    amp.py      ShardedGradScaler: fp16 loss scaling that skips a step on every rank when any overflowed
    config.py   a DeepSpeed JSON config (ds_config_zero2.json) mapped onto our flags

Needs the extra: ``pip install -e ".[distributed]"`` (mpi4py + mpich, which brings ``mpiexec``).
Without it everything here still runs as one process.
"""
from .amp import ShardedGradScaler
from .comm import (
    MPIProcessGroup, ProcessGroup, SingleProcessGroup, get_process_group, init_process_group, is_mpi_available,
    launched_world_size,
)
from .config import DeepSpeedConfig, load_deepspeed_config
from .data import DistributedDataLoader
from .ddp import GradientBuckets, broadcast_parameters, replicas_max_difference
from .trainer import DistributedTrainer
from .zero import ZeroRedundancyOptimizer, zero_memory_formula

__all__ = [
    "DeepSpeedConfig", "DistributedDataLoader", "DistributedTrainer", "GradientBuckets", "MPIProcessGroup",
    "ProcessGroup", "ShardedGradScaler", "SingleProcessGroup", "ZeroRedundancyOptimizer", "broadcast_parameters", "get_process_group",
    "init_process_group", "is_mpi_available", "launched_world_size", "load_deepspeed_config",
    "replicas_max_difference", "zero_memory_formula",
]
