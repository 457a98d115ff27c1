"""The text of ``report.md``: the comparison table, the ablations with their paired
differences and one sentence each, their effects against the budget, the stability table,
curves and sample grids.

Everything here turns rows (one per run, as :func:`genzoo.experiment.report.collect_results`
returns them) and their statistics (:mod:`genzoo.experiment.report.statistics`) into Markdown; it
reads and writes no file.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from genzoo.engine.efficiency import PEAK_SCOPES
from genzoo.experiment.report.budget import Budget, BudgetEffect, budget_label
from genzoo.experiment.report.statistics import (
    CONFIDENCE,
    PairedDifference,
    Stability,
    Summary,
    holm_adjusted,
)
from genzoo.experiment.run.status import RunStatus
from genzoo.io.run_layout import ExperimentPaths


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

SPEED_KEYS = ("train_images_per_s",)
"""Columns that are speeds: where a run of a comparison was measured beside other genzoo
processes (``train_shared_load`` above 0), its figure is marked and no interval is given."""

SHARED_MARK = "‡"

HEADLINE = ("test_nats_iw", "test_nats_elbo", "test_bpd_iw", "test_bpd_elbo")
"""The metric of each ablation's sentence: the first of these the report has."""


def number(value: Any) -> float | None:
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
            "shared_load": any((number(r.get("train_shared_load")) or 0) > 0 for r in group),
        }
        for key in keys:
            values = [v for v in (number(r.get(key)) for r in group) if v is not None]
            if values:
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                stats[key] = (statistics.fmean(values), std, len(values))
        out[name] = stats
    return out


def _cell(stat: tuple[float, float, int] | None, col: Column, *, shared_load: bool = False) -> str:
    if stat is None:
        return "–"
    mean, std, n = stat
    text = col.fmt.format(mean)
    text = f"{text} ± {col.fmt.format(std)}" if n > 1 else text
    return f"{text} {SHARED_MARK}" if shared_load and col.key in SPEED_KEYS else text


def _shared_load_note(stats: dict[str, dict[str, Any]], columns: Sequence[Column]) -> str:
    if not any(s["shared_load"] for s in stats.values()) or not any(c.key in SPEED_KEYS for c in columns):
        return ""
    return (
        f"{SHARED_MARK} measured while other genzoo processes trained on this machine "
        "(`train_shared_load` in results.json: the fraction of the run's load checks that found "
        "one): a figure of the load as much as of the model, so no interval or `*` is given for "
        "it. Compare speeds by timing the variants interleaved under equal load "
        "(`benchmarks/cells/exercise1_cells.py`)."
    )


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown_report(
    title: str,
    paths: ExperimentPaths,
    rows: list[dict[str, Any]],
    columns: list[Column],
    stats: dict[str, dict[str, Any]],
    deltas: dict[str, dict[str, PairedDifference]],
    delta_cols: list[Column],
    stable: dict[str, Stability],
    *,
    curves: bool,
    budget: Budget | None = None,
    unfinished: Sequence[RunStatus] = (),
) -> str:
    """The whole ``report.md``; ``budget`` adds the effects against images seen (when the runs
    logged curve records); ``unfinished`` names the runs that have no row yet."""
    variants = [n for n, s in stats.items() if s["group"] == "variant"]
    ablations = [n for n, s in stats.items() if s["group"] == "ablation"]
    md = [f"# {title}", ""]
    md.append(
        f"{len(rows)} run(s): {len(variants)} variant(s), {len(ablations)} ablation(s). "
        "Values are mean ± standard deviation over seeds (n = number of seeds); "
        "bits/dim are on the test split; ELBO = negative evidence lower bound, IW = importance-weighted NLL."
    )
    if unfinished:
        listed = ", ".join(_unfinished_run(s) for s in unfinished)
        md += ["", f"{len(unfinished)} run(s) not in the tables yet: {listed}."]
    md += ["", "## Comparison", ""]
    header = ["run", "seeds", "status", *[c.title for c in columns]]
    table_rows = [
        [name, str(len(stats[name]["seeds"])), "/".join(stats[name]["statuses"])]
        + [_cell(stats[name].get(c.key), c, shared_load=stats[name]["shared_load"]) for c in columns]
        for name in variants
    ]
    md.append(_markdown_table(header, table_rows) if table_rows else "_no finished variant runs yet_")
    shared_note = _shared_load_note(stats, columns)
    if shared_note:
        md += ["", shared_note]
    memory_note = _peak_memory_note(rows)
    if memory_note and any(c.key == "peak_memory_mb" for c in columns):
        md += ["", memory_note]
    if ablations:
        md += ["", *_ablation_section(ablations, stats, deltas, delta_cols)]
    if budget is not None:
        md += ["", *_budget_section(budget)]
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
    grids = [(run, seed, t, grid) for run, seed, folder in paths.runs() for t, grid in folder.sample_grids()]
    if grids:
        md += ["", "## Samples", ""]
        for run, seed, temp, grid in grids:
            rel = grid.relative_to(paths.root).as_posix()
            md.append(f"**{run}** ({seed}, temperature {temp})  ")
            md.append(f"![{run} {seed} t={temp}]({rel})")
            md.append("")
    return "\n".join(md).rstrip() + "\n"


def _unfinished_run(status: RunStatus) -> str:
    step = f", step {status.progress()}" if status.step is not None else ""
    return f"`{status.run}` ({status.state}{step})"


def _percent(confidence: float) -> str:
    return f"{confidence * 100:g}%"


def _delta_cell(diff: PairedDifference, col: Column, shared: int) -> str:
    """The Δ part of an ablation table cell: ``Δ +1.20 [+0.40, +2.00] *``."""
    text = _difference_text(diff, col, shared)
    return f"Δ {text}" if text else ""


def _difference_text(diff: PairedDifference, col: Column, shared: int) -> str:
    """A paired difference with its interval: ``+1.20 [+0.40, +2.00] *`` (``*``: the interval
    excludes zero); ``n=`` where it has fewer pairs than ``shared``; empty without a pair."""
    if diff.mean is None:
        return ""
    text = col.signed(diff.mean)
    if diff.kind == "interval":
        text += f" [{col.signed(diff.ci_low)}, {col.signed(diff.ci_high)}]"
    elif diff.kind == "constant":
        text += " (same each seed)"
    elif diff.kind == "shared_load":
        return f"{text} {SHARED_MARK} (shared load: no interval)"
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


def ablation_sentence(
    diff: PairedDifference,
    col: Column,
    changes: dict[str, Any],
    *,
    why: str = "",
    holm_p: float | None = None,
    family: int = 1,
) -> str:
    """One sentence on one metric of one ablation, to quote as it is; ``why`` explains a missing
    difference (``"every run of it diverged"``). ``holm_p`` is the difference's p-value adjusted
    by Holm's method over a ``family`` of that many ablations: an interval that excludes zero
    is an effect only where the adjusted p-value is below the level too, else "inconclusive";
    an interval that includes zero is "no effect detected at this budget", with the size of
    effect it does not rule out."""
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
        bound = col.amount(max(abs(diff.ci_low), abs(diff.ci_high))).lstrip("+")
        return (
            f"{label}: no effect on {noun} detected against {base} at this budget and power "
            f"(Δ {col.amount(diff.mean)}, {interval}, {seeds}): effects up to {bound} either way "
            "are not ruled out."
        )
    level = 1 - diff.confidence
    ablations = f"{family} ablation{'s' if family != 1 else ''}"
    if holm_p is not None and holm_p >= level:
        return (
            f"{label}: inconclusive on {noun} against {base} (Δ {col.amount(diff.mean)}, {interval}, "
            f"{seeds}): the interval excludes zero, but not after Holm's adjustment over the "
            f"{ablations} (adjusted p = {holm_p:.3g})."
        )
    adjusted = f", Holm-adjusted p = {holm_p:.3g} over {ablations}" if holm_p is not None else ""
    return (
        f"{label} changes {noun} by {col.amount(diff.mean)} against {base} "
        f"({interval}, {seeds}{adjusted}){ending}"
    )


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
    by_key = {c.key: c for c in delta_cols}
    headline = next((k for k in HEADLINE if k in by_key), None)
    holm = (
        holm_adjusted({name: deltas[name][headline].p_value for name in ablations if name in deltas})
        if headline is not None
        else {}
    )
    family = sum(p is not None for p in holm.values())
    if headline is not None:
        md[-1] += (
            f" The last column is the paired t-test's p-value of the {by_key[headline].noun} "
            f"difference and, in brackets, that p-value adjusted by Holm's method over the {family} "
            "ablations that have one (statsmodels): a family of comparisons needs the adjusted "
            "value below 0.05 to call an effect; where only the unadjusted interval excludes zero "
            'the sentence says "inconclusive".'
        )
    md.append("")
    header = ["ablation", "base", "changes", "seeds (shared)", *[c.title for c in delta_cols]]
    if headline is not None:
        header.append(f"p (Holm), {by_key[headline].title}")
    table = []
    for name in ablations:
        s = stats[name]
        shared = len(set(s["seeds"]) & set(stats.get(s["base"], {}).get("seeds", [])))
        changes = ", ".join(f"`{k}` → `{_short(v)}`" for k, v in s["changes"].items())
        cells = []
        for c in delta_cols:
            cell = _cell(s.get(c.key), c, shared_load=s["shared_load"])
            delta = _delta_cell(deltas[name][c.key], c, shared) if name in deltas else ""
            cells.append(f"{cell}; {delta}" if delta and cell != "–" else delta or cell)
        if headline is not None:
            p = deltas[name][headline].p_value if name in deltas else None
            cells.append("–" if p is None else f"{p:.3g} ({holm[name]:.3g})")
        table.append([name, str(s["base"]), changes, f"{len(s['seeds'])} ({shared})", *cells])
    md.append(_markdown_table(header, table))
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
            lines.append(
                ablation_sentence(
                    deltas[name][headline],
                    by_key[headline],
                    s["changes"],
                    why=why,
                    holm_p=holm.get(name),
                    family=family,
                )
            )
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


def _budget_section(budget: Budget) -> list[str]:
    """One table per metric: each ablation's difference at every number of images seen, and
    whether its ranking against the base flips; then the figure."""
    md = ["## Effects against budget (images seen)", ""]
    nouns = [_budget_column(m).noun for m in budget.metrics]
    measured = [f"{' or '.join(map(str, budget.eval_images))} held-out images"] if budget.eval_images else []
    if budget.iw_samples:
        measured.append(f"K = {' or '.join(map(str, budget.iw_samples))} importance samples for the IW NLL")
    measured_text = f" (each point on {', '.join(measured)})" if measured else ""
    md.append(
        f"The paired difference ablation − base of the {' and '.join(nouns)}, as in the ablation "
        "table, measured while training at each number of training images seen (all processes "
        f"together) that both logged{measured_text}; a finished run's last point is the end of "
        "training. These evaluations may use fewer images or importance samples than the final "
        "one, so the last column need not equal the table above. Each cell is the mean over the "
        f"seeds both have at that point with its {_percent(CONFIDENCE)} Student-t interval; `*` "
        "marks an interval that excludes zero; n= counts the pairs where a point has fewer (a run "
        "that diverged or is still running). `†` marks a difference that stays significant at "
        f"the {(1 - CONFIDENCE) * 100:g}% level after Holm's adjustment over the "
        "ablations compared at that point (the family a reader scans for what matters at that "
        "budget); word an answer from `†`, not from `*` alone. Nothing is adjusted across "
        "points: with many points, one may exclude zero by chance. Ranking flips: yes where the "
        'mean difference changes sign between points; "yes, significant" where the interval lies '
        "above zero at one point and below it at another."
    )
    if not budget.effects:
        md += [
            "",
            "No ablation to compare; the figure shows each variant's held-out NLL against images seen.",
        ]
    for metric in budget.metrics:
        col = _budget_column(metric)
        effects = budget.of_metric(metric)
        if effects:
            md += ["", f"### {col.title}", "", _budget_table(effects, col)]
    md += ["", "![effects against budget](budget.png)"]
    return md


def _budget_column(metric: str) -> Column:
    return next(c for c in COLUMNS if c.key == metric)


def _budget_table(effects: list[BudgetEffect], col: Column) -> str:
    """One row per ablation, one column per number of images seen (``–``: not logged by both)."""
    points = sorted({images for e in effects for images in e.differences})
    header = ["ablation", "base", *(budget_label(p) for p in points), "ranking flips"]
    table = []
    for effect in effects:
        shared = max((d.n for d in effect.differences.values()), default=0)
        cells = [
            _difference_text(effect.differences[p], col, shared)
            + (" †" if effect.holm_significant(p) else "")
            if p in effect.differences
            else ""
            for p in points
        ]
        table.append([effect.ablation, effect.base, *(c or "–" for c in cells), _flip_cell(effect)])
    return _markdown_table(header, table)


def _flip_cell(effect: BudgetEffect) -> str:
    if not effect.comparable:
        return "–"  # fewer than two points with a difference
    if effect.flips_significantly:
        return "yes, significant"
    return "yes" if effect.flips else "no"


def _show_stability(rows: list[dict[str, Any]], stats: dict[str, dict[str, Any]]) -> bool:
    """The stability table is worth its space when something diverged or skipped steps, or when
    there are seeds to count over."""
    return (
        any(r.get("status") == "diverged" for r in rows)
        or any((number(r.get("skipped_steps")) or 0) > 0 for r in rows)
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
