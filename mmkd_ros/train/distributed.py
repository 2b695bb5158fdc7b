"""Single-process or DDP under ``torchrun``: the same recipe code runs both.

``torchrun --nproc_per_node=N training/train_teacher.py ...`` sets ``WORLD_SIZE``/``RANK``/
``LOCAL_RANK``; with ``WORLD_SIZE > 1`` we initialise a process group (gloo on CPU, nccl on CUDA),
shard batches with a per-rank sampler and average gradients with DDP. Rank 0 alone writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, world size and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: str
    owns_group: bool = False  # this call created the process group, so it also destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str) -> DistInfo:
    """Initialise the process group when launched by torchrun with several processes.

    ``device`` is already resolved (``cpu`` / ``cuda`` / ``cuda:N``); under DDP on CUDA each rank
    takes ``cuda:LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1:
        if device.startswith("cuda"):
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(device)
        if not torch_dist.is_initialized():
            torch_dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
            return DistInfo(rank, world_size, local_rank, device, owns_group=True)
    return DistInfo(rank, world_size, local_rank, device)


def cleanup_distributed(dist: DistInfo) -> None:
    """Destroy the process group if ``dist`` created it (a caller that set it up keeps it)."""
    if dist.owns_group and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def wrap_ddp(module: nn.Module, dist: DistInfo) -> nn.Module:
    """DDP-wrap a module that has trainable parameters (unchanged in a single process)."""
    if not dist.distributed:
        return module
    device_ids = [torch.device(dist.device).index] if dist.device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (used to save it, or to call it without gradient sync)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def barrier(dist: DistInfo) -> None:
    if dist.distributed:
        torch_dist.barrier()


def broadcast_buffers(module: nn.Module, dist: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP averages gradients, so parameters stay equal, but each rank updates its BN statistics with
    its own batches; evaluating or saving after this makes every replica the same model.
    """
    if dist.distributed:
        for buffer in unwrap(module).buffers():
            torch_dist.broadcast(buffer, src=0)


def replica_max_abs_diff(module: nn.Module, dist: DistInfo) -> float:
    """Largest |difference| between this rank's parameters/buffers and rank 0's (0.0 in one process).

    A cheap end-of-training check that DDP kept the replicas identical; reduced with MAX so every
    rank returns the same number.
    """
    if not dist.distributed:
        return 0.0
    worst = torch.zeros((), dtype=torch.float64, device=dist.device)
    for tensor in list(unwrap(module).parameters()) + list(unwrap(module).buffers()):
        reference = tensor.detach().clone()
        torch_dist.broadcast(reference, src=0)
        if tensor.is_floating_point():
            worst = torch.maximum(worst, (tensor.detach() - reference).abs().max().double())
        elif not torch.equal(tensor, reference):
            worst = torch.maximum(worst, torch.ones_like(worst))
    torch_dist.all_reduce(worst, op=torch_dist.ReduceOp.MAX)
    return float(worst)
