"""Data-parallel training of one run: ``torchrun --nproc_per_node=N train.py ...``.

torchrun starts N processes and sets RANK, WORLD_SIZE and LOCAL_RANK; ``Distributed.from_environment`` joins
them into a process group (gloo on CPU, nccl on GPU) and the model is wrapped in DistributedDataParallel.
Every rank draws the same batches from the run's generator and keeps its share of each (the global batch stays
``batch_size_train``); gradients are averaged over the ranks. Each rank draws its own memory sets and dropout
masks from streams seeded by (run, rank, epoch), so a resumed run draws the same ones. Rank 0 alone takes the
run's lock and writes checkpoints, records and results.json; it evaluates while the others wait.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from .config import ConfigError


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device_setting: str) -> Optional["Distributed"]:
        """The process group torchrun asked for, joined; None for an ordinary single process."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return None
        context = cls(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
        cuda = device_setting != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(context.local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        return context

    def device(self, device: torch.device) -> torch.device:
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else device

    def wrap(self, model: torch.nn.Module, device: torch.device, sync_batchnorm: bool) -> torch.nn.Module:
        if sync_batchnorm:
            if device.type != "cuda":
                raise ConfigError("sync_batchnorm needs CUDA GPUs (torch's SyncBatchNorm runs on GPUs only); on CPU "
                                  "each rank normalises its share of the batch")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.local_rank] if device.type == "cuda" else None)

    def seed(self, run: int, epoch: int) -> int:
        """The seed of this rank's memory sets and dropout masks in ``epoch`` of ``run``."""
        return ((run * 1_000_003 + epoch) * 1_009 + self.rank) % (2 ** 63)

    def barrier(self) -> None:
        dist.barrier()

    def finish(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
