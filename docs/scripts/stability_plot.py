"""Divergence rate against learning rate, one line per setting, from an experiment folder
(seed exercise 2, ``experiments/exercise2_mnist.yaml``); also prints the table behind it.

    python docs/scripts/stability_plot.py runs/exercise2_mnist docs/images/exercise2_divergence.png

A setting is the hierarchy's cells (NVAE's, or a standard hierarchical VAE's conv cells) with
spectral regularization on or off; its learning rate is the run's ``training.lr``. Each point is
the fraction of a variant's runs that diverged, with its 95% Clopper-Pearson interval
(:func:`genzoo.experiment.statistics.binomial_interval`); each pair of settings at one rate gets
Fisher's exact test of equal divergence rates (``scipy.stats.fisher_exact``, two-sided). Where
runs do not diverge, what else changes is read from their training logs: the largest gradient
norm each run logged in the second half of its steps (the first steps' norms are large in
every setting) and its loss spikes (logged steps whose loss is over twice the median of the
five logged before it; early training, where the loss falls, has none). Only what the runs
wrote is read: each run folder's ``config.yaml``, ``results.json`` and ``metrics.jsonl``.
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

from genzoo.experiment.statistics import binomial_interval, summarize
from genzoo.layout import ExperimentPaths


def setting_of(config: dict) -> str:
    """``"NVAE, spectral on"`` / ``"standard HVAE, spectral off"`` from a run's config."""
    hierarchy = config["hierarchy"]
    cells = "standard HVAE" if hierarchy.get("decoder_cell") == "baselines.conv_cell" else "NVAE"
    spectral = (config.get("regularizers") or {}).get("spectral")
    key = spectral.get("key") if isinstance(spectral, dict) else spectral
    on = key not in (None, "baselines.none")
    return f"{cells}, spectral {'on' if on else 'off'}"


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


def table(groups: dict[tuple[str, float], list[dict]]) -> str:
    """Markdown: per setting and rate, diverged/runs with the interval, skipped steps, the
    survivors' test NLL; then Fisher's test of spectral on against off at each rate."""
    lines = [
        "| setting | lr | diverged / runs | rate (95% CI) | skipped steps (mean) | largest grad norm, 2nd half (median of runs) "
        "| loss spikes (mean) | survivors' test nats (IW) |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for (setting, lr), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        k = sum(r["status"] == "diverged" for r in rows)
        p = binomial_interval(k, len(rows))
        skipped = summarize(r.get("skipped_steps") for r in rows)
        nll = summarize(r.get("test_nats_iw") for r in rows if r["status"] == "finished")
        nll_text = "none survived" if nll is None else f"{nll.mean:.2f} ± {nll.std:.2f} (n={nll.n})"
        norms = [r["max_grad_norm"] for r in rows if r.get("max_grad_norm") is not None]
        spikes = summarize(r.get("loss_spikes") for r in rows)
        lines.append(
            f"| {setting} | {lr:g} | {k} / {len(rows)} | {p.rate:.2f} [{p.ci_low:.2f}, {p.ci_high:.2f}] | "
            f"{skipped.mean if skipped else 0:.1f} | {statistics.median(norms) if norms else float('nan'):.3g} | "
            f"{spikes.mean if spikes else 0:.1f} | {nll_text} |"
        )
    lines += [
        "",
        "| cells | lr | diverged, spectral on | diverged, spectral off | Fisher's exact p (two-sided) |",
    ]
    lines.append("| --- | ---: | ---: | ---: | ---: |")
    for (setting, lr), rows_on in sorted(groups.items()):
        if not setting.endswith("spectral on"):
            continue
        cells = setting.split(",")[0]
        rows_off = groups.get((f"{cells}, spectral off", lr))
        if not rows_off:
            continue
        k_on, k_off = (sum(r["status"] == "diverged" for r in rs) for rs in (rows_on, rows_off))
        _, p_value = stats.fisher_exact([[k_on, len(rows_on) - k_on], [k_off, len(rows_off) - k_off]])
        lines.append(
            f"| {cells} | {lr:g} | {k_on} / {len(rows_on)} | {k_off} / {len(rows_off)} | {p_value:.3f} |"
        )
    return "\n".join(lines)


def plot(groups: dict[tuple[str, float], list[dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_setting: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for (setting, lr), rows in groups.items():
        p = binomial_interval(sum(r["status"] == "diverged" for r in rows), len(rows))
        by_setting[setting].append((lr, p.rate, p.rate - p.ci_low, p.ci_high - p.rate))
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for i, (setting, points) in enumerate(sorted(by_setting.items())):
        points.sort()
        lrs, rates, lo, hi = zip(*points)
        shift = 1 + 0.04 * (i - (len(by_setting) - 1) / 2)  # keep overlapping intervals apart
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
        "exp_dir", type=Path, help="the experiment's output folder, e.g. runs/exercise2_mnist"
    )
    parser.add_argument("out", type=Path, help="the PNG to write")
    args = parser.parse_args(argv)
    groups = collect(args.exp_dir)
    if not groups:
        print(f"{args.exp_dir}: no finished or diverged runs", file=sys.stderr)
        return 2
    plot(groups, args.out)
    print(table(groups))
    print(f"\nplot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
