"""Process-group setup for every way the trainer is started.

``torchrun`` and the ``deepspeed`` launcher export RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT for each process; without a launcher the trainer runs as a single process and sets
them itself (rank 0 of 1, a free localhost port), so one code path initialises DeepSpeed's
process group in all cases: NCCL on CUDA, gloo on CPU (or ``trainer.dist_backend``).
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from typing import Optional

import torch

from training.config import ConfigError

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the data-parallel group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_environment() -> None:
    """Set the launcher variables for a lone process (no torchrun/deepspeed launcher).

    A partially set environment is left alone so the process group reports what is missing.
    """
    if any(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return
    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(backend: Optional[str] = None, timeout_minutes: int = 30) -> DistributedContext:
    """Initialise torch.distributed through DeepSpeed and return this process's place in it.

    backend: ``trainer.dist_backend``; None picks nccl on CUDA, gloo on CPU.
    """
    import deepspeed
    import torch.distributed as dist

    single_process_environment()
    missing = [name for name in LAUNCHER_VARIABLES if name not in os.environ]
    if missing:
        raise ConfigError(f"launcher environment incomplete, missing {missing}: start with torchrun, the deepspeed "
                           "launcher, or no launcher at all (then none of RANK/WORLD_SIZE/LOCAL_RANK may be set)")
    backend = backend or default_backend()
    local_rank = int(os.environ["LOCAL_RANK"])
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ConfigError("trainer.dist_backend=nccl needs CUDA; use gloo (or null) on CPU")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False,
                                   timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                              backend=backend, device=device)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Destroy the process group (quietly if it is already gone)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
