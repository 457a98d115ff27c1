"""Seed exercise 1 on whole models: what NVAE's depthwise-separable decoder cells cost and save
against standard conv cells, at each width, from the runs of ``experiments/exercise1_params.yaml``
(and, for the NLL at equal steps, ``experiments/mnist_ablations.yaml``'s ``standard_cells`` row).

    python docs/scripts/exercise1_table.py runs/exercise1_params [runs/mnist_ablations]

A variant is named ``separable_c<C>`` or ``conv_c<C>``; each width gets one row per cell type
(parameters of the whole model and of its decoder and post-process cells, training images/s,
peak memory) and the ratio separable / conv; a speed measured while other genzoo processes
trained beside the run (``train_shared_load``) is marked ‡, as the report marks it. With the ablation matrix, the test NLL both
reach at equal steps, its paired difference over the shared seeds and the 95% t interval
(:func:`genzoo.experiment.report.statistics.paired_difference`). Only ``results.json`` is read.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from genzoo.experiment.report.markdown import SHARED_MARK
from genzoo.experiment.report.statistics import paired_difference, summarize
from genzoo.io.run_layout import ExperimentPaths

VARIANT = re.compile(r"^(separable|conv)_c(\d+)$")
CELL_PARAMS = ("params_decoder_cells", "params_postprocess_cells")


def rows_of(exp_dir: Path) -> list[dict]:
    """The finished runs' rows of an experiment folder's ``results.json``."""
    path = ExperimentPaths(exp_dir).results_json
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"{path}: cannot read the experiment's results ({exc})") from None
    return [r for r in rows if r.get("status") == "finished"]


def cost_table(rows: list[dict]) -> str:
    """One row per width and cell type, then the ratio separable / conv, of means over seeds."""
    by_width: dict[int, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        match = VARIANT.match(row["run"])
        if match:
            by_width[int(match.group(2))][match.group(1)].append(row)

    def mean(rows: list[dict], key) -> float | None:
        summary = summarize(key(r) for r in rows)
        return None if summary is None else summary.mean

    columns = {
        "params": lambda r: r.get("params"),
        "params in decoder + post-process cells": lambda r: sum(r.get(k) or 0 for k in CELL_PARAMS),
        "train img/s": lambda r: r.get("train_images_per_s"),
        "peak memory (MB)": lambda r: r.get("peak_memory_mb"),
    }
    lines = [
        "| C | cells | " + " | ".join(columns) + " |",
        "| ---: | --- |" + " ---: |" * len(columns),
    ]
    any_shared = False
    for width in sorted(by_width):
        means = {
            cells: {name: mean(runs, key) for name, key in columns.items()}
            for cells, runs in sorted(by_width[width].items(), reverse=True)
        }
        shared = {cells: any(_shared(r) for r in runs) for cells, runs in by_width[width].items()}
        any_shared = any_shared or any(shared.values())
        for cells, values in means.items():
            text = [
                f"{v:,.0f}" if name.startswith("params") else f"{v:,.1f}" + _mark(name, shared[cells])
                for name, v in values.items()
            ]
            lines.append(f"| {width} | {cells} | " + " | ".join(text) + " |")
        if len(means) == 2:
            ratios = [
                f"{means['separable'][name] / means['conv'][name]:.2f}x" + _mark(name, any(shared.values()))
                if means["conv"][name]
                else "n/a"
                for name in columns
            ]
            lines.append(f"| {width} | separable / conv | " + " | ".join(ratios) + " |")
    if any_shared:
        lines += ["", SHARED_NOTE]
    return "\n".join(lines)


SHARED_NOTE = (
    f"{SHARED_MARK} measured while other genzoo processes trained on this machine (`train_shared_load` "
    "in results.json): a figure of the load as much as of the model. Time the variants interleaved "
    "instead (`python -m benchmarks.model.bench_variants`)."
)


def _shared(row: dict) -> bool:
    return (row.get("train_shared_load") or 0) > 0


def _mark(column: str, shared: bool) -> str:
    return f" {SHARED_MARK}" if shared and column == "train img/s" else ""


def nll_table(rows: list[dict], base: str = "nvae", ablation: str = "standard_cells") -> str:
    """Test NLL (nats, IW and ELBO) of the base (separable cells) and the standard-cells ablation
    at equal steps, with the paired difference and its interval."""
    lines = [
        f"| test NLL (nats) | {base} (separable) | {ablation} (conv) | paired difference conv - separable (95% CI) | n |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for metric, label in (("test_nats_iw", "importance-weighted"), ("test_nats_elbo", "ELBO")):
        values = {
            name: {r["seed"]: r.get(metric) for r in rows if r["run"] == name} for name in (base, ablation)
        }
        summaries = [summarize(values[name].values()) for name in (base, ablation)]
        diff = paired_difference(values[ablation], values[base], metric=metric)
        if diff.kind == "interval":
            interval = f"{diff.mean:+.2f} [{diff.ci_low:+.2f}, {diff.ci_high:+.2f}]"
        elif diff.kind == "no_pairs":
            interval = "no shared seeds"
        else:
            interval = f"{diff.mean:+.2f} (no interval from {diff.n} pair)"
        cells = ["n/a" if s is None else f"{s.mean:.2f} ± {s.std:.2f}" for s in summaries]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {interval} | {diff.n} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "cost_dir", type=Path, help="the output folder of exercise1_params, e.g. runs/exercise1_params"
    )
    parser.add_argument(
        "ablation_dir",
        type=Path,
        nargs="?",
        help="the output folder of mnist_ablations, for the NLL at equal steps",
    )
    args = parser.parse_args(argv)
    print(cost_table(rows_of(args.cost_dir)))
    if args.ablation_dir is not None:
        print()
        print(nll_table(rows_of(args.ablation_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
