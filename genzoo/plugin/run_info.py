"""The run descriptor handed to lifecycle hooks (see :mod:`genzoo.plugin.hookspecs`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


@dataclass
class RunInfo:
    """One training run, as plugins see it.

    - ``name``: the run's name (e.g. ``nvae_seed0``).
    - ``out_dir``: its output folder (checkpoint, ``metrics.jsonl``, images, ``results.json``).
    - ``config``: the resolved configuration as plain values (``train``, ``eval`` and whatever
      the caller adds, such as the model spec).
    - ``model``: the model being trained (the bare module, not a DDP or compiled wrapper).
    - ``step``: the step the run is at; the engine keeps it current.
    - ``rank`` / ``world_size``: this process in a data-parallel run. The engine calls the
      lifecycle hooks on rank 0 only, so ``rank`` is 0 there unless a caller builds its own.
    """

    name: str
    out_dir: Path
    config: dict[str, Any]
    model: nn.Module
    step: int = 0
    rank: int = 0
    world_size: int = 1
    extras: dict[str, Any] = field(default_factory=dict)
