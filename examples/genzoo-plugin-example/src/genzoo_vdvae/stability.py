"""A training-stability monitor driven by genzoo's lifecycle hooks.

VDVAE (Child 2021, Sec. 5.1) keeps very deep VAEs trainable by skipping updates whose gradient
norm is far above the usual, and reports how rarely that happens. This monitor measures the
quantities behind that decision for any genzoo run, whatever its model: the largest and the mean
gradient norm, and the number of loss spikes (a finite loss far above its recent level). The
report gets them as the columns ``vdvae.max_grad_norm``, ``vdvae.mean_grad_norm`` and
``vdvae.loss_spikes``, so a table can show which cell or regularizer trains more smoothly.

A spike is a step whose loss exceeds the exponential moving average of the earlier losses by more
than ``spike_z`` moving standard deviations (the deviation is floored at ``min_rel_std`` of the
mean, so that a flat loss curve does not turn noise into spikes); the first ``warmup_steps``
finite losses only feed the average. Non-finite losses are left to genzoo's own
``skipped_nonfinite`` column.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import genzoo

STATE_FILE = "vdvae_stability.json"
"""Written into each run's folder when the run ends; read back when the run resumes."""

COLUMNS = ("vdvae.max_grad_norm", "vdvae.mean_grad_norm", "vdvae.loss_spikes")


@dataclass
class StabilityMonitor:
    """Gradient-norm and loss-spike statistics of one run, updated once per training step."""

    spike_z: float = 4.0
    decay: float = 0.98
    warmup_steps: int = 20
    min_rel_std: float = 0.01
    steps: int = 0
    max_grad_norm: float = 0.0
    grad_norm_sum: float = 0.0
    finite_grad_norms: int = 0
    loss_spikes: int = 0
    finite_losses: int = 0
    loss_mean: float = 0.0
    loss_var: float = 0.0

    def update(self, metrics: dict[str, float]) -> None:
        """Take one step's scalars (genzoo's ``loss`` and ``grad_norm``)."""
        self.steps += 1
        grad_norm = float(metrics.get("grad_norm", math.nan))
        if math.isfinite(grad_norm):
            self.max_grad_norm = max(self.max_grad_norm, grad_norm)
            self.grad_norm_sum += grad_norm
            self.finite_grad_norms += 1
        loss = float(metrics.get("loss", math.nan))
        if not math.isfinite(loss):
            return
        if self.finite_losses == 0:
            self.loss_mean = loss
        else:
            if self.finite_losses >= self.warmup_steps:
                std = max(math.sqrt(self.loss_var), self.min_rel_std * abs(self.loss_mean))
                if loss > self.loss_mean + self.spike_z * std:
                    self.loss_spikes += 1
            # Exponentially weighted mean and variance (West 1979), updated in one pass.
            alpha = 1.0 - self.decay
            diff = loss - self.loss_mean
            self.loss_mean += alpha * diff
            self.loss_var = (1.0 - alpha) * (self.loss_var + alpha * diff * diff)
        self.finite_losses += 1

    def columns(self) -> dict[str, float]:
        """The report columns (see :data:`COLUMNS`)."""
        mean = self.grad_norm_sum / self.finite_grad_norms if self.finite_grad_norms else math.nan
        return {
            "vdvae.max_grad_norm": self.max_grad_norm if self.finite_grad_norms else math.nan,
            "vdvae.mean_grad_norm": mean,
            "vdvae.loss_spikes": self.loss_spikes,
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> StabilityMonitor:
        state = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in known})


class MonitorBook:
    """One :class:`StabilityMonitor` per run, by run name (the ``name`` of genzoo's ``RunInfo``,
    which is also the ``name`` of the run's results row)."""

    def __init__(self) -> None:
        self.monitors: dict[str, StabilityMonitor] = {}

    def run_start(self, run: genzoo.RunInfo) -> None:
        saved = Path(run.out_dir) / STATE_FILE
        resumed = run.step > 0 and saved.is_file()
        self.monitors[run.name] = StabilityMonitor.load(saved) if resumed else StabilityMonitor()

    def step_end(self, run: genzoo.RunInfo, metrics: dict[str, float]) -> None:
        self.monitors.setdefault(run.name, StabilityMonitor()).update(metrics)

    def run_end(self, run: genzoo.RunInfo) -> None:
        monitor = self.monitors.get(run.name)
        if monitor is not None and Path(run.out_dir).is_dir():
            monitor.save(Path(run.out_dir) / STATE_FILE)

    def report_columns(self, results: dict[str, Any]) -> dict[str, float] | None:
        monitor = self.monitors.get(str(results.get("name")))
        if monitor is None and results.get("checkpoint"):
            saved = Path(results["checkpoint"]).parent / STATE_FILE
            monitor = StabilityMonitor.load(saved) if saved.is_file() else None
        return monitor.columns() if monitor is not None else None


BOOK = MonitorBook()
"""The monitors of this process's runs; the plugin's hooks feed it."""
