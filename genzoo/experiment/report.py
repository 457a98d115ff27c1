"""The experiment report: ``report.md``, ``results.csv``, ``results.json`` and ``curves.png``.

It reads only what the runs wrote (each run folder's ``results.json`` and ``metrics.jsonl``), so
``genzoo report DIR`` renders it again at any time, also for a matrix that is still running.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genzoo.atomic import atomic_write_bytes, atomic_write_text
from genzoo.engine.efficiency import PEAK_SCOPES


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    fmt: str = "{:.3f}"
    lower_is_better: bool | None = None


COLUMNS: tuple[Column, ...] = (
    Column("params", "params", "{:,.0f}"),
    Column("test_bpd_elbo", "test bits/dim (ELBO)", "{:.4f}", True),
    Column("test_bpd_iw", "test bits/dim (IW)", "{:.4f}", True),
    Column("test_nats_elbo", "test nats (ELBO)", "{:.2f}", True),
    Column("test_nats_iw", "test nats (IW)", "{:.2f}", True),
    Column("fid", "FID", "{:.2f}", True),
    Column("active_units", "active units", "{:.0f}"),
    Column("train_images_per_s", "train img/s", "{:.1f}", False),
    Column("peak_memory_mb", "peak mem (MB)", "{:.0f}", True),
    Column("wall_time_s", "wall time (s)", "{:.0f}", True),
    Column("skipped_steps", "skipped steps", "{:.0f}", True),
    Column("diverged", "diverged", "{:.0f}", True),
)
"""The comparison table's columns, in order; a column no run has is left out."""


def collect_results(exp_dir: Path) -> list[dict[str, Any]]:
    """Every run's row, from ``runs/<name>/seed<k>/results.json``, in a stable order."""
    rows = []
    for path in sorted(exp_dir.glob("runs/*/seed*/results.json")):
        try:
            row = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if "run" in row:  # rows the runner completed (not the engine's own, before it does)
            rows.append(row)
    return rows


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def aggregate(rows: Iterable[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per run name: ``{key: (mean, std, n)}`` over seeds, plus ``seeds`` and ``group``/``base``."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_name.setdefault(row["run"], []).append(row)
    out: dict[str, dict[str, Any]] = {}
    for name, group in by_name.items():
        stats: dict[str, Any] = {
            "seeds": sorted(r.get("seed") for r in group),
            "group": group[0].get("group", "variant"),
            "base": group[0].get("base"),
            "changes": group[0].get("changes") or {},
            "statuses": sorted({r.get("status", "?") for r in group}),
        }
        for key in keys:
            values = [v for v in (_number(r.get(key)) for r in group) if v is not None]
            if values:
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                stats[key] = (statistics.fmean(values), std, len(values))
        out[name] = stats
    return out


def _cell(stat: tuple[float, float, int] | None, col: Column) -> str:
    if stat is None:
        return "–"
    mean, std, n = stat
    text = col.fmt.format(mean)
    return f"{text} ± {col.fmt.format(std)}" if n > 1 else text


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def extra_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Keys that plugins added through ``genzoo_report_columns`` (stored under ``extra``)."""
    keys: list[str] = []
    for row in rows:
        for key in row.get("extra") or {}:
            if key not in keys:
                keys.append(key)
    return keys


def render_report(exp_dir: Path, *, title: str | None = None) -> dict[str, Path]:
    """Write the report files into ``exp_dir`` (atomically) and return their paths."""
    exp_dir = Path(exp_dir)
    rows = collect_results(exp_dir)
    for row in rows:
        for key, value in (row.get("extra") or {}).items():
            row.setdefault(key, value)
    extra = extra_columns(rows)
    columns = [c for c in COLUMNS if any(_number(r.get(c.key)) is not None for r in rows)]
    columns += [Column(k, k) for k in extra if any(_number(r.get(k)) is not None for r in rows)]
    stats = aggregate(rows, [c.key for c in columns])

    paths = {
        "json": exp_dir / "results.json",
        "csv": exp_dir / "results.csv",
        "report": exp_dir / "report.md",
        "curves": exp_dir / "curves.png",
    }
    atomic_write_text(paths["json"], json.dumps(rows, indent=2, sort_keys=True, default=str) + "\n")
    atomic_write_text(paths["csv"], _csv(rows))
    curves = plot_curves(exp_dir, paths["curves"])

    variants = [n for n, s in stats.items() if s["group"] == "variant"]
    ablations = [n for n, s in stats.items() if s["group"] == "ablation"]
    md = [f"# {title or exp_dir.name}", ""]
    md.append(
        f"{len(rows)} run(s): {len(variants)} variant(s), {len(ablations)} ablation(s). "
        "Values are mean ± standard deviation over seeds (n = number of seeds); "
        "bits/dim are on the test split; ELBO = negative evidence lower bound, IW = importance-weighted NLL."
    )
    md += ["", "## Comparison", ""]
    header = ["run", "seeds", "status", *[c.title for c in columns]]
    table_rows = [
        [name, str(len(stats[name]["seeds"])), "/".join(stats[name]["statuses"])]
        + [_cell(stats[name].get(c.key), c) for c in columns]
        for name in variants
    ]
    md.append(_markdown_table(header, table_rows) if table_rows else "_no finished variant runs yet_")
    memory_note = _peak_memory_note(rows)
    if memory_note and any(c.key == "peak_memory_mb" for c in columns):
        md += ["", memory_note]
    if ablations:
        md += ["", "## Ablations", ""]
        md.append(
            "Each ablation changes its base variant as listed; Δ is the change of the mean against the base."
        )
        md.append("")
        delta_cols = [c for c in columns if c.key not in ("diverged",)]
        header = ["ablation", "base", "changes", "seeds", *[f"{c.title}" for c in delta_cols]]
        arows = []
        for name in ablations:
            s = stats[name]
            base = stats.get(s["base"], {})
            changes = ", ".join(f"`{k}` → `{_short(v)}`" for k, v in s["changes"].items())
            cells = []
            for c in delta_cols:
                cell = _cell(s.get(c.key), c)
                if s.get(c.key) and base.get(c.key):
                    delta = s[c.key][0] - base[c.key][0]
                    cell += f" (Δ {'+' if delta >= 0 else '−'}{c.fmt.format(abs(delta))})"
                cells.append(cell)
            arows.append([name, str(s["base"]), changes, str(len(s["seeds"])), *cells])
        md.append(_markdown_table(header, arows))
    diverged = [r for r in rows if r.get("status") == "diverged"]
    if diverged:
        md += ["", "## Diverged runs", ""]
        for r in diverged:
            md.append(
                f"- `{r['run']}` seed {r.get('seed')}: {r.get('reason', 'non-finite loss')} (step {r.get('step')})"
            )
    if curves:
        md += ["", "## Training curves", "", "![training curves](curves.png)"]
    grids = sorted(exp_dir.glob("runs/*/seed*/samples_t*.png"))
    if grids:
        md += ["", "## Samples", ""]
        for grid in grids:
            rel = grid.relative_to(exp_dir).as_posix()
            run, seed, file = rel.split("/")[1:4]
            temp = file[len("samples_t") : -len(".png")]
            md.append(f"**{run}** ({seed}, temperature {temp})  ")
            md.append(f"![{run} {seed} t={temp}]({rel})")
            md.append("")
    atomic_write_text(paths["report"], "\n".join(md).rstrip() + "\n")
    if not curves:
        paths.pop("curves")
    return paths


def _peak_memory_note(rows: list[dict[str, Any]]) -> str:
    """What the peak-memory column measures, from the scopes the runs recorded."""
    scopes = sorted({r["peak_memory_scope"] for r in rows if r.get("peak_memory_scope") in PEAK_SCOPES})
    if not scopes:
        return ""
    return (
        "Peak memory: "
        + "; ".join(PEAK_SCOPES[s] + (f" ({s})" if len(scopes) > 1 else "") for s in scopes)
        + "."
    )


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("key", value))
    return str(value)


def _csv(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key not in keys and not isinstance(value, (dict, list)):
                keys.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in keys})
    return buf.getvalue()


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


def plot_curves(exp_dir: Path, out: Path) -> bool:
    """Training loss (bits/dim) against step, one line per run and seed; False if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = sorted(exp_dir.glob("runs/*/seed*/metrics.jsonl"))
    curves = []
    for log in logs:
        steps, values = read_curve(log, "bpd")
        if steps:
            curves.append((f"{log.parent.parent.name}/{log.parent.name}", steps, values))
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
    atomic_write_bytes(out, buf.getvalue())
    return True
