"""A run's checkpoint: everything needed to continue exactly where it stopped.

The state holds the model, optimizer, scheduler, gradient scaler, every regularizer's state,
the EMA, every random generator (per rank) and the position in the data, so a run that is
stopped (SIGINT/SIGTERM) and resumed takes the same steps on the same batches with the same
noise as one that was never stopped (exactly so on CPU with ``num_workers=0``; with worker
processes, random transforms inside the dataset are re-drawn per epoch, not per item). It also
holds the run's CPU threads (:mod:`genzoo.machine.cpu_share`): a resumed run goes on with the count it
started with.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from genzoo import __version__
from genzoo.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from genzoo.engine.config import TrainConfig
from genzoo.engine.distributed import DistContext, barrier
from genzoo.engine.guard import StepGuard
from genzoo.errors import ConfigError
from genzoo.interfaces.regularizer import Regularizer
from genzoo.machine import cpu_share

CHECKPOINT_FORMAT = 1


@dataclass
class RunState:
    """The parts of a training run that a checkpoint saves and restores."""

    path: Path
    config: TrainConfig
    ctx: DistContext
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    regularizers: Sequence[Regularizer]
    ema: nn.Module | None
    guard: StepGuard
    recent_losses: deque[float]
    last_metrics: dict[str, float]
    steps_per_epoch: int
    threads: dict[str, Any] = field(default_factory=dict)
    """The run's CPU threads (:func:`genzoo.machine.cpu_share.thread_record`), applied to torch; the
    trainer records the same dict in ``train_config.json``, and :meth:`resume` updates it in
    place."""

    def save(self, step: int, status: str = "running") -> None:
        """Write the checkpoint (rank 0; every rank must call it, as RNG states are gathered)."""
        state = self._state(step, status)
        if self.ctx.is_main:
            save_checkpoint(self.path, state)
        barrier()

    def _state(self, step: int, status: str) -> dict[str, Any]:
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        return {
            "format": CHECKPOINT_FORMAT,
            "genzoo_version": __version__,  # read by load_run_model, with the format
            "status": status,
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "regularizers": [r.state_dict() for r in self.regularizers],
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": self._gather_rng(),
            "data": {"epoch": epoch, "start": in_epoch * self.config.batch_size, "seed": self.config.seed},
            "counters": dict(self.guard.counters),
            "recent_losses": list(self.recent_losses),
            "last_metrics": dict(self.last_metrics),
            "world_size": self.ctx.world_size,
            "config": self.config.to_dict(),
            "cpu_threads": dict(self.threads),
        }

    def _gather_rng(self) -> list[dict[str, Any]]:
        """Every rank's generator states, in rank order (each rank draws its own noise)."""
        state = rng_state()
        if not self.ctx.is_distributed:
            return [state]
        states: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(states, state)
        return states

    def resume(self) -> int:
        """Restore everything from the checkpoint at :attr:`path`; returns its step. A
        checkpoint of another model, batch size, world size or regularizer list is refused
        with a message saying what differs."""
        ckpt = load_checkpoint(self.path)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{self.path}: checkpoint format {ckpt.get('format')!r} is not supported")
        old = ckpt["config"]
        if old["batch_size"] != self.config.batch_size or ckpt["world_size"] != self.ctx.world_size:
            raise ConfigError(
                f"{self.path} was written with batch_size={old['batch_size']} on "
                f"{ckpt['world_size']} process(es); this run has batch_size={self.config.batch_size} on "
                f"{self.ctx.world_size}, so the data position cannot be carried over. Use another out_dir "
                "or resume=False."
            )
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"{self.path} holds another model than this run builds (changed options or "
                f"keys?): {str(exc).splitlines()[0]}. Use another output folder, or --fresh to archive "
                "the old run."
            ) from exc
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"]:
            self.scaler.load_state_dict(ckpt["scaler"])
        if len(ckpt["regularizers"]) != len(self.regularizers):
            raise ConfigError(
                f"{self.path} holds {len(ckpt['regularizers'])} regularizer state(s); "
                f"this run has {len(self.regularizers)} regularizer(s)"
            )
        for reg, state in zip(self.regularizers, ckpt["regularizers"]):
            reg.load_state_dict(state)
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.load_state_dict(ckpt["ema"])
        set_rng_state(ckpt["rng"][self.ctx.rank])
        self.guard.counters.update(ckpt["counters"])
        self.recent_losses.extend(ckpt["recent_losses"])
        self.last_metrics.update(ckpt["last_metrics"])
        if self.threads:
            threads = cpu_share.resumed_threads(
                self.config.cpu_threads, self.threads["threads"], ckpt.get("cpu_threads"), self.path
            )
            self.threads.update(cpu_share.thread_record(self.config.cpu_threads, threads))
            cpu_share.apply_threads(threads)
        return int(ckpt["step"])
