"""Divergence rate against learning rate, one line per setting, from an experiment folder
(seed exercise 2: ``experiments/exercise2_power.yaml``, and the first design,
``experiments/exercise2_mnist.yaml``); also prints the tables behind it.

    python docs/scripts/stability_plot.py runs/exercise2_power docs/images/exercise2_power.png
    python docs/scripts/stability_plot.py docs/data/exercise2_edge/counts.csv docs/images/exercise2_edge.png

The second form reads a matrix's divergence counts instead of its run folders (a CSV with the
columns ``setting``, ``lr``, ``diverged`` and ``runs``, one row per cell, ``setting`` written as
:func:`setting_of` writes it): the rates, Fisher's tests, the logistic regression and the power
depend on the counts alone, so they come out as from the run folders; the per-run columns
(skipped steps, gradient norms, loss spikes, survivors' NLL) are left out.

A setting is the hierarchy's cells (NVAE's, or a standard hierarchical VAE's conv cells) and its
spectral regularization (off, a coefficient, or a coefficient annealed from ``coeff_init``); its
learning rate is the run's ``training.lr``. Each point is the fraction of a setting's runs that
diverged, with its 95% Clopper-Pearson interval
(:func:`genzoo.experiment.report.statistics.binomial_interval`). Every setting with spectral
regularization is compared with the same cells without it at the same rate by Fisher's exact
test (``scipy.stats.fisher_exact``, two-sided), Holm-adjusted over those comparisons; a logistic
regression of divergence on log(learning rate) and the spectral setting (and the cells, where
there are several) pools the rates (``statsmodels``; a table that separates perfectly has no
estimate, and the script says so); and the design's power is the Fisher test's, exact, for
divergence rates a reader may care about. Where runs do not diverge, what else changes is read
from their training logs: the largest gradient norm each run logged in the second half of its
steps and its loss spikes (logged steps whose loss is over twice the median of the five logged
before it). Only what the runs wrote is read: each run folder's ``config.yaml``,
``results.json`` and ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml
from scipy import stats

from genzoo.experiment.report.statistics import (
    binomial_interval,
    fisher_power,
    holm_adjusted,
    logistic_regression,
    pooled_fisher_power,
    summarize,
    with_odds_ratio,
)
from genzoo.io.run_layout import ExperimentPaths

OFF = "off"


def setting_of(config: dict) -> str:
    """``"standard HVAE, spectral off"``, ``"NVAE, spectral 0.01"``, ``"standard HVAE, spectral
    0.01 annealed from 10"`` from a run's config (the regularizer's defaults: coefficient 1e-2,
    no annealing)."""
    hierarchy = config["hierarchy"]
    cells = "standard HVAE" if hierarchy.get("decoder_cell") == "baselines.conv_cell" else "NVAE"
    return f"{cells}, spectral {spectral_of(config)}"


def spectral_of(config: dict) -> str:
    spectral = (config.get("regularizers") or {}).get("spectral")
    options = spectral if isinstance(spectral, dict) else {"key": spectral}
    if options.get("key") in (None, "baselines.none"):
        return OFF
    label = f"{float(options.get('coeff', 1e-2)):g}"
    if options.get("anneal"):
        label += f" annealed from {float(options.get('coeff_init', 10.0)):g}"
    return label


def collect(exp_dir: Path) -> dict[tuple[str, float], list[dict]]:
    """``{(setting, lr): [results rows]}`` of the runs that are over (finished or diverged)."""
    groups: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for _, _, paths in ExperimentPaths(exp_dir).runs():
        try:
            config = yaml.safe_load(paths.config.read_text())
            row = json.loads(paths.results.read_text())
        except (OSError, json.JSONDecodeError, yaml.YAMLError):
            continue
        if row.get("status") in ("finished", "diverged"):
            row = {**row, **log_summary(paths.metrics)}
            groups[(setting_of(config), float(config["training"]["lr"]))].append(row)
    return groups


SPIKE_FACTOR, SPIKE_WINDOW = 2.0, 5
"""A logged training step is a loss spike when its loss exceeds ``SPIKE_FACTOR`` times the median
of the ``SPIKE_WINDOW`` logged steps before it."""


def collect_counts(path: Path) -> dict[tuple[str, float], list[dict]]:
    """``{(setting, lr): [rows]}`` from a CSV of counts (see the module doc): ``diverged`` rows of
    status ``diverged`` and ``runs - diverged`` of status ``finished`` per cell."""
    import csv

    groups: dict[tuple[str, float], list[dict]] = {}
    with path.open(newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                setting, lr = row["setting"], float(row["lr"])
                diverged, runs = int(row["diverged"]), int(row["runs"])
            except (KeyError, TypeError, ValueError) as exc:
                raise SystemExit(
                    f"{path}, line {line}: expected the columns setting, lr, diverged, runs "
                    f"(a number each but setting); {exc!r}"
                ) from None
            if ", spectral " not in setting or not 0 <= diverged <= runs:
                raise SystemExit(
                    f"{path}, line {line}: expected a setting like 'standard HVAE, spectral off' and "
                    f"0 <= diverged <= runs, got {setting!r}, {diverged} of {runs}"
                )
            groups[(setting, lr)] = [{"status": "diverged"}] * diverged + [{"status": "finished"}] * (
                runs - diverged
            )
    return groups


def log_summary(metrics: Path) -> dict:
    """``max_grad_norm`` and ``loss_spikes`` of one run's logged training steps (finite values only;
    a run without a readable log gets neither)."""
    losses, norms = [], []
    try:
        lines = metrics.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("kind") != "train":
            continue
        for key, values in (("loss", losses), ("grad_norm", norms)):
            value = record.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                values.append(float(value))
    if not losses:
        return {}
    spikes = sum(
        losses[i] > SPIKE_FACTOR * statistics.median(losses[i - SPIKE_WINDOW : i])
        for i in range(SPIKE_WINDOW, len(losses))
    )
    late = norms[len(norms) // 2 :]
    return {"max_grad_norm": max(late) if late else None, "loss_spikes": spikes}


def table(groups: dict[tuple[str, float], list[dict]], *, counts_only: bool = False) -> str:
    """Markdown: per setting and rate, diverged/runs with the interval, skipped steps, the
    survivors' test NLL (not with ``counts_only``); then Fisher's test of spectral on against off
    at each rate, the logistic regression and the power."""
    if counts_only:
        lines = ["| setting | lr | diverged / runs | rate (95% CI) |", "| --- | ---: | ---: | --- |"]
        lines += [_rate_cells(setting, lr, rows) + " |" for (setting, lr), rows in sorted(groups.items())]
        return "\n".join(lines + ["", *_tests(groups)])
    lines = [
        "| setting | lr | diverged / runs | rate (95% CI) | skipped steps (mean) | largest grad norm, 2nd half (median of runs) "
        "| loss spikes (mean) | survivors' test nats (IW, else ELBO) |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for (setting, lr), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        skipped = summarize(r.get("skipped_steps") for r in rows)
        survivors = [r for r in rows if r["status"] == "finished"]
        key = (
            "test_nats_iw" if any(r.get("test_nats_iw") is not None for r in survivors) else "test_nats_elbo"
        )
        nll = summarize(r.get(key) for r in survivors)
        if nll is None:
            nll_text = "none survived" if not survivors else "not measured"
        else:
            nll_text = f"{nll.mean:.2f} ± {nll.std:.2f} (n={nll.n})" + (
                " ELBO" if key == "test_nats_elbo" else ""
            )
        norms = [r["max_grad_norm"] for r in rows if r.get("max_grad_norm") is not None]
        spikes = summarize(r.get("loss_spikes") for r in rows)
        lines.append(
            f"{_rate_cells(setting, lr, rows)} | "
            f"{skipped.mean if skipped else 0:.1f} | {statistics.median(norms) if norms else float('nan'):.3g} | "
            f"{spikes.mean if spikes else 0:.1f} | {nll_text} |"
        )
    return "\n".join(lines + ["", *_tests(groups)])


def _tests(groups: dict[tuple[str, float], list[dict]]) -> list[str]:
    sections = [
        fisher_table(groups),
        regression_text(groups),
        power_table(groups),
        realized_power_table(groups),
    ]
    return [line for section in sections for line in (section, "")][:-1]


def _diverged(rows: list[dict]) -> int:
    return sum(r["status"] == "diverged" for r in rows)


def _rate_cells(setting: str, lr: float, rows: list[dict]) -> str:
    """``| setting | lr | diverged / runs | rate [95% CI]`` of one cell (the row's first columns)."""
    k = _diverged(rows)
    p = binomial_interval(k, len(rows))
    return f"| {setting} | {lr:g} | {k} / {len(rows)} | {p.rate:.2f} [{p.ci_low:.2f}, {p.ci_high:.2f}]"


def fisher_table(groups: dict[tuple[str, float], list[dict]]) -> str:
    """Each setting with spectral regularization against the same cells without it, at each rate:
    Fisher's exact p and the p Holm-adjusted over every comparison in the table."""
    pairs = {}
    for (setting, lr), rows in sorted(groups.items()):
        cells, spectral = setting.split(", spectral ")
        off = groups.get((f"{cells}, spectral {OFF}", lr))
        if spectral != OFF and off:
            k, k_off = _diverged(rows), _diverged(off)
            p = stats.fisher_exact([[k, len(rows) - k], [k_off, len(off) - k_off]]).pvalue
            pairs[(cells, lr, spectral)] = (f"{k} / {len(rows)}", f"{k_off} / {len(off)}", float(p))
    adjusted = holm_adjusted({key: p for key, (_, _, p) in pairs.items()})
    lines = [
        "| cells | lr | spectral | diverged | diverged, spectral off | Fisher's exact p (two-sided) | Holm-adjusted p |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for (cells, lr, spectral), (with_it, without, p) in pairs.items():
        lines.append(
            f"| {cells} | {lr:g} | {spectral} | {with_it} | {without} | {p:.3f} | {adjusted[(cells, lr, spectral)]:.3f} |"
        )
    return "\n".join(lines)


def regression_text(groups: dict[tuple[str, float], list[dict]]) -> str:
    """The logistic regression of divergence on log(lr) and the spectral setting (and the cells,
    where there are several), or why there is none (one rate, one setting, separation)."""
    rows = [
        {"diverged": int(r["status"] == "diverged"), "lr": lr, "cells": setting.split(", spectral ")[0],
         "spectral": setting.split(", spectral ")[1]}
        for (setting, lr), runs in groups.items()
        for r in runs
    ]  # fmt: skip
    terms = []
    if len({r["lr"] for r in rows}) > 1:
        terms.append("np.log(lr)")
    if len({r["spectral"] for r in rows}) > 1 and any(r["spectral"] == OFF for r in rows):
        terms.append(f"C(spectral, Treatment('{OFF}'))")
    if len({r["cells"] for r in rows}) > 1:
        terms.append("C(cells)")
    if not terms:
        return "Logistic regression: one rate and one setting, nothing to regress on."
    fit = logistic_regression(rows, "diverged ~ " + " + ".join(terms))
    head = f"Logistic regression `{fit.formula}` over {fit.n} runs"
    if fit.problem:
        return f"{head}: no estimate ({fit.problem}); read the per-cell rates and Fisher's tests."
    lines = [f"{head} (Wald 95% intervals; odds ratios against spectral off):", "",
             "| term | log-odds (95% CI) | odds ratio (95% CI) | p |", "| --- | --- | --- | ---: |"]  # fmt: skip
    for c in fit.coefficients:
        ratio, low, high = c.odds_ratio
        lines.append(
            f"| {c.term} | {c.estimate:+.2f} [{c.ci_low:+.2f}, {c.ci_high:+.2f}] | "
            f"{ratio:.3g} [{low:.3g}, {high:.3g}] | {c.p_value:.3g} |"
        )
    return "\n".join(lines)


POWER_CASES = ((0.5, 0.1), (0.7, 0.2), (0.9, 0.1), (0.3, 0.0))
"""Divergence rates without and with spectral regularization whose difference the power table
asks about."""


def power_table(groups: dict[tuple[str, float], list[dict]]) -> str:
    """The exact power of one Fisher comparison with this design's runs per setting, at the 5%
    level and at the Bonferroni level of the family (a lower bound of Holm's power)."""
    n = min(len(rows) for rows in groups.values())
    family = max(1, sum(not s.endswith(f"spectral {OFF}") for s, _ in groups))
    lines = [
        f"Power of one comparison with {n} runs per setting (Fisher's exact test, two-sided, exact):",
        "",
        f"| divergence off | divergence on | power at 5% | power at 5% / {family} |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for p_off, p_on in POWER_CASES:
        lines.append(
            f"| {p_off:.2f} | {p_on:.2f} | {fisher_power(n, n, p_off, p_on):.2f} | "
            f"{fisher_power(n, n, p_off, p_on, alpha=0.05 / family):.2f} |"
        )
    return "\n".join(lines)


REALIZED_ODDS_RATIOS = (0.0, 0.1, 0.2, 0.5, 5.0)
"""Odds ratios of divergence (a setting against off) whose detection the realized power asks about;
0 is a setting that prevents every divergence."""


def realized_power_table(groups: dict[tuple[str, float], list[dict]]) -> str:
    """The power the design had at the divergence rates it met: each learning rate's rate pooled
    over every setting (the best estimate of the rates without an effect), a setting's odds
    multiplied by each of REALIZED_ODDS_RATIOS, and Fisher's exact test on counts pooled over the
    learning rates (exact, :func:`pooled_fisher_power`), at 5% and at the Bonferroni level."""
    by_lr: dict[float, list[dict]] = defaultdict(list)
    runs_per_setting: dict[float, int] = {}
    for (_setting, lr), rows in groups.items():
        by_lr[lr].extend(rows)
        runs_per_setting[lr] = min(runs_per_setting.get(lr, len(rows)), len(rows))
    lrs = sorted(by_lr)
    base = [_diverged(by_lr[lr]) / len(by_lr[lr]) for lr in lrs]
    runs = [runs_per_setting[lr] for lr in lrs]
    family = max(1, len({s for s, _ in groups if not s.endswith(f"spectral {OFF}")}))
    rates = ", ".join(f"{_diverged(by_lr[lr])}/{len(by_lr[lr])} at lr {lr:g}" for lr in lrs)
    lines = [
        f"Realized power: the divergence rates met, pooled over every setting ({rates}), and one "
        f"setting against off with {sum(runs)} runs each, pooled over the learning rates (Fisher's "
        "exact test, two-sided, exact power):",
        "",
        f"| odds ratio of divergence (setting / off) | power at 5% | power at 5% / {family} |",
        "| ---: | ---: | ---: |",
    ]
    for ratio in REALIZED_ODDS_RATIOS:
        shifted = [with_odds_ratio(p, ratio) for p in base]
        label = "0 (prevents every divergence)" if ratio == 0 else f"{ratio:g}"
        lines.append(
            f"| {label} | {pooled_fisher_power(runs, base, shifted):.2f} | "
            f"{pooled_fisher_power(runs, base, shifted, alpha=0.05 / family):.2f} |"
        )
    return "\n".join(lines)


def plot(groups: dict[tuple[str, float], list[dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_setting: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for (setting, lr), rows in groups.items():
        p = binomial_interval(_diverged(rows), len(rows))
        by_setting[setting].append((lr, p.rate, p.rate - p.ci_low, p.ci_high - p.rate))
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    all_lrs = [lr for _, lr in groups]
    # keep overlapping intervals apart by a small part of the rates' span, so that no point
    # moves near the next learning rate
    dodge = (
        min(0.04, 0.1 * math.log(max(all_lrs) / min(all_lrs)) / len(by_setting))
        if len(set(all_lrs)) > 1
        else 0.04
    )
    for i, (setting, points) in enumerate(sorted(by_setting.items())):
        points.sort()
        lrs, rates, lo, hi = zip(*points)
        shift = 1 + dodge * (i - (len(by_setting) - 1) / 2)
        ax.errorbar([x * shift for x in lrs], rates, yerr=[lo, hi], marker="o", capsize=3, label=setting)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (Adamax, peak)")
    ax.set_ylabel("fraction of runs that diverged")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Divergence rate with 95% Clopper-Pearson intervals", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "exp_dir",
        type=Path,
        help="the experiment's output folder, e.g. runs/exercise2_mnist, or a CSV of divergence counts",
    )
    parser.add_argument("out", type=Path, help="the PNG to write")
    args = parser.parse_args(argv)
    counts_only = args.exp_dir.suffix == ".csv"
    groups = collect_counts(args.exp_dir) if counts_only else collect(args.exp_dir)
    if not groups:
        print(f"{args.exp_dir}: no finished or diverged runs", file=sys.stderr)
        return 2
    plot(groups, args.out)
    print(table(groups, counts_only=counts_only))
    print(f"\nplot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
