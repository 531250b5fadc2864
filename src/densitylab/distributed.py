"""Data-parallel training across processes through ``torch.distributed`` (launched by torchrun).

Every process holds the whole (in-memory) data set and draws the same batch order from the same
seed; each takes its own shard of every global batch, and DistributedDataParallel averages the
gradients, so the optimiser steps exactly as one process would on the global batch (up to the
order of floating-point sums). Nothing here is a parallel engine of its own: process start,
rendezvous and failure handling are torchrun's, communication is gloo (CPU) or NCCL (CUDA).

Launch, e.g. on one machine with two processes::

    torchrun --standalone --nproc-per-node 2 -m densitylab train moons --distributed --out run/
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def is_initialized() -> bool:
    """Whether this process has joined a process group."""
    return dist.is_available() and dist.is_initialized()


def is_active() -> bool:
    """Whether a process group with more than one process is running."""
    return is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0: the process that writes files and shows progress."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """Whether the environment carries torchrun's rendezvous variables."""
    return all(name in os.environ for name in LAUNCHER_VARIABLES)


def local_device(device: str | torch.device) -> torch.device:
    """The device of this process: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


@contextmanager
def process_group(device: str | torch.device = "cpu", timeout_s: float = 600.0) -> Iterator[None]:
    """Join the process group torchrun set up (gloo on CPU, NCCL on CUDA); leave it afterwards.

    ``timeout_s`` bounds every collective operation: a process whose peer died without torchrun
    noticing gets an error after that long instead of waiting forever.
    """
    if not launched_by_torchrun():
        missing = [name for name in LAUNCHER_VARIABLES if name not in os.environ]
        raise ValueError(
            f"distributed training needs the variables torchrun sets ({', '.join(missing)} "
            "missing); launch with: torchrun --nproc-per-node N -m densitylab train ..."
        )
    device = local_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield
    finally:
        dist.destroy_process_group()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over all processes, in place; a no-op without a process group."""
    if is_active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def shard(tensor: Tensor, dim: int) -> Tensor:
    """This process's share of ``tensor`` along ``dim``: every ``world_size``-th entry."""
    if not is_active():
        return tensor
    index = torch.arange(rank(), tensor.shape[dim], world_size(), device=tensor.device)
    return tensor.index_select(dim, index)
