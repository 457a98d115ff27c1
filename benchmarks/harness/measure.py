"""Measurement helpers shared by the benchmark scripts.

Time: every variant runs one step in turn (round robin), so that load from other processes
falls on all of them alike; the figure is the median over the repeats after the warm-up ones.

Memory, on CPU, where torch keeps no allocator statistics:

- **peak allocated**: the highest sum of live tensor bytes during one step, from the memory
  events of ``torch.profiler`` (``profile_memory=True``: every allocation and free of torch's CPU
  allocator, in order), minus what was live when the step began. It counts activations saved
  for backward, temporaries and gradients; it is what a caching GPU allocator would report as
  ``max_memory_allocated`` minus the model.
- **saved for backward**: the bytes autograd keeps between forward and backward, counted by
  ``torch.autograd.graph.saved_tensors_hooks`` (each storage once, parameters excluded). A
  checkpointed region keeps its tensors under its own hooks and is not seen, so this column is
  a lower bound there.
- **peak RSS delta** (model level): a fresh process builds the model, runs one step, resets the
  kernel's peak-RSS mark (``/proc/self/clear_refs``), runs more steps and reports the peak
  (``VmHWM``) minus the RSS before them; it includes the allocator's slack and library
  workspaces that the other two miss, and the first step's one-time allocations (optimizer
  state, gradients, thread pools) are left out.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.autograd.graph import saved_tensors_hooks
from torch.profiler import ProfilerActivity, profile

from benchmarks.harness import command_line

MIB = 2**20


def set_threads(threads: int) -> None:
    """Intra-op and inter-op threads for this process (call before any parallel work)."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set, or parallel work already ran
        pass


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(title: str, *, threads: int, extra: str = "") -> str:
    """The Markdown lines that say what ran where: machine, threads, dtype, versions, command."""
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    command = command_line()
    lines = [
        f"### {title}",
        "",
        f"- machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        f"- torch {torch.__version__}, Python {platform.python_version()}, dtype float32, "
        f"threads {threads}, load average at start {load}",
        f"- command: `{command}`",
    ]
    if extra:
        lines.append(f"- {extra}")
    return "\n".join(lines) + "\n"


def markdown_table(columns: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def without_cpu_kernels(run: Callable[[], object]) -> Callable[[], object]:
    """``run`` with genzoo's compiled CPU kernels turned off while it runs (the library's
    ``GENZOO_CPU_KERNELS=0`` switch, read at every call), for ablation rows."""
    from genzoo.layers.cpu_kernels import ENV_SWITCH

    def wrapped() -> object:
        previous = os.environ.get(ENV_SWITCH)
        os.environ[ENV_SWITCH] = "0"
        try:
            return run()
        finally:
            if previous is None:
                del os.environ[ENV_SWITCH]
            else:
                os.environ[ENV_SWITCH] = previous

    return wrapped


def cell_training_step(cell: torch.nn.Module, x: torch.Tensor, cotangent: torch.Tensor) -> Callable[[], None]:
    """One forward + backward of ``cell`` on ``x`` with the gradient ``cotangent`` at its output,
    parameter gradients cleared first (a fresh leaf each call, so backward reaches the input)."""

    def run() -> None:
        for p in cell.parameters():
            p.grad = None
        cell(x.detach().requires_grad_()).backward(cotangent)

    return run


def interleaved_times(
    steps: dict[str, Callable[[], object]], *, repeats: int, warmup: int
) -> dict[str, float]:
    """Median seconds per call of each step; the steps run in turn, ``warmup + repeats`` rounds."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(warmup + repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts[warmup:]) for name, ts in times.items()}


def peak_allocated_bytes(step: Callable[[], object]) -> int:
    """Peak of live tensor bytes during ``step()`` above those live at its start (see module doc)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def saved_for_backward_bytes(forward: Callable[[], torch.Tensor], module: torch.nn.Module) -> int:
    """Bytes of the distinct non-parameter storages autograd saves during ``forward()``."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(seen.values())


def _proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status (the RSS figures need Linux)")


def rss_bytes() -> int:
    """This process's resident set size now."""
    return _proc_status("VmRSS")


def reset_peak_rss() -> None:
    """Restart the peak RSS (``VmHWM``) from the current RSS (Linux ``clear_refs``)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_bytes() -> int:
    """This process's peak resident set size (``VmHWM``; unlike ``ru_maxrss`` it is not carried
    over from the parent process across ``exec``)."""
    return _proc_status("VmHWM")


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x"
