"""``torch.compile`` for training: the repeated blocks one class at a time, or the whole model,
optionally replayed as CUDA graphs (``TrainConfig.compile``, ``TrainConfig.cuda_graphs``).

A deep hierarchy is the same few blocks many times over: NVAE's official CIFAR-10 model runs
120 encoder and decoder cells and 30 latent groups of a handful of configurations. Compiling
the whole model traces and optimizes every instance again (on an H100 the CIFAR-sized model had
not finished after 9.5 minutes, benchmarks/README.md). ``compile: cells`` compiles each
:class:`genzoo.Cell` and :class:`genzoo.LatentGroup` of the model in place
(``nn.Module.compile``) instead. Dynamo treats a module's parameters and buffers as inputs, not
constants, so one compilation serves every instance of a class with the same configuration and
input shapes: the cost grows with the number of distinct blocks, not with depth
(``tests/test_engine_compile.py`` counts the compilations). Everything else of the hierarchy
(stem, combiners, likelihood) and the objective, backward pass and optimizer step stay eager.

``cuda_graphs`` compiles with ``mode="reduce-overhead"``: the compiled parts (each block, or the
whole model) are recorded as CUDA graphs on their first steps and replayed afterwards, one
launch for a block's kernels. The training step marks each step's start
(``torch.compiler.cudagraph_mark_step_begin``), since a replay reuses the memory of the
previous step's outputs.

Compiled blocks are for training: evaluation and sampling run in eager mode
(:func:`eager`), since they see other batch sizes and modes that would each compile again, and
:func:`release` restores the blocks when the run is over.
"""

from __future__ import annotations

import contextlib
import statistics
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from genzoo.engine.config import TrainConfig
from genzoo.errors import ConfigError
from genzoo.interfaces.cell import Cell
from genzoo.interfaces.latent import LatentGroup

BACKEND = "inductor"
"""The ``torch.compile`` backend of training runs (tests swap in cheaper ones)."""
REPEATED_BLOCKS = (Cell, LatentGroup)
"""The kinds whose instances ``compile: cells`` compiles (the outermost ones)."""
RECOMPILE_LIMIT = 64
"""Compilations dynamo keeps per block class (its default is 8): one per distinct configuration
and input shape of the class (resample mode, channels, resolution, top group or not). The
official MNIST model has 7 distinct encoder cells."""


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The outermost :data:`REPEATED_BLOCKS` inside ``model`` (a cell's gate or a latent
    group's flows are compiled with it, not on their own)."""

    def walk(module: nn.Module) -> Iterator[nn.Module]:
        for child in module.children():
            if isinstance(child, REPEATED_BLOCKS):
                yield child
            else:
                yield from walk(child)

    return list(walk(model))


def compile_blocks(model: nn.Module, *, cuda_graphs: bool = False, **options: Any) -> list[nn.Module]:
    """Compile every repeated block of ``model`` in place (``nn.Module.compile``) with static
    shapes (a training batch is always full) and return them; ``options`` go to
    ``torch.compile`` (``backend=`` e.g. for tests)."""
    blocks = repeated_blocks(model)
    if not blocks:
        warnings.warn(
            f"training.compile='cells': {type(model).__name__} holds no genzoo.Cell or "
            "genzoo.LatentGroup, so nothing was compiled; use compile: model",
            RuntimeWarning,
            stacklevel=2,
        )
    _raise_recompile_limit(RECOMPILE_LIMIT)
    options.setdefault("dynamic", False)
    if cuda_graphs:
        options.setdefault("mode", "reduce-overhead")
    for block in blocks:
        block.compile(**options)
    return blocks


def release(blocks: list[nn.Module]) -> None:
    """Undo :func:`compile_blocks`: the blocks run eagerly again (their compiled code stays in
    dynamo's cache for the next run of the same process)."""
    for block in blocks:
        # nn.Module.compile keeps the compiled call here; torch has no public way to drop it.
        block._compiled_call_impl = None


def training_model(
    model: nn.Module, wrapped: nn.Module, config: TrainConfig
) -> tuple[nn.Module, list[nn.Module]]:
    """The module the training step calls for ``config.compile`` and ``config.cuda_graphs``:
    ``wrapped`` (``model`` or its DDP wrapper) with ``model``'s blocks compiled in place
    (``cells``), ``wrapped`` compiled (``model``), or ``wrapped`` as it is; and the blocks
    compiled in place (for :func:`release`)."""
    mode = config.compile_mode
    if mode == "cells":
        return wrapped, compile_blocks(model, cuda_graphs=config.cuda_graphs, backend=BACKEND)
    if mode == "model":
        options = {"mode": "reduce-overhead"} if config.cuda_graphs else {}
        return torch.compile(wrapped, backend=BACKEND, **options), []
    return wrapped, []


def check_device(config: TrainConfig, device: torch.device) -> None:
    """Refuse ``cuda_graphs`` on a device that is not CUDA (``device: auto`` on a machine without
    a GPU): the setting would silently do nothing, and a run's speed would be read wrongly."""
    if config.cuda_graphs and device.type != "cuda":
        raise ConfigError(
            f"TrainConfig.cuda_graphs=True needs a CUDA device, but this run trains on {device} "
            f"(device={config.device!r}); set cuda_graphs: false to train here"
        )


def eager() -> contextlib.AbstractContextManager:
    """A context in which compiled code runs eagerly (``torch.compiler.set_stance``), for the
    evaluations of a run whose blocks are compiled for training."""
    return torch.compiler.set_stance("force_eager")


def _raise_recompile_limit(limit: int) -> None:
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    if getattr(config, name) < limit:
        setattr(config, name, limit)


class CompileClock:
    """The time a run's first steps spent compiling (and recording CUDA graphs): the wall time
    of the first :attr:`warmup` steps of this process minus as many steady steps (the median
    of up to :attr:`steady` steps after them). Compilation happens in the first step's forward
    and backward passes, CUDA graphs are recorded on a block's second call, so three steps hold
    it all. With no steady step yet (a run of three steps or fewer) it is the first steps' whole
    time, an upper bound."""

    warmup = 3
    steady = 10

    def __init__(self) -> None:
        self.first: list[float] = []
        self.after: list[float] = []

    def record(self, seconds: float) -> None:
        if len(self.first) < self.warmup:
            self.first.append(seconds)
        elif len(self.after) < self.steady:
            self.after.append(seconds)

    @property
    def seconds(self) -> float | None:
        """None before the first step."""
        if not self.first:
            return None
        steady = statistics.median(self.after) if self.after else 0.0
        return max(0.0, sum(self.first) - steady * len(self.first))
