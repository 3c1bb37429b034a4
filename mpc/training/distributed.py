"""Distributed plumbing: where this process sits in a run, joining and leaving the process group.

A plain ``wmpc train`` is a single-process :class:`DistContext`; under ``torchrun`` every process
joins one DistributedDataParallel group (NCCL on CUDA, gloo on CPU) and rank 0 writes every file.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mpc._config import resolve_device

__all__ = ["DistContext", "setup_distributed", "all_reduce_sum", "LossModule"]

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False  # we called init_process_group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()
            self.initialized_here = False


def setup_distributed(device: str | None = None) -> DistContext:
    """Join the process group described by torchrun's env vars (RANK, WORLD_SIZE, LOCAL_RANK).

    Without them (plain ``wmpc train``) this is a single-process context. Backend: NCCL when the
    device is CUDA, gloo otherwise; each rank uses GPU ``LOCAL_RANK``.

    Args:
        device: ``"cuda"``, ``"cpu"``, ``"cuda:1"`` ... or None / ``"auto"`` (cuda when available).

    Raises:
        ValueError: ``device`` names CUDA but no GPU is visible.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    ctx = DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kw = {"device_id": dev} if dev.type == "cuda" else {}
        # long timeout: rank 0 may build the latent cache while the others wait at a barrier
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=2), **kw)
        ctx.initialized_here = True
        log.info("joined process group: rank %d/%d (%s, %s)", rank, world, backend, dev)
    return ctx


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``values`` over the ranks in place (a no-op in a single process). Returns ``values``."""
    if ctx.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


class LossModule(torch.nn.Module):
    """Wraps ``WorldModel.loss`` as ``forward`` so DistributedDataParallel can hook it."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.model.loss(batch)
