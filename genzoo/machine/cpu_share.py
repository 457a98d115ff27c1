"""A training process's CPU threads: fixed from its config and the machine, never from the load.

torch runs each operator on its intra-op threads, and a float sum's rounding depends on how it
is split between them, so a run's figures are a function of its config, seed, commit *and* its
thread count. ``training.cpu_threads`` fixes that count for the whole run: a number, or
``auto`` (:func:`machine_threads`: ``OMP_NUM_THREADS`` where it is set, as a launcher's
``cpus_per_task`` sets it, else one thread per physical core this process may run on). The
trainer resolves it once, when the run starts (:func:`resolve_threads`), records it in
``train_config.json`` and the checkpoint, and a resumed run goes on with the count it started
with, even on a machine where ``auto`` gives another (:func:`resumed_threads`).

Until issue 23 genzoo adapted each process's threads to the genzoo processes training on CPU
at the moment (``cores // processes``): two runs at once did not oversubscribe the cores, but a
run's figures depended on what else ran beside it. Nothing that runs beside a run changes its
threads now, so two processes that each take every core oversubscribe them, and each step
waits for threads that another process holds (``benchmarks/compare/bench_concurrent.py``; *Two
processes at once* in ``benchmarks/README.md``: 3.8 to 5.2x each on 2 cores). Passive waiting
(``OMP_WAIT_POLICY=PASSIVE`` for torch's libgomp) brought that to 2.6 to 3.0x of a step alone
but made every run alone 1.6 to 3.3x slower, so genzoo leaves libgomp's default. What does
help is to give each process its share of the cores by config (``training.cpu_threads``,
``OMP_NUM_THREADS`` or the launcher's ``cpus_per_task``); while a process trains on CPU
(:func:`cpu_training`) it is listed in a per-user register of locked files, each holding its
run's thread count, and a run whose threads and the others' are more than the cores is warned
so at its start (:class:`ThreadRegister`). The register never changes a thread count.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no register
    fcntl = None

_TOPOLOGY = Path("/sys/devices/system/cpu")


def _usable_cpus() -> list[int]:
    """The logical CPUs this process may run on (its affinity: ``taskset``, a Slurm cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int]) -> int:
    """The physical cores among logical ``cpus`` (two hyperthreads of one core count once), from
    Linux's CPU topology; ``len(cpus)`` where it cannot be read."""
    cores = set()
    for cpu in cpus:
        topology = _TOPOLOGY / f"cpu{cpu}" / "topology"
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def machine_threads() -> int:
    """What ``training.cpu_threads: auto`` gives in this process: ``OMP_NUM_THREADS`` where it
    is set (its first number), else one thread per physical core this process may run on,
    which is how torch counts its default too (within the process's affinity here). A function
    of the machine and the process's environment only: not of how busy the machine is."""
    setting = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if setting.isdigit() and int(setting) > 0:
        return int(setting)
    return max(1, physical_cores(_usable_cpus()))


def resolve_threads(setting: int | str) -> int:
    """The intra-op threads of a run whose ``training.cpu_threads`` is ``setting``."""
    return machine_threads() if setting == "auto" else int(setting)


def apply_threads(threads: int) -> None:
    """Set torch's intra-op threads to ``threads`` (for the rest of the process), and record them
    in the register where this process is in it (:func:`cpu_training`)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if _register is not None:
        warning = _register.record(threads)
        if warning:
            warnings.warn(warning, stacklevel=2)


def resumed_threads(setting: int | str, threads: int, recorded: dict[str, Any] | None, where: Any) -> int:
    """The threads a resumed run goes on with: the count its checkpoint ``recorded`` when
    ``setting`` is ``auto`` (with a warning where this machine's ``auto`` gives another:
    ``threads``), else the configured count (with a warning where it differs from the
    recorded one: the figures then differ in float rounding from a run that never stopped)."""
    if not recorded:  # a checkpoint written before the count was recorded
        return threads
    before = int(recorded["threads"])
    if before == threads:
        return threads
    if setting == "auto":
        warnings.warn(
            f"{where}: the run started with {before} CPU threads (training.cpu_threads: auto, "
            f"{recorded.get('cpus', '?')} CPUs) and goes on with them, not with the {threads} that "
            f"auto gives on this machine ({len(_usable_cpus())} CPUs), so that it continues as it started",
            stacklevel=2,
        )
        return before
    warnings.warn(
        f"{where}: the run started with {before} CPU threads and goes on with {threads} "
        "(training.cpu_threads): its figures differ in float rounding from a run that never stopped",
        stacklevel=2,
    )
    return threads


def thread_record(setting: int | str, threads: int) -> dict[str, Any]:
    """What a run records about its threads (``train_config.json``, the checkpoint)."""
    return {"threads": threads, "setting": setting, "cpus": len(_usable_cpus())}


REGISTER_ENV = "GENZOO_CPU_REGISTER"
"""An environment variable naming another folder for the register (genzoo's own tests set it, so
that the processes they start neither see nor warn about the genzoo runs of the machine's user)."""


def default_folder() -> Path:
    """The per-user folder of the register: one locked file per genzoo process training on CPU
    (``$GENZOO_CPU_REGISTER`` where it is set)."""
    if os.environ.get(REGISTER_ENV):
        return Path(os.environ[REGISTER_ENV])
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"genzoo-cpu-threads-{user}"


def live_counts(folder: Path, exclude: Path | None = None) -> list[int]:
    """The thread counts in the register ``folder`` of the processes that hold their entry now
    (all but ``exclude``), but for processes stopped by a signal (``kill -STOP``, Ctrl-Z: they
    hold their entry and take no CPU); entries of ended processes are removed on the way."""
    counts = []
    for path in folder.glob("*.threads"):
        if path == exclude:
            continue
        try:
            with open(path) as other:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink(missing_ok=True)  # its process has ended
        except BlockingIOError:  # held: a live process
            if _stopped(path.stem):
                continue
            text = path.read_text().strip()
            counts.append(int(text) if text.isdigit() else 0)
        except OSError:  # vanished in between, or not ours to read
            pass
    return counts


def _stopped(pid: str) -> bool:
    """Whether process ``pid`` is stopped by a signal (state ``T``, or ``t`` under a debugger),
    from Linux's ``/proc/<pid>/stat``; False where that cannot be read (another system, or a
    process of another PID namespace sharing the register), so such a process still counts."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return False
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return bool(fields) and fields[0] in ("T", "t")


def others_training(folder: Path | None = None) -> int | None:
    """How many other genzoo processes train on this machine's CPU now: those in the register
    with a run started (a thread count above 0), whether or not this process is in it itself;
    None where there is no register (no ``fcntl``). Only genzoo's own processes are seen: other
    load on the machine is not."""
    if fcntl is None:
        return None
    if _register is not None and folder is None:
        return sum(count > 0 for count in _register.others())
    folder = folder or default_folder()
    if not folder.is_dir():
        return 0
    return sum(count > 0 for count in live_counts(folder, exclude=folder / f"{os.getpid()}.threads"))


class ThreadRegister:
    """This process's entry in the register of genzoo processes training on CPU: a file locked
    for as long as the process trains (the lock goes with the process, however it ends), holding
    the thread count of its current run. Only for a warning: it changes no thread count."""

    def __init__(self, folder: Path | None = None, cores: int | None = None) -> None:
        self.folder = folder or default_folder()
        self.cores = cores or physical_cores(_usable_cpus())
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"{os.getpid()}.threads"
        self._file = open(self.path, "w")  # noqa: SIM115 (held until close)
        fcntl.flock(self._file, fcntl.LOCK_EX)

    def others(self) -> list[int]:
        """The thread counts of the other processes training now (files of ended ones are
        removed; a process between runs counts as 0)."""
        return live_counts(self.folder, exclude=self.path)

    def record(self, threads: int) -> str | None:
        """Write this process's count; returns a warning where all counts exceed the cores."""
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(threads))
        self._file.flush()
        others = self.others()
        if threads + sum(others) <= self.cores:
            return None
        share = max(1, self.cores // (len(others) + 1))
        situation = (
            f"{len(others)} other genzoo process(es) train on this machine's {self.cores} cores with "
            f"{sum(others)} threads, and this run takes {threads} (training.cpu_threads)"
        )
        if threads <= share:  # this run already takes no more than its share: the others do not
            return (
                f"{situation}: more threads than cores, so the processes take turns and each step is "
                "slower than alone; the others take more than their share, or there are more genzoo "
                "processes than cores."
            )
        return (
            f"{situation}: with more threads than cores each step can take 4 to 20x its time alone. Give "
            f"each process its share of the cores, e.g. --set training.cpu_threads={share} or "
            f"OMP_NUM_THREADS={share} (a run's threads are part of what its figures depend on, so genzoo "
            "does not change them itself)."
        )

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        self._file.close()


_register: ThreadRegister | None = None


@contextmanager
def cpu_training(on_cpu: bool, *, register_folder: Path | None = None) -> Iterator[None]:
    """What a process that trains on CPU sets up for the time it trains: glibc's allocator
    thresholds (:mod:`genzoo.machine.allocator`) and its entry in the register of processes training on
    CPU (:class:`ThreadRegister`, where the system has ``fcntl``). Nothing where ``on_cpu`` is
    false. The run's threads are the trainer's (:func:`resolve_threads`)."""
    global _register
    if not on_cpu:
        yield None
        return
    from genzoo.machine import allocator

    allocator.configure()  # keep glibc from faulting every step's tensors in afresh
    entry = ThreadRegister(register_folder) if fcntl is not None and _register is None else None
    _register = entry or _register
    try:
        yield None
    finally:
        if entry is not None:
            _register = None
            entry.close()
