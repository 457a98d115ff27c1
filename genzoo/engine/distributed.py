"""Data-parallel training with ``torchrun`` (PyTorch DistributedDataParallel).

``torchrun --nproc_per_node N script.py`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` builds the process group from
them (``env://``), with NCCL on CUDA and gloo on CPU. Each process reads its own shard of every
epoch through :class:`ResumableSampler` (a ``DistributedSampler`` that can start mid-epoch,
so a resumed run reads the same batches as an uninterrupted one). Only rank 0 writes files.
As in NVAE, ``batch_size`` is per process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sized
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from genzoo.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``; ``local_rank`` picks its GPU."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and logs (rank 0)."""
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_type: str) -> DistContext:
    """Join (or create from the environment) the default process group.

    A process group that already exists (set up by the caller) is used as it is. Otherwise,
    with ``WORLD_SIZE > 1`` the group is initialized from ``env://`` with ``nccl`` on CUDA and
    ``gloo`` on CPU; with no ``WORLD_SIZE`` the run is a single process.
    """
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistContext(dist.get_rank(), dist.get_world_size(), local, dist.get_backend())
    world = env_world_size()
    if world <= 1:
        return DistContext()
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return DistContext(dist.get_rank(), dist.get_world_size(), local, backend)


class ResumableSampler(DistributedSampler):
    """A shuffling ``DistributedSampler`` (one shard per rank, a new permutation per epoch from
    ``seed + epoch``) that can start at a position inside an epoch.

    With ``num_replicas=1, rank=0`` it is a plain seeded shuffler and needs no process group.
    Its state is ``(epoch, start)``; set it with :meth:`set_position` before iterating.
    """

    def __init__(self, dataset: Sized, *, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Iterate epoch ``epoch`` from its ``start``-th index (of this rank's shard)."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start={start!r}; expected 0 <= start <= {self.num_samples}")
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.epoch), "start": int(self.start), "seed": int(self.seed)}


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device, *, sync_bn: bool) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when distributed (else unchanged).

    ``sync_bn`` converts BatchNorm layers to SyncBatchNorm first (CUDA only, as torch's
    SyncBatchNorm is). Call before building the optimizer: the conversion replaces modules.
    """
    if not ctx.is_distributed:
        return model
    if sync_bn:
        if device.type != "cuda":
            raise ConfigError(
                "TrainConfig.sync_bn=True needs CUDA devices; torch's SyncBatchNorm has no CPU kernel"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``sum``, ``max`` or ``min``) across ranks; a no-op in one process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        dist.all_reduce(tensor, op=ops[op])
    return tensor


def all_reduce_scalars(scalars: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each named scalar summed across ranks, in one collective; returns Python floats by name
    (divide by the world size for means)."""
    names = list(scalars)
    stacked = torch.stack([scalars[name].detach().float().reshape(()) for name in names])
    return dict(zip(names, all_reduce_(stacked).tolist()))


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank; the object itself in one process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        holder = [obj]
        dist.broadcast_object_list(holder, src=src)
        return holder[0]
    return obj


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every SyncBatchNorm turned back into a BatchNorm2d holding
    the same parameters and statistics, for work done by one process alone (sampling with
    BatchNorm readjustment on rank 0 would otherwise wait forever for the other ranks)."""
    import copy

    module = copy.deepcopy(module)
    return _revert(module)


def _revert(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.SyncBatchNorm):
        local = nn.BatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        local.load_state_dict(module.state_dict())
        local.to(next(module.buffers(), torch.empty(0)).device)
        local.train(module.training)
        return local
    for name, child in module.named_children():
        setattr(module, name, _revert(child))
    return module
