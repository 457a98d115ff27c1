"""The experiment report: ``report.md``, ``results.csv``, ``results.json`` and ``curves.png``
(their only writer; the names are :mod:`genzoo.io.run_layout`'s), and, when runs logged curve records,
the effects against the budget (``budget.png``, ``budget.csv``: :mod:`genzoo.experiment.report.budget`'s).

It reads only what the runs wrote (each run folder's ``results.json`` and ``metrics.jsonl``),
asks the loaded plugins for their columns (``genzoo_report_columns``) and computes the
statistics (:mod:`genzoo.experiment.report.statistics`), so ``genzoo report DIR`` renders it again at
any time, also for a matrix that is still running (it names the runs not in its tables yet,
with their state as ``genzoo status`` gives it). Processes that work in one experiment
folder at once (jobs of a launcher, two ``genzoo run``) render it one after the other, under the
experiment's lock, so the last rendering sees every run that had finished. The Markdown itself
is :mod:`genzoo.experiment.report.markdown`'s.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

from genzoo.errors import GenzooError
from genzoo.experiment.report.budget import write_budget
from genzoo.experiment.report.curves import plot_curves
from genzoo.experiment.report.markdown import (
    COLUMNS,
    SPEED_KEYS,
    Column,
    ablation_sentence,
    aggregate,
    markdown_report,
    number,
)
from genzoo.experiment.report.statistics import PairedDifference, Stability, paired_differences, stability
from genzoo.experiment.run.locks import FileLock
from genzoo.experiment.run.status import RunStatus, experiment_status
from genzoo.io.atomic import atomic_write_text
from genzoo.io.run_layout import ExperimentPaths
from genzoo.plugin.discovery import PluginHost, get_host

__all__ = ["COLUMNS", "Column", "ablation_sentence", "collect_results", "render_report"]


def collect_results(exp_dir: Path) -> list[dict[str, Any]]:
    """Every run's row, from its folder's ``results.json``, in a stable order (by run folder)."""
    rows = []
    for _, _, paths in ExperimentPaths(Path(exp_dir)).runs():
        try:
            row = json.loads(paths.results.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if "run" in row:  # rows of matrix runs (a bare engine run's row has no run name)
            rows.append(row)
    return rows


def plugin_columns(rows: list[dict[str, Any]], host: PluginHost) -> list[str]:
    """Ask the loaded plugins for their columns of each row (``genzoo_report_columns``), put
    them into the rows (under ``extra`` and as keys of their own) and return their names."""
    keys: list[str] = []
    for row in rows:
        extra: dict[str, Any] = {}
        for columns in host.call_hook("genzoo_report_columns", results=dict(row)):
            if isinstance(columns, dict):
                extra.update(columns)
        if extra:
            row["extra"] = extra
            for key, value in extra.items():
                row.setdefault(key, value)
                if key not in keys:
                    keys.append(key)
    return keys


def render_report(
    exp_dir: Path, *, title: str | None = None, host: PluginHost | None = None
) -> dict[str, Path]:
    """Write the report files into ``exp_dir`` (atomically, under the experiment's lock) and
    return their paths; plugin columns come from ``host`` (default: the process-wide one)."""
    paths = ExperimentPaths(Path(exp_dir))
    with FileLock(paths.lock, record_owner=False):
        return _render(paths, title, host)


def _render(paths: ExperimentPaths, title: str | None, host: PluginHost | None) -> dict[str, Path]:
    rows = collect_results(paths.root)
    extra = plugin_columns(rows, host or get_host())
    columns = [c for c in COLUMNS if any(number(r.get(c.key)) is not None for r in rows)]
    columns += [Column(k, k) for k in extra if any(number(r.get(k)) is not None for r in rows)]
    stats = aggregate(rows, [c.key for c in columns])
    delta_cols = [c for c in columns if c.key != "diverged"]
    deltas = paired_differences(rows, [c.key for c in delta_cols])
    withhold_shared_speeds(deltas, {name for name, s in stats.items() if s["shared_load"]})
    stable = stability(rows)
    add_statistics(rows, deltas, stable)

    atomic_write_text(paths.results_json, json.dumps(rows, indent=2, sort_keys=True, default=str) + "\n")
    atomic_write_text(paths.results_csv, _csv(rows))
    curves = plot_curves(paths)
    budget = write_budget(paths, rows)
    text = markdown_report(
        title or paths.root.name,
        paths,
        rows,
        columns,
        stats,
        deltas,
        delta_cols,
        stable,
        curves=curves,
        budget=budget,
        unfinished=unfinished_runs(paths, rows),
    )
    atomic_write_text(paths.report, text)
    written = {"json": paths.results_json, "csv": paths.results_csv, "report": paths.report}
    if curves:
        written["curves"] = paths.curves
    if budget is not None:
        written["budget_curves"] = paths.budget_curves
        written["budget_csv"] = paths.budget_csv
    return written


def unfinished_runs(paths: ExperimentPaths, rows: list[dict[str, Any]]) -> list[RunStatus]:
    """The runs of ``experiment.json`` that have no row yet (running, queued, pending, ...), as
    ``genzoo status`` sees them; none for a folder without ``experiment.json``."""
    try:
        statuses = experiment_status(paths.root)
    except GenzooError:
        return []
    in_rows = {f"{row['run']}/seed{row.get('seed')}" for row in rows}
    return [s for s in statuses if s.run not in in_rows]


def withhold_shared_speeds(deltas: dict[str, dict[str, PairedDifference]], shared: set[str]) -> None:
    """Replace, in place, the paired difference of each speed (``SPEED_KEYS``) whose ablation or
    base has a run measured under shared load (``shared``: run names) by one without interval
    (kind ``"shared_load"``): its mean stays, its interval, ``*`` and p-value go."""
    for by_metric in deltas.values():
        for key in SPEED_KEYS:
            diff = by_metric.get(key)
            if diff is not None and diff.mean is not None and {diff.ablation, diff.base} & shared:
                by_metric[key] = dataclasses.replace(diff, ci_low=None, ci_high=None, kind="shared_load")


def add_statistics(
    rows: list[dict[str, Any]],
    deltas: dict[str, dict[str, PairedDifference]],
    stable: dict[str, Stability],
) -> None:
    """Add the statistics to the per-run rows, so ``results.json`` and ``results.csv`` stay one
    row per run: on every ablation row ``delta_<metric>`` (its own seed's difference against the
    base; None where that seed is not a pair) and the ablation's ``delta_<metric>_mean``,
    ``_ci_low``, ``_ci_high`` (None with fewer than two pairs) and ``_n`` (pairs); on every row its
    run name's ``divergence_rate``, ``divergence_ci_low``, ``divergence_ci_high`` and
    ``divergence_n`` (runs over)."""
    for row in rows:
        for metric, diff in deltas.get(row["run"], {}).items():
            row[f"delta_{metric}"] = diff.of_seed(row.get("seed"))
            row[f"delta_{metric}_mean"] = diff.mean
            row[f"delta_{metric}_ci_low"] = diff.ci_low
            row[f"delta_{metric}_ci_high"] = diff.ci_high
            row[f"delta_{metric}_n"] = diff.n
        divergence = stable[row["run"]].divergence
        row["divergence_rate"] = divergence.rate
        row["divergence_ci_low"] = divergence.ci_low
        row["divergence_ci_high"] = divergence.ci_high
        row["divergence_n"] = divergence.n


def _csv(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key not in keys and not isinstance(value, (dict, list)):
                keys.append(key)
    # the run's own figures first, then the statistics add_statistics put on the rows
    keys.sort(key=lambda k: k.startswith(("delta_", "divergence_")))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in keys})
    return buf.getvalue()
