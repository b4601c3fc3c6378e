"""One CPU process, one GPU, or many processes under ``torchrun`` (DistributedDataParallel)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup() -> tuple[int, int, torch.device]:
    """(rank, world size, device) for this process; initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def wrap(model: torch.nn.Module, world: int) -> torch.nn.Module:
    return torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
