"""One runtime object for device and DDP wiring: the same recipe code runs single-process and under torchrun.

``torchrun --nproc_per_node=N training/train_teacher.py ...`` sets ``WORLD_SIZE``/``RANK``/
``LOCAL_RANK``; with ``WORLD_SIZE > 1`` :meth:`Runtime.start` initialises a process group (gloo on
CPU, nccl on CUDA). Recipes keep the plain modules and ask the runtime for a DDP-wrapped view
(:meth:`Runtime.wrap`) to train through, so no step ever unwraps anything. Rank 0 alone writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn


@dataclass(frozen=True)
class Runtime:
    """Where this process sits: rank, world size and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: str
    owns_group: bool = False  # this runtime created the process group, so it also destroys it

    @classmethod
    def start(cls, device: str) -> "Runtime":
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
                return cls(rank, world_size, local_rank, device, owns_group=True)
        return cls(rank, world_size, local_rank, device)

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Destroy the process group if this runtime created it (a caller that set it up keeps it)."""
        if self.owns_group and torch_dist.is_initialized():
            torch_dist.destroy_process_group()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def wrap(self, module: nn.Module) -> nn.Module:
        """A DDP view of a module with trainable parameters (the module itself in one process)."""
        if not self.distributed:
            return module
        device_ids = [torch.device(self.device).index] if self.device.startswith("cuda") else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    def barrier(self) -> None:
        if self.distributed:
            torch_dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
        if not self.distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics, spectral-norm vectors) to every rank.

        DDP averages gradients, so parameters stay equal, but each rank updates its BN statistics with
        its own batches; evaluating or saving after this makes every replica the same model.
        """
        if self.distributed:
            for buffer in module.buffers():
                torch_dist.broadcast(buffer, src=0)

    def replica_max_abs_diff(self, module: nn.Module) -> float:
        """Largest |difference| between this rank's parameters/buffers and rank 0's (0.0 in one process).

        A cheap end-of-training check that DDP kept the replicas identical; reduced with MAX so every
        rank returns the same number.
        """
        if not self.distributed:
            return 0.0
        worst = torch.zeros((), dtype=torch.float64, device=self.device)
        for tensor in list(module.parameters()) + list(module.buffers()):
            reference = tensor.detach().clone()
            torch_dist.broadcast(reference, src=0)
            if tensor.is_floating_point():
                worst = torch.maximum(worst, (tensor.detach() - reference).abs().max().double())
            elif not torch.equal(tensor, reference):
                worst = torch.maximum(worst, torch.ones_like(worst))
        torch_dist.all_reduce(worst, op=torch_dist.ReduceOp.MAX)
        return float(worst)
