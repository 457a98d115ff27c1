"""Efficiency figures for the comparison table: parameters, speed and peak memory.

The questions they answer are NVAE's (Sec. 3.1.2): do depthwise-separable decoder cells save
parameters, and what do they cost in images per second and memory?
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

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


PEAK_SCOPES = {
    "cuda_allocated": "peak memory allocated by PyTorch on the GPU during the run",
    "run_rss": "peak resident set size of the process during the run (Linux, reset at its start)",
    "process_rss": "peak resident set size of the whole process so far (it cannot be reset here, so "
    "it includes earlier runs of the same process)",
}
"""What a ``peak_memory_bytes`` figure measures, by the ``peak_memory_scope`` a run records."""

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_memory(device: torch.device) -> str:
    """Start a new peak and return its scope (a key of :data:`PEAK_SCOPES`).

    On CUDA: PyTorch's allocator statistics. On Linux CPUs: memory freed by earlier work is
    first handed back to the system (garbage collection, glibc's ``malloc_trim``), then the
    kernel's high-water mark ``VmHWM`` is restarted from the current resident set
    (``/proc/self/clear_refs``), so the figure covers this run rather than every run the
    process made. Elsewhere the process-wide peak (``getrusage``) is all there is."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda_allocated"
    gc.collect()
    _malloc_trim()
    try:
        _CLEAR_REFS.write_text("5")
        _vm_hwm()
    except (OSError, ValueError):
        return "process_rss"
    return "run_rss"


def peak_memory_bytes(device: torch.device, scope: str | None = None) -> int:
    """Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the peak resident set
    size, since the last :func:`reset_peak_memory` when ``scope`` is its ``"run_rss"`` (Linux
    ``VmHWM``), else of the whole process (``getrusage``)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if scope == "run_rss":
        return _vm_hwm()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _vm_hwm() -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise ValueError("no VmHWM in /proc/self/status")


def _malloc_trim() -> None:
    """Return glibc's free heap memory to the system (a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        pass


class Throughput:
    """Training images per second, ignoring the first ``warmup`` steps (compilation, caches);
    a run too short for that is measured over all its steps but the first.

    ``load_probe`` (optional) returns how many other genzoo processes train beside this one now
    (:func:`genzoo.machine.cpu_share.others_training`), or None where that cannot be known; it is asked
    at the first measured step and then at most every ``probe_every_s`` seconds, and
    :attr:`shared_load` is the fraction of those checks that found another process: a speed
    measured so is a figure of the load, not of the model alone."""

    def __init__(
        self,
        warmup: int = 5,
        *,
        load_probe: Callable[[], int | None] | None = None,
        probe_every_s: float = 2.0,
    ) -> None:
        self.warmup = max(1, warmup)
        self._steps = 0
        self._marks: dict[int, tuple[float, int, float]] = {}
        self._images = 0
        self._paused_s = 0.0
        self._probe = load_probe
        self._probe_every_s = probe_every_s
        self._next_probe = 0.0
        self.load_checks = 0
        """How many times the load was checked (and could be known) while speed was measured."""
        self.shared_checks = 0
        """How many of those checks found another genzoo process training."""

    def step(self, images: int) -> None:
        """Count one finished step of ``images`` images (all processes together)."""
        self._steps += 1
        self._images += images
        now = time.perf_counter()
        if self._steps in (1, self.warmup):
            self._marks[self._steps] = (now, self._images, self._paused_s)
        if self._probe is not None and now >= self._next_probe:
            self._next_probe = now + self._probe_every_s
            others = self._probe()
            if others is not None:
                self.load_checks += 1
                self.shared_checks += others > 0

    @property
    def shared_load(self) -> float | None:
        """The fraction of load checks that found another genzoo process training (0: the speed
        was measured alone, as far as genzoo can tell); None where the load was not known."""
        return self.shared_checks / self.load_checks if self.load_checks else None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside the block (an evaluation between steps) is not training time."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self._paused_s += time.perf_counter() - started

    @property
    def rate(self) -> float:
        """Images per second (NaN before the second step)."""
        mark = self.warmup if self._steps > self.warmup else 1
        if self._steps <= mark:
            return float("nan")
        start, images, paused = self._marks[mark]
        elapsed = time.perf_counter() - start - (self._paused_s - paused)
        return (self._images - images) / max(elapsed, 1e-9)
