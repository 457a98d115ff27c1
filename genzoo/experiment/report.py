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
from genzoo.experiment.statistics import (
    CONFIDENCE,
    PairedDifference,
    Stability,
    Summary,
    paired_differences,
    stability,
)


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    fmt: str = "{:.3f}"
    lower_is_better: bool | None = None
    phrase: str = ""
    """What the value is, in a sentence (``"test NLL (IW)"``); the title where empty."""
    unit: str = ""

    @property
    def noun(self) -> str:
        return self.phrase or self.title

    def signed(self, value: float) -> str:
        """``value`` with its sign written out (``+1.20``, ``−0.40``), in the column's format."""
        text = self.fmt.format(abs(value))
        return ("−" if value < 0 else "+" if value > 0 else "") + text

    def amount(self, value: float) -> str:
        """A signed change with its unit, for sentences (``+1.20 nats``)."""
        return self.signed(value) + (f" {self.unit}" if self.unit else "")


COLUMNS: tuple[Column, ...] = (
    Column("params", "params", "{:,.0f}", phrase="parameters"),
    Column("test_bpd_elbo", "test bits/dim (ELBO)", "{:.4f}", True, "test NLL (ELBO)", "bits/dim"),
    Column("test_bpd_iw", "test bits/dim (IW)", "{:.4f}", True, "test NLL (IW)", "bits/dim"),
    Column("test_nats_elbo", "test nats (ELBO)", "{:.2f}", True, "test NLL (ELBO)", "nats"),
    Column("test_nats_iw", "test nats (IW)", "{:.2f}", True, "test NLL (IW)", "nats"),
    Column("fid", "FID", "{:.2f}", True),
    Column("active_units", "active units", "{:.0f}"),
    Column("train_images_per_s", "train img/s", "{:.1f}", False, "training speed", "img/s"),
    Column("peak_memory_mb", "peak mem (MB)", "{:.0f}", True, "peak memory", "MB"),
    Column("wall_time_s", "wall time (s)", "{:.0f}", True, "wall time", "s"),
    Column("skipped_steps", "skipped steps", "{:.0f}", True),
    Column("diverged", "diverged", "{:.0f}", True),
)
"""The comparison table's columns, in order; a column no run has is left out."""

HEADLINE = ("test_nats_iw", "test_nats_elbo", "test_bpd_iw", "test_bpd_elbo")
"""The metric of each ablation's sentence: the first of these the report has."""


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
    delta_cols = [c for c in columns if c.key != "diverged"]
    deltas = paired_differences(rows, [c.key for c in delta_cols])
    stable = stability(rows)
    add_statistics(rows, deltas, stable)

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
        md += ["", *_ablation_section(ablations, stats, deltas, delta_cols)]
    if _show_stability(rows, stats):
        md += ["", *_stability_section(stable, [*variants, *ablations], columns)]
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


def _percent(confidence: float) -> str:
    return f"{confidence * 100:g}%"


def _delta_cell(diff: PairedDifference, col: Column, shared: int) -> str:
    """The Δ part of an ablation table cell: ``Δ +1.20 [+0.40, +2.00] *``."""
    if diff.mean is None:
        return ""
    text = f"Δ {col.signed(diff.mean)}"
    if diff.kind == "interval":
        text += f" [{col.signed(diff.ci_low)}, {col.signed(diff.ci_high)}]"
    elif diff.kind == "constant":
        text += " (same each seed)"
    else:
        text += " (1 seed, no CI)"
    if diff.n != shared and diff.kind != "one_pair":
        text += f" n={diff.n}"
    return text + (" *" if diff.excludes_zero else "")


def _ablation_label(name: str, changes: dict[str, Any]) -> str:
    listed = ", ".join(f"`{k}` → `{_short(v)}`" for k, v in changes.items())
    return f"`{name}`" + (f" ({listed})" if listed else "")


def _verdict(col: Column, diff: PairedDifference) -> str:
    if col.lower_is_better is None or not diff.excludes_zero or diff.mean == 0:
        return ""
    return "better" if (diff.mean < 0) == col.lower_is_better else "worse"


def ablation_sentence(diff: PairedDifference, col: Column, changes: dict[str, Any], *, why: str = "") -> str:
    """One sentence on one metric of one ablation, to quote as it is; ``why`` explains a missing
    difference (``"every run of it diverged"``)."""
    label, noun, base = _ablation_label(diff.ablation, changes), col.noun, f"`{diff.base}`"
    if diff.kind == "no_pairs":
        return (
            f"{label}: no seed where both it and {base} have a finite {noun}"
            + (f" ({why})" if why else "")
            + ", so no difference can be given."
        )
    seeds = f"{diff.n} seed{'s' if diff.n > 1 else ''}"
    if diff.kind == "one_pair":
        return (
            f"{label} changes {noun} by {col.amount(diff.mean)} against {base} on seed "
            f"{diff.seeds[0]}: one seed, no interval can be given."
        )
    verdict = _verdict(col, diff)
    ending = f": {verdict}." if verdict else "."
    if diff.kind == "constant":
        if diff.mean == 0:
            return f"{label} does not change {noun} against {base} on any of {seeds}."
        return f"{label} changes {noun} by {col.amount(diff.mean)} against {base}, the same on each of {seeds}{ending}"
    interval = f"{_percent(diff.confidence)} CI [{col.signed(diff.ci_low)}, {col.signed(diff.ci_high)}]"
    if not diff.excludes_zero:
        return (
            f"{label}: no measurable effect on {noun} against {base} at this budget "
            f"(Δ {col.amount(diff.mean)}, {interval}, {seeds})."
        )
    return f"{label} changes {noun} by {col.amount(diff.mean)} against {base} ({interval}, {seeds}){ending}"


def _ablation_section(
    ablations: list[str],
    stats: dict[str, dict[str, Any]],
    deltas: dict[str, dict[str, PairedDifference]],
    delta_cols: list[Column],
) -> list[str]:
    md = ["## Ablations", ""]
    md.append(
        "Each ablation changes its base variant as listed; values are mean ± std over its seeds. "
        "Δ is the paired difference ablation − base: per seed both ran (same seed, same data order "
        "and initial noise), then averaged over those pairs, with a "
        f"{_percent(CONFIDENCE)} confidence interval from Student's t over the per-seed differences. "
        '`*` marks an interval that excludes zero; "same each seed" is a difference identical on '
        "every pair (an exact figure, such as a parameter count); n= counts the pairs where fewer "
        "than the shared seeds have the value. The sentences below say better or worse where the "
        "interval excludes zero and the column has a direction."
    )
    md.append("")
    header = ["ablation", "base", "changes", "seeds (shared)", *[c.title for c in delta_cols]]
    table = []
    for name in ablations:
        s = stats[name]
        shared = len(set(s["seeds"]) & set(stats.get(s["base"], {}).get("seeds", [])))
        changes = ", ".join(f"`{k}` → `{_short(v)}`" for k, v in s["changes"].items())
        cells = []
        for c in delta_cols:
            cell = _cell(s.get(c.key), c)
            delta = _delta_cell(deltas[name][c.key], c, shared) if name in deltas else ""
            cells.append(f"{cell}; {delta}" if delta and cell != "–" else delta or cell)
        table.append([name, str(s["base"]), changes, f"{len(s['seeds'])} ({shared})", *cells])
    md.append(_markdown_table(header, table))

    by_key = {c.key: c for c in delta_cols}
    headline = next((k for k in HEADLINE if k in by_key), None)
    # After each sentence, the other metrics whose interval excludes zero; bits/dim repeat the
    # nats of the same NLL (a constant factor), so each NLL is listed once, in nats if there.
    listed_keys, seen = [], set()
    for key in [*(k for k in HEADLINE if k in by_key), *(c.key for c in delta_cols if c.key not in HEADLINE)]:
        if by_key[key].noun not in seen:
            seen.add(by_key[key].noun)
            if key != headline:
                listed_keys.append(key)
    md += ["", "### Effects", ""]
    for name in ablations:
        s = stats[name]
        if name not in deltas:
            md.append(f"- `{name}`: no base variant to compare with.")
            continue
        why = (
            f"`{s['base']}` has no runs here"
            if s["base"] not in stats
            else "every run of it diverged"
            if s["statuses"] == ["diverged"]
            else ""
        )
        lines = []
        if headline is not None:
            lines.append(ablation_sentence(deltas[name][headline], by_key[headline], s["changes"], why=why))
        others = [(by_key[k], deltas[name][k]) for k in listed_keys if deltas[name][k].excludes_zero]
        if others:
            listed = "; ".join(f"{c.noun} {_delta_phrase(d, c)}" for c, d in others)
            lines.append(f"Also beyond noise: {listed}.")
        md.append("- " + " ".join(lines) if lines else f"- `{name}`: no metric to compare.")
    return md


def _delta_phrase(diff: PairedDifference, col: Column) -> str:
    if diff.kind == "constant":
        return f"{col.amount(diff.mean)} (same each seed)"
    return f"{col.amount(diff.mean)} ({_percent(diff.confidence)} CI [{col.signed(diff.ci_low)}, {col.signed(diff.ci_high)}])"


def _show_stability(rows: list[dict[str, Any]], stats: dict[str, dict[str, Any]]) -> bool:
    """The stability table is worth its space when something diverged or skipped steps, or when
    there are seeds to count over."""
    return (
        any(r.get("status") == "diverged" for r in rows)
        or any((_number(r.get("skipped_steps")) or 0) > 0 for r in rows)
        or any(len(s["seeds"]) > 1 for s in stats.values())
    )


def _summary_cell(summary: Summary | None, fmt: str, survivors: int) -> str:
    if summary is None:
        return "none survived" if survivors == 0 else "–"
    text = fmt.format(summary.mean)
    return text + (f" ± {fmt.format(summary.std)} (n={summary.n})" if summary.n > 1 else " (n=1)")


def _stability_section(stable: dict[str, Stability], names: list[str], columns: list[Column]) -> list[str]:
    nll_key = next((s.nll_key for s in stable.values() if s.nll_key), None)
    nll_col = next((c for c in [*columns, *COLUMNS] if c.key == nll_key), None)
    md = ["## Stability", ""]
    md.append(
        "Per variant and ablation: how many of its runs diverged, out of those that are over "
        f"(finished or diverged), and that rate with its {_percent(CONFIDENCE)} Clopper-Pearson "
        "(exact binomial) interval; the steps skipped for a non-finite loss or a large gradient "
        "norm (diverged runs included); and for the runs that finished (survivors) the last "
        "training step's loss (nats per image, with that step's KL weight and regularizers)"
        + (f" and the {nll_col.title}, mean ± std." if nll_col else ".")
    )
    not_counted = sum(stable[n].not_counted for n in names)
    if not_counted:
        md.append(f"{not_counted} failed or interrupted run(s) are not counted.")
    md.append("")
    header = ["run", "diverged / runs", f"divergence rate ({_percent(CONFIDENCE)} CI)"]
    header.append("skipped steps: total (mean per run)")
    header += ["survivors", "survivors' final loss"]
    if nll_col:
        header.append(f"survivors' {nll_col.title}")
    table = []
    for name in names:
        s = stable[name]
        d = s.divergence
        rate = "–" if d.rate is None else f"{d.rate:.2f} [{d.ci_low:.2f}, {d.ci_high:.2f}]"
        skipped = "–" if s.skipped_total is None else f"{s.skipped_total:.0f} ({s.skipped_mean:.1f})"
        row = [name, f"{d.k} / {d.n}", rate, skipped, str(s.survivors)]
        row.append(_summary_cell(s.final_loss, "{:.2f}", s.survivors))
        if nll_col:
            row.append(_summary_cell(s.test_nll, nll_col.fmt, s.survivors))
        table.append(row)
    md.append(_markdown_table(header, table))
    return md


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
    # the run's own figures first, then the statistics add_statistics put on the rows
    keys.sort(key=lambda k: k.startswith(("delta_", "divergence_")))
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
