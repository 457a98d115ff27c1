"""A run's row of results: what :func:`genzoo.engine.train` returns and writes, once, to the
run folder's ``results.json`` when the run is over (finished, diverged, interrupted or failed).

The trainer is the only writer of that file; the caller adds its own fields up front (the
experiment runner: run name, seed, group, fingerprint ...), so the row is complete in one
atomic write and a reader never sees half of it.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping
from typing import Any

import torch

from genzoo.engine.config import TrainConfig
from genzoo.engine.efficiency import Throughput, parameter_counts
from genzoo.engine.logging import json_safe
from genzoo.engine.run_state import RunState
from genzoo.io.atomic import atomic_write_text
from genzoo.io.run_layout import RunPaths
from genzoo.machine.software import software

MIB = 2**20


def run_results(
    fields: Mapping[str, Any],
    *,
    name: str,
    status: str,
    step: int,
    config: TrainConfig,
    start_step: int,
    state: RunState,
    throughput: Throughput,
    peak_memory: tuple[int, str],
    wall_time_s: float,
    compile_time_s: float | None,
    device: torch.device,
    precision: str,
) -> dict[str, Any]:
    """The row of a run that is over, before its final evaluation adds the ``test_*`` figures:
    the caller's ``fields``, then how the run ended, its losses, skipped steps, parameters,
    speed, peak memory (bytes, MiB and what it measured), wall time, when the model is
    compiled the time its first steps spent compiling (:class:`.compilation.CompileClock`), and
    the software that ran it (``software``: genzoo's version and commit, torch, CUDA, Python)."""
    counts = parameter_counts(state.model)
    recent = state.recent_losses
    peak, scope = peak_memory
    return {
        **fields,
        "name": name,
        "status": status,
        "diverged": int(status == "diverged"),
        "step": step,
        "steps": config.steps,
        "images_seen": step * config.batch_size * state.ctx.world_size,
        "resumed_from": start_step,
        "final_loss": state.last_metrics.get("loss", float("nan")),
        "train_loss": sum(recent) / len(recent) if recent else float("nan"),
        "train_bpd": state.last_metrics.get("bpd", float("nan")),
        "skipped_nonfinite": state.guard.counters["skipped_nonfinite"],
        "skipped_grad_norm": state.guard.counters["skipped_grad_norm"],
        "skipped_steps": state.guard.skipped_steps,
        "params": counts["total"],
        **{f"params_{k}": v for k, v in counts.items() if k != "total"},
        "train_images_per_s": throughput.rate,
        "train_shared_load": throughput.shared_load,
        "peak_memory_bytes": peak,
        "peak_memory_mb": peak / MIB,
        "peak_memory_scope": scope,
        "wall_time_s": wall_time_s,
        "compile_time_s": compile_time_s,
        "device": str(device),
        "precision": precision,
        "world_size": state.ctx.world_size,
        "software": software(),
        "checkpoint": str(state.path) if state.path.exists() else None,
        **({"reason": state.guard.divergence_reason} if status == "diverged" else {}),
    }


def write_results(paths: RunPaths, row: Mapping[str, Any]) -> None:
    """``results.json``: the row, JSON-safe (non-finite numbers as strings), keys sorted."""
    atomic_write_text(
        paths.results, json.dumps(json_safe(dict(row)), indent=2, sort_keys=True, default=str) + "\n"
    )


def failed_row(paths: RunPaths, fields: Mapping[str, Any], exc: BaseException) -> dict[str, Any]:
    """The row of a run that crashed (a bug, out of memory); its traceback goes to ``error.txt``."""
    atomic_write_text(paths.error, "".join(traceback.format_exception(exc)))
    return {**fields, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}


def summary_line(row: Mapping[str, Any]) -> str:
    """``finished: test_bpd_elbo 4.5800, ...``: one line on how a run ended."""
    status = row.get("status", "finished")
    if status == "failed":
        return f"failed: {row.get('reason', '')}"
    figures = ", ".join(
        f"{k} {row[k]:.4f}"
        for k in ("test_bpd_elbo", "test_bpd_iw", "test_nats_elbo")
        if isinstance(row.get(k), float)
    )
    return status + (f": {figures}" if figures else "")
