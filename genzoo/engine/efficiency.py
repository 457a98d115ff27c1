"""Efficiency figures for the comparison table: parameters, speed and peak memory.

The questions they answer are NVAE's (Sec. 3.1.2): do depthwise-separable decoder cells save
parameters, and what do they cost in images per second and memory?
"""

from __future__ import annotations

import resource
import sys
import time
from collections import defaultdict

import torch
from torch import nn


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``{"total": n, <component>: n, ...}``: all parameters, and how they split.

    A model with a ``parameter_counts()`` method (NVAE's hierarchy groups by component kind:
    cells, latent groups, likelihood ...) decides the split; otherwise parameters are grouped
    by the model's top-level child module (parameters held directly by the model count as
    ``"other"``). Shared parameters count once.
    """
    total = sum(p.numel() for p in _unique(model.parameters()))
    own = getattr(model, "parameter_counts", None)
    if callable(own):
        split = {str(k): int(v) for k, v in own().items()}
        split.pop("total", None)
        return {"total": total, **split}
    split: dict[str, int] = defaultdict(int)
    seen: set[int] = set()
    for name, child in model.named_children():
        for p in child.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                split[name] += p.numel()
    other = sum(p.numel() for p in model.parameters(recurse=False) if id(p) not in seen)
    if other:
        split["other"] += other
    return {"total": total, **dict(split)}


def _unique(params) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for p in params:
        seen.setdefault(id(p), p)
    return list(seen.values())


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock timings measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def sampling_speed(model, *, batch_size: int, batches: int, temperature: float = 1.0) -> float:
    """Images per second of ``model.sample`` (after one untimed warm-up batch), in eval mode."""
    if batches < 1:
        raise ValueError(f"batches={batches!r}; expected >= 1")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        model.sample(batch_size, temperature)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(batches):
            model.sample(batch_size, temperature)
        synchronize(device)
        elapsed = time.perf_counter() - start
    finally:
        model.train(was_training)
    return batch_size * batches / max(elapsed, 1e-9)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak on CUDA; the CPU peak (max RSS) cannot be reset and covers the process."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, the process's peak resident set
    size (``getrusage``) on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024)


class Throughput:
    """Training images per second, ignoring the first ``warmup`` steps (compilation, caches);
    a run too short for that is measured over all its steps but the first."""

    def __init__(self, warmup: int = 5) -> None:
        self.warmup = max(1, warmup)
        self._steps = 0
        self._marks: dict[int, tuple[float, int]] = {}
        self._images = 0

    def step(self, images: int) -> None:
        """Count one finished step of ``images`` images (all processes together)."""
        self._steps += 1
        self._images += images
        if self._steps in (1, self.warmup):
            self._marks[self._steps] = (time.perf_counter(), self._images)

    @property
    def rate(self) -> float:
        """Images per second (NaN before the second step)."""
        mark = self.warmup if self._steps > self.warmup else 1
        if self._steps <= mark:
            return float("nan")
        start, images = self._marks[mark]
        return (self._images - images) / max(time.perf_counter() - start, 1e-9)
