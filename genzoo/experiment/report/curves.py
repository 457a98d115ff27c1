"""``curves.png``: the training loss of every run against its step, from the metrics logs."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from genzoo.io.atomic import atomic_write_bytes
from genzoo.io.run_layout import ExperimentPaths


def _number(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def read_curve(path: Path, key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return steps, values
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        v = _number(rec.get(key))
        if v is not None and rec.get("kind", "train") == "train" and "step" in rec:
            steps.append(float(rec["step"]))
            values.append(v)
    return steps, values


def plot_curves(paths: ExperimentPaths) -> bool:
    """Training loss (bits/dim) against step, one line per run and seed; False if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for run, seed, folder in paths.runs():
        steps, values = read_curve(folder.metrics, "bpd")
        if steps:
            curves.append((f"{run}/{seed}", steps, values))
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for label, steps, values in curves:
        ax.plot(steps, values, label=label, linewidth=1.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (bits/dim, negative ELBO)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(paths.curves, buf.getvalue())
    return True
