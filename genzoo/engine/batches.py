"""The training batches of one process: a resumable sampler sharded over ranks, the
``DataLoader``, and a generator reseeded per epoch, so that a run resumed at any step reads
the same batches as one that never stopped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from genzoo.engine.config import TrainConfig
from genzoo.engine.distributed import DistContext, ResumableSampler
from genzoo.errors import ConfigError


def batch_images(batch: Any) -> torch.Tensor:
    """The images of a batch: datasets may yield images or ``(image, label)`` pairs."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class TrainingBatches:
    """Full batches of ``config.batch_size`` images per process (the last partial one is
    dropped), in an order set by ``config.seed`` and the epoch."""

    def __init__(self, data: Dataset, config: TrainConfig, ctx: DistContext, device: torch.device) -> None:
        self.config = config
        self.sampler = ResumableSampler(data, num_replicas=ctx.world_size, rank=ctx.rank, seed=config.seed)
        self.steps_per_epoch = self.sampler.num_samples // config.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"TrainConfig.batch_size={config.batch_size} is larger than the {self.sampler.num_samples} "
                f"training images each of the {ctx.world_size} process(es) reads per epoch"
            )
        self.generator = torch.Generator()
        self.loader = DataLoader(
            data,
            batch_size=config.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
            generator=self.generator,
        )

    def from_step(self, step: int) -> Iterator[Any]:
        """The batches from training step ``step`` to the end of its epoch."""
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        self.sampler.set_position(epoch, in_epoch * self.config.batch_size)
        self.generator.manual_seed(self.config.seed * 100_003 + epoch)
        return iter(self.loader)
