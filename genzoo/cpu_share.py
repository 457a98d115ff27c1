"""Sharing a machine's cores between genzoo's training processes on CPU.

torch runs each operator on all its intra-op threads (one per core by default) and every thread
must finish its part before the operator returns. Two training processes on the same cores
therefore keep more threads busy than there are cores, and an operator waits whenever one of
its threads has been descheduled: an NVAE step then takes not 2x but 4 to 20x its time alone
(``benchmarks/bench_concurrent.py``; it is so with or without genzoo's CPU kernels, which use
torch's own thread pool). :class:`CpuShare` avoids it: every ``genzoo run`` that trains on CPU
registers itself (a locked file per process in a per-user folder of the temporary directory;
the lock goes with the process, however it ends) and, at the end of a step at most every
``interval`` seconds, sets torch's intra-op threads to ``cores // (genzoo processes training on
CPU)``, at least 1, and back to ``cores`` once it is alone again.

A float sum's rounding depends on how it is split between threads, so a run that changes its
thread count is not bitwise identical to one that does not (the figures agree to float
rounding). ``GENZOO_CPU_SHARE=0`` turns the sharing off; so does setting ``OMP_NUM_THREADS``
(the user's choice of threads wins). Only on systems with ``fcntl`` (Linux, macOS).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from genzoo.hookspecs import hookimpl
from genzoo.registry import PluginInfo

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

ENV_SWITCH = "GENZOO_CPU_SHARE"


def enabled() -> bool:
    """Whether CPU sharing may run: ``GENZOO_CPU_SHARE`` is not ``0``, ``OMP_NUM_THREADS`` is
    not set, and the system has ``fcntl``."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "off", "no"):
        return False
    return fcntl is not None and "OMP_NUM_THREADS" not in os.environ


def default_folder() -> Path:
    """The per-user folder holding one locked file per genzoo process training on CPU."""
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"genzoo-cpu-share-{user}"


class CpuShare:
    """This process's share of the cores (see the module docstring); a plugin object whose
    ``genzoo_step_end`` hook adjusts torch's threads. :meth:`start` registers the process."""

    def __init__(
        self, *, cores: int | None = None, interval: float = 2.0, folder: Path | None = None
    ) -> None:
        self.cores = cores or torch.get_num_threads()
        self.interval = interval
        self.folder = folder or default_folder()
        self._file = None
        self._checked = -float("inf")

    @classmethod
    def start(cls, **options: Any) -> CpuShare | None:
        """Register this process and take its share now; ``None`` where sharing is off."""
        if not enabled():
            return None
        share = cls(**options)
        share.folder.mkdir(parents=True, exist_ok=True)
        share._file = open(share.folder / f"{os.getpid()}.lock", "w")  # noqa: SIM115 (held until close)
        fcntl.flock(share._file, fcntl.LOCK_EX)
        share.update()
        return share

    def processes(self) -> int:
        """genzoo processes training on CPU now, this one included (stale files are removed)."""
        live = 0
        for path in self.folder.glob("*.lock"):
            if self._file is not None and path.name == Path(self._file.name).name:
                live += 1
                continue
            try:
                with open(path) as other:
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    path.unlink(missing_ok=True)  # its process has ended
            except BlockingIOError:
                live += 1
            except OSError:  # vanished in between, or not ours to read
                pass
        return max(live, 1)

    def threads(self) -> int:
        """The intra-op threads this process should use now."""
        return max(1, self.cores // self.processes())

    def update(self) -> int:
        """Set torch's intra-op threads to :meth:`threads`; returns them."""
        self._checked = time.monotonic()
        threads = self.threads()
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        return threads

    @hookimpl
    def genzoo_step_end(self, run: Any, step: int, metrics: dict[str, float]) -> None:
        if time.monotonic() - self._checked >= self.interval:
            self.update()

    def close(self) -> None:
        """Leave the register and take all the cores back."""
        if self._file is not None:
            path = Path(self._file.name)
            path.unlink(missing_ok=True)
            self._file.close()
            self._file = None
        if torch.get_num_threads() != self.cores:
            torch.set_num_threads(self.cores)


PLUGIN = PluginInfo(name="genzoo.cpu_share", source="built-in", module="genzoo.cpu_share")


@contextmanager
def cpu_training(host: Any, on_cpu: bool) -> Iterator[CpuShare | None]:
    """What a process that trains on CPU sets up for the time it trains: glibc's allocator
    thresholds (:mod:`genzoo.allocator`) and its share of the cores, a plugin of ``host``
    while it lasts. Nothing where ``on_cpu`` is false."""
    share = None
    if on_cpu:
        from genzoo import allocator

        allocator.configure()  # keep glibc from faulting every step's tensors in afresh
        share = CpuShare.start()
        if share is not None:
            host.register_plugin(share, PLUGIN)
    try:
        yield share
    finally:
        if share is not None:
            host.pm.unregister(share)
            host.plugins.pop(PLUGIN.name, None)
            share.close()
