"""Effects against the training budget: ``budget.png`` and ``budget.csv`` (their only writer; the
names are :mod:`genzoo.io.run_layout`'s).

The report's ablation table compares each ablation with its base at the end of training only.
Whether an effect depends on the budget is answered from the ``kind: "curve"`` records the
trainer appends to each run's ``metrics.jsonl`` at fixed numbers of training images seen
(``evaluation.curve_at_images``, and once more at the end): at every ``images_seen`` both an
ablation and its base logged, the paired difference ``ablation - base`` of the held-out NLL over
the seeds both have there (:func:`genzoo.experiment.report.statistics.paired_difference`, the same
Student-t interval as the end-of-training table), and whether the ranking flips along the way.
Each interval is for its own point; nothing is adjusted across points.

A run that diverged, is still running or was stopped has fewer points; seeds are paired point
by point, so such a point has fewer pairs. Run names are grouped (variant, ablation and its base)
by each run folder's ``config.yaml``, written when the run starts, so that the points of runs
without a row of results yet (still running, or stopped during their final evaluation) count
too; rows (``results.json``) fill in what a folder lacks.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from genzoo.experiment.report.statistics import (
    CONFIDENCE,
    PairedDifference,
    Summary,
    finite,
    holm_adjusted,
    paired_difference,
    summarize,
)
from genzoo.io.atomic import atomic_write_bytes, atomic_write_text
from genzoo.io.run_layout import ExperimentPaths

METRICS = (("test_nats_iw", "test_bpd_iw"), ("test_nats_elbo", "test_bpd_elbo"))
"""The metrics compared against the budget, headline first: each the nats key, or its bits/dim
key where no curve record has the nats."""

METRIC_NAMES = {
    "test_nats_iw": ("test NLL (IW)", "nats"),
    "test_bpd_iw": ("test NLL (IW)", "bits/dim"),
    "test_nats_elbo": ("test NLL (ELBO)", "nats"),
    "test_bpd_elbo": ("test NLL (ELBO)", "bits/dim"),
}
"""What each metric is and its unit, for the figure's axes."""

Curves = dict[str, dict[int, dict[int, dict[str, Any]]]]
"""``{run name: {seed: {images seen: curve record}}}``."""


@dataclass(frozen=True)
class BudgetEffect:
    """One ablation's paired difference against its base on one metric, at each number of
    training images seen that both logged (ascending)."""

    ablation: str
    base: str
    metric: str
    differences: dict[int, PairedDifference]
    holm: dict[int, float | None] = field(default_factory=dict)
    """At each point, the p-value Holm-adjusted over the family of ablations compared on this
    metric at that point (:func:`~genzoo.experiment.report.statistics.holm_adjusted`)."""

    def holm_significant(self, images: int, level: float = 1 - CONFIDENCE) -> bool:
        """Whether the difference at ``images`` stays significant after Holm's adjustment."""
        p = self.holm.get(images)
        return p is not None and p < level

    @property
    def means(self) -> dict[int, float]:
        """The mean difference at each point that has one (a point with no pair has none)."""
        return {x: d.mean for x, d in self.differences.items() if d.mean is not None}

    @property
    def comparable(self) -> bool:
        """Whether two or more points have a difference, so that a flip could be seen."""
        return len(self.means) >= 2

    @property
    def flips(self) -> bool:
        """Whether the sign of the mean difference changes between budget points (which of the
        two ranks first changes; a zero mean is neither side)."""
        means = self.means.values()
        return any(m > 0 for m in means) and any(m < 0 for m in means)

    @property
    def flips_significantly(self) -> bool:
        """Whether the interval lies above zero at one point and below zero at another."""
        diffs = [d for d in self.differences.values() if d.excludes_zero]
        return any(d.ci_low > 0 for d in diffs) and any(d.ci_high < 0 for d in diffs)


@dataclass(frozen=True)
class VariantCurve:
    """One variant's held-out metric over its seeds, at each number of images seen (ascending)."""

    run: str
    metric: str
    points: dict[int, Summary]


@dataclass(frozen=True)
class Budget:
    """Everything the report says about the budget.

    ``metrics`` are the keys compared (headline first); ``effects`` one per ablation and metric;
    ``variants`` the headline metric of each variant; ``eval_images`` and ``iw_samples`` the
    distinct held-out image counts and importance samples (K) the curve points were measured
    with (they may be fewer than the final evaluation's).
    """

    metrics: tuple[str, ...]
    effects: tuple[BudgetEffect, ...]
    variants: tuple[VariantCurve, ...]
    eval_images: tuple[int, ...]
    iw_samples: tuple[int, ...]

    def of_metric(self, metric: str) -> list[BudgetEffect]:
        """The effects on ``metric``, in the ablations' order."""
        return [e for e in self.effects if e.metric == metric]


def read_curve_points(path: Path) -> dict[int, dict[str, Any]]:
    """``{images seen: record}`` of the ``kind: "curve"`` records of a metrics log, ascending.

    A line cut short by a kill is skipped; where one ``images_seen`` appears twice (a resumed
    run evaluated that point again) the later record wins. Values are kept as logged (non-finite
    numbers are the strings ``"nan"``/``"inf"``); :func:`finite` reads them.
    """
    points: dict[int, dict[str, Any]] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return points
    for line in lines:
        if '"curve"' not in line:  # most lines are training steps; skip them unparsed
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or record.get("kind") != "curve":
            continue
        images = finite(record.get("images_seen"))
        if images is not None and images > 0:
            points[int(images)] = record
    return dict(sorted(points.items()))


def collect_curves(paths: ExperimentPaths) -> Curves:
    """The curve records of every run folder that has any, by run name and seed."""
    curves: Curves = {}
    for run, seed_folder, folder in paths.runs():
        seed = seed_folder.removeprefix("seed")
        points = read_curve_points(folder.metrics)
        if points and seed.isdigit():
            curves.setdefault(run, {})[int(seed)] = points
    return curves


def budget_metrics(curves: Curves) -> tuple[str, ...]:
    """Of each of :data:`METRICS`, the nats key if any curve record has it finite, else the
    bits/dim key if any has that; a metric no record has is left out."""
    records = [r for seeds in curves.values() for points in seeds.values() for r in points.values()]
    chosen = []
    for keys in METRICS:
        key = next((k for k in keys if any(finite(r.get(k)) is not None for r in records)), None)
        if key is not None:
            chosen.append(key)
    return tuple(chosen)


def _values(seeds: Mapping[int, Mapping[int, Mapping[str, Any]]], images: int, metric: str) -> dict[int, Any]:
    """``{seed: value}`` of ``metric`` at ``images`` seen, over the seeds that logged that point."""
    return {s: points[images].get(metric) for s, points in seeds.items() if images in points}


def _images(seeds: Mapping[int, Mapping[int, Any]]) -> set[int]:
    return {images for points in seeds.values() for images in points}


def effect_against_budget(curves: Curves, ablation: str, base: str, metric: str) -> BudgetEffect:
    """The paired difference ``ablation - base`` of ``metric`` at every number of images seen
    that both logged (on some seed each)."""
    mine, theirs = curves.get(ablation, {}), curves.get(base, {})
    differences = {
        images: paired_difference(
            _values(mine, images, metric),
            _values(theirs, images, metric),
            ablation=ablation,
            base=base,
            metric=metric,
        )
        for images in sorted(_images(mine) & _images(theirs))
    }
    return BudgetEffect(ablation, base, metric, differences)


def with_holm(effects: list[BudgetEffect]) -> list[BudgetEffect]:
    """``effects`` (one metric) with, at each point, their p-values Holm-adjusted over the
    ablations that have a difference there: the family a reader scans when asking which
    components matter at that budget."""
    points = sorted({images for e in effects for images in e.differences})
    adjusted = {
        images: holm_adjusted(
            {e.ablation: e.differences[images].p_value for e in effects if images in e.differences}
        )
        for images in points
    }
    return [
        replace(e, holm={images: adjusted[images].get(e.ablation) for images in e.differences})
        for e in effects
    ]


def variant_curve(curves: Curves, run: str, metric: str) -> VariantCurve:
    """The mean (and std) of ``metric`` over ``run``'s seeds at each number of images seen;
    a point where no seed has a finite value is left out."""
    seeds = curves.get(run, {})
    summaries = {
        images: summarize(_values(seeds, images, metric).values()) for images in sorted(_images(seeds))
    }
    return VariantCurve(run, metric, {i: s for i, s in summaries.items() if s is not None})


def _run_configs(paths: ExperimentPaths) -> list[dict[str, Any]]:
    """``{run, group, base}`` of every run folder whose ``config.yaml`` can be read."""
    found = []
    for name, _, run_paths in paths.runs():
        try:
            config = yaml.safe_load(run_paths.config.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(config, dict):
            found.append(
                {"run": config.get("name", name), "group": config.get("group"), "base": config.get("base")}
            )
    return found


def _groups(rows: Iterable[Mapping[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """The variants' names and ``{ablation: base}``, in the order the rows first name them."""
    variants: list[str] = []
    bases: dict[str, str] = {}
    for row in rows:
        name = row.get("run")
        if row.get("group") == "ablation":
            if row.get("base"):
                bases.setdefault(name, row["base"])
        elif name not in variants:
            variants.append(name)
    return variants, bases


def _distinct(curves: Curves, key: str) -> tuple[int, ...]:
    values = {
        finite(r.get(key)) for seeds in curves.values() for points in seeds.values() for r in points.values()
    }
    return tuple(sorted(int(v) for v in values if v is not None))


def budget_effects(paths: ExperimentPaths, rows: Iterable[Mapping[str, Any]]) -> Budget | None:
    """Every ablation's effect against the budget, from the runs' curve records and their rows;
    None when no run logged a curve record (or none has a metric to compare)."""
    curves = collect_curves(paths)
    metrics = budget_metrics(curves)
    if not metrics:
        return None
    variants, bases = _groups([*_run_configs(paths), *rows])
    effects = tuple(
        effect
        for metric in metrics
        for effect in with_holm([effect_against_budget(curves, a, b, metric) for a, b in bases.items()])
    )
    every_run = [*variants, *(name for name in bases if name not in variants)]
    curves_of = tuple(variant_curve(curves, run, metrics[0]) for run in every_run if run in curves)
    return Budget(
        metrics,
        effects,
        curves_of,
        _distinct(curves, "test_num_images"),
        _distinct(curves, "test_iw_samples"),
    )


def budget_label(images: int) -> str:
    """A number of images seen in three significant figures: ``12.8k``, ``205k``, ``1.31M``."""
    rounded = float(f"{images:.3g}")  # first, so that 999_999 becomes 1M rather than 1e+03k
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rounded >= scale:
            return f"{rounded / scale:.3g}{suffix}"
    return f"{rounded:.3g}"


def budget_csv(budget: Budget) -> str:
    """``budget.csv``: one row per ablation, metric and number of images seen; an empty field
    where there is no value (no interval with fewer than two pairs)."""
    fields = [
        "ablation",
        "base",
        "metric",
        "images_seen",
        "mean",
        "ci_low",
        "ci_high",
        "n",
        "excludes_zero",
        "p_value",
        "p_holm",
    ]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(fields)
    for effect in budget.effects:
        for images, d in effect.differences.items():
            stats = (d.mean, d.ci_low, d.ci_high, d.n, d.excludes_zero, d.p_value, effect.holm.get(images))
            writer.writerow(
                [
                    effect.ablation,
                    effect.base,
                    effect.metric,
                    images,
                    *("" if v is None else v for v in stats),
                ]
            )
    return buf.getvalue()


def _axis(metric: str) -> str:
    name, unit = METRIC_NAMES[metric]
    return f"{name}, {unit}"


def _budget_ticks(ax, points: Iterable[int]) -> None:
    """A log-scaled images-seen axis with a tick, labelled ``51.2k``, at each point logged."""
    from matplotlib.ticker import NullLocator

    ticks = sorted(set(points))
    ax.set_xscale("log")
    ax.set_xticks(ticks, [budget_label(t) for t in ticks], rotation=45 if len(ticks) > 6 else 0)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("training images seen (log scale)")
    ax.grid(alpha=0.3)


def _colors(budget: Budget) -> dict[str, str]:
    """One colour per run name, the same in both panels (matplotlib's default cycle, in the
    order the variants and then the ablations come)."""
    names = [v.run for v in budget.variants] + [e.ablation for e in budget.effects]
    unique = list(dict.fromkeys(names))
    return {name: f"C{i % 10}" for i, name in enumerate(unique)}


def _plot_effects(ax, effects: list[BudgetEffect], colors: dict[str, str]) -> list[int]:
    """One line per ablation with its 95% intervals as error bars, dodged a little sideways so
    that the bars of ablations at the same point do not hide each other; returns the points."""
    for i, effect in enumerate(effects):
        points = [(x, d) for x, d in effect.differences.items() if d.mean is not None]
        dodge = 1.03 ** (i - (len(effects) - 1) / 2)
        below = [d.mean - d.ci_low if d.ci_low is not None else 0.0 for _, d in points]
        above = [d.ci_high - d.mean if d.ci_high is not None else 0.0 for _, d in points]
        ax.errorbar(
            [x * dodge for x, _ in points],
            [d.mean for _, d in points],
            yerr=[below, above],
            marker="o",
            capsize=3,
            linewidth=1.2,
            label=effect.ablation,
            color=colors.get(effect.ablation),
        )
    ax.axhline(0.0, color="black", linestyle="--", linewidth=0.8)
    ax.set_ylabel(f"Δ {_axis(effects[0].metric)}\n(ablation − base)")
    ax.set_title("paired difference, 95% CI at each point (not adjusted across points)", fontsize=9)
    return [x for e in effects for x in e.means]


def _plot_variants(ax, variants: list[VariantCurve], colors: dict[str, str]) -> list[int]:
    """One line per variant: its mean over seeds at each point; returns the points."""
    for curve in variants:
        ax.plot(
            list(curve.points),
            [s.mean for s in curve.points.values()],
            marker="o",
            linewidth=1.2,
            label=curve.run,
            color=colors.get(curve.run),
        )
    ax.set_ylabel(_axis(variants[0].metric))
    ax.set_title("each run, mean over its seeds", fontsize=9)
    return [x for v in variants for x in v.points]


def budget_figure(budget: Budget) -> bytes:
    """``budget.png``: the headline metric's effects against images seen, and under it each
    variant's mean; a panel with nothing to draw says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    effects = [e for e in budget.of_metric(budget.metrics[0]) if e.means]
    variants = [v for v in budget.variants if v.points]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7.5), dpi=110)
    panels = [
        (top, effects, _plot_effects, "no ablation shares a point with its base"),
        (bottom, variants, _plot_variants, "no variant has a point"),
    ]
    for ax, items, plot, empty in panels:
        if items:
            _budget_ticks(ax, plot(ax, items, _colors(budget)))
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_budget(paths: ExperimentPaths, rows: Iterable[Mapping[str, Any]]) -> Budget | None:
    """Compute the effects against the budget and write ``budget.png`` and ``budget.csv``
    (atomically); None, and nothing written, when no run logged a curve record."""
    budget = budget_effects(paths, rows)
    if budget is None:
        return None
    atomic_write_bytes(paths.budget_curves, budget_figure(budget))
    atomic_write_text(paths.budget_csv, budget_csv(budget))
    return budget
