"""The scripts behind docs/results.md read what runs wrote and compute what the page quotes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from genzoo.io.run_layout import ExperimentPaths

SCRIPTS = Path(__file__).resolve().parents[1] / "docs" / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stability_plot():
    return load_script("stability_plot")


def write_run(
    root: Path,
    name: str,
    seed: int,
    *,
    cells: str,
    spectral: bool,
    lr: float,
    status: str,
    losses: list[float],
    norms: list[float],
    nll: float | None = None,
) -> None:
    paths = ExperimentPaths(root).run(name, seed)
    paths.dir.mkdir(parents=True)
    hierarchy = {"key": "nvae.hierarchy"}
    if cells == "conv":
        hierarchy["decoder_cell"] = "baselines.conv_cell"
    regularizers = {"spectral": {"key": "nvae.spectral_regularizer" if spectral else "baselines.none"}}
    paths.config.write_text(
        yaml.safe_dump({"hierarchy": hierarchy, "regularizers": regularizers, "training": {"lr": lr}})
    )
    row = {"status": status, "skipped_steps": 2 if status == "diverged" else 0}
    if nll is not None:
        row["test_nats_iw"] = nll
    paths.results.write_text(json.dumps(row))
    paths.metrics.write_text(
        "\n".join(
            json.dumps({"kind": "train", "step": 10 * i, "loss": loss, "grad_norm": norm})
            for i, (loss, norm) in enumerate(zip(losses, norms))
        )
        + "\n"
        + json.dumps({"kind": "eval", "loss": 1e9})
        + "\n"
    )


def test_log_summary_counts_spikes_against_the_preceding_median_and_late_gradient_norms(
    stability_plot, tmp_path
):
    # A falling loss is no spike; 250 after a median of 100 is; NaN is ignored.
    losses = [500, 300, 200, 150, 120, 100, 100, 250, 100, float("nan"), 100]
    norms = [1e4, 50, 40, 30, 20, 10, 10, 10, 99, 10, 10]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        "\n".join(
            json.dumps({"kind": "train", "loss": loss, "grad_norm": norm})
            for loss, norm in zip(losses, norms)
        )
    )
    summary = stability_plot.log_summary(metrics)
    assert summary["loss_spikes"] == 1
    assert summary["max_grad_norm"] == 99  # the first step's 1e4 is in the first half
    assert stability_plot.log_summary(tmp_path / "missing.jsonl") == {}


def test_table_and_plot_from_an_experiment_folder(stability_plot, tmp_path):
    calm = {"losses": [200, 150, 120, 110, 105, 100, 100], "norms": [100, 20, 10, 5, 5, 5, 5]}
    for seed in range(4):
        diverged = seed < 3  # 3 of 4 diverge with spectral off at lr 0.1
        write_run(
            tmp_path,
            "off",
            seed,
            cells="conv",
            spectral=False,
            lr=0.1,
            status="diverged" if diverged else "finished",
            nll=None if diverged else 110.0 + seed,
            **calm,
        )
        write_run(
            tmp_path,
            "on",
            seed,
            cells="conv",
            spectral=True,
            lr=0.1,
            status="finished",
            nll=100.0 + seed,
            **calm,
        )
    write_run(tmp_path, "running", 0, cells="conv", spectral=True, lr=0.01, status="interrupted", **calm)

    groups = stability_plot.collect(tmp_path)
    assert set(groups) == {("standard HVAE, spectral off", 0.1), ("standard HVAE, spectral 0.01", 0.1)}
    text = stability_plot.table(groups)
    low, high = stats.binomtest(3, 4).proportion_ci(0.95, method="exact")
    assert f"| standard HVAE, spectral off | 0.1 | 3 / 4 | 0.75 [{low:.2f}, {high:.2f}] |" in text
    assert "| standard HVAE, spectral 0.01 | 0.1 | 0 / 4 | 0.00 [0.00, 0.60] |" in text
    assert "| 101.50 ± 1.29 (n=4) |" in text  # the survivors: 100..103
    assert "| 113.00 ± 0.00 (n=1) |" in text  # the one survivor with spectral off
    _, p_value = stats.fisher_exact([[0, 4], [3, 1]])
    # one comparison: Holm leaves its p as it is
    assert f"| standard HVAE | 0.1 | 0.01 | 0 / 4 | 3 / 4 | {p_value:.3f} | {p_value:.3f} |" in text
    assert "Logistic regression `diverged ~ C(spectral, Treatment('off'))` over 8 runs" in text
    assert "Power of one comparison with 4 runs per setting" in text
    assert "| 0.90 | 0.10 | 0.43 |" in text  # the referee's figure for the first design

    out = tmp_path / "plot.png"
    assert stability_plot.main([str(tmp_path), str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stability_plot.main([str(tmp_path / "empty"), str(out)]) == 2


def test_counts_give_the_tests_of_the_run_folders(stability_plot, tmp_path):
    """A CSV of counts (a matrix whose run folders are gone) gives the same rates, Fisher tests,
    regression and power as the folders of those runs."""
    folders = tmp_path / "runs"
    for seed in range(6):
        for lr, diverging_seeds in ((0.07, 2), (0.1, 5)):
            for name, spectral, extra in (("off", False, 0), ("on", True, -1)):
                diverged = seed < max(diverging_seeds + extra, 0)
                write_run(
                    folders, f"{name}_{lr}", seed, cells="conv", spectral=spectral, lr=lr,
                    status="diverged" if diverged else "finished", nll=None if diverged else 100.0,
                    losses=[100, 90, 80], norms=[5, 5, 5],
                )  # fmt: skip
    from_folders = stability_plot.table(stability_plot.collect(folders))
    counts = tmp_path / "counts.csv"
    counts.write_text(
        "setting,lr,diverged,runs\n"
        '"standard HVAE, spectral off",0.07,2,6\n"standard HVAE, spectral off",0.1,5,6\n'
        '"standard HVAE, spectral 0.01",0.07,1,6\n"standard HVAE, spectral 0.01",0.1,4,6\n'
    )
    from_counts = stability_plot.table(stability_plot.collect_counts(counts), counts_only=True)
    tests_of = lambda text: text[text.index("| cells | lr | spectral |") :]  # noqa: E731
    assert tests_of(from_counts) == tests_of(from_folders)
    assert "| standard HVAE, spectral off | 0.1 | 5 / 6 |" in from_counts
    assert "skipped steps" not in from_counts  # per-run columns are not made up from counts
    out = tmp_path / "plot.png"
    assert stability_plot.main([str(counts), str(out)]) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text('setting,lr,diverged,runs\n"standard HVAE, spectral off",0.1,7,6\n')
    with pytest.raises(SystemExit, match=r"bad.csv, line 2: .*7 of 6"):
        stability_plot.collect_counts(bad)


def write_results(root: Path, rows: list[dict]) -> Path:
    path = ExperimentPaths(root).results_json
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    return root


def test_exercise1_tables_give_ratios_and_the_paired_nll_difference(tmp_path):
    exercise1 = load_script("exercise1_table")

    def cost(run, params, cells, speed, memory, status="finished", shared_load=0.0):
        return {
            "train_shared_load": shared_load,
            "run": run,
            "seed": 0,
            "status": status,
            "params": params,
            "params_decoder_cells": cells,
            "params_postprocess_cells": 10,
            "train_images_per_s": speed,
            "peak_memory_mb": memory,
        }

    costs = write_results(
        tmp_path / "cost",
        [
            cost("separable_c16", 1000, 290, 50.0, 800.0),
            cost("conv_c16", 1200, 390, 100.0, 400.0),
            cost("separable_c32", 3000, 990, 20.0, 1000.0),
            cost("conv_c32", 1, 1, 1.0, 1.0, status="failed"),  # left out
        ],
    )
    text = exercise1.cost_table(exercise1.rows_of(costs))
    assert "| 16 | separable | 1,000 | 300 | 50.0 | 800.0 |" in text
    assert "| 16 | conv | 1,200 | 400 | 100.0 | 400.0 |" in text
    assert "| 16 | separable / conv | 0.83x | 0.75x | 0.50x | 2.00x |" in text
    assert "| 32 | separable | 3,000 |" in text and "| 32 | separable / conv |" not in text
    assert "‡" not in text  # nothing else trained beside these runs

    # a speed measured while other genzoo processes trained is marked, and so is its ratio
    shared = write_results(
        tmp_path / "shared",
        [
            cost("separable_c16", 1000, 290, 50.0, 800.0, shared_load=0.5),
            cost("conv_c16", 1200, 390, 100.0, 400.0),
        ],
    )
    text = exercise1.cost_table(exercise1.rows_of(shared))
    assert "| 16 | separable | 1,000 | 300 | 50.0 ‡ | 800.0 |" in text
    assert "| 16 | conv | 1,200 | 400 | 100.0 | 400.0 |" in text
    assert "| 16 | separable / conv | 0.83x | 0.75x | 0.50x ‡ | 2.00x |" in text
    assert text.endswith(exercise1.SHARED_NOTE)

    nll = [101.0, 103.0, 102.5]
    conv_nll = [102.0, 105.0, 103.0]  # differences 1, 2, 0.5
    ablations = write_results(
        tmp_path / "ablations",
        [
            {"run": "nvae", "seed": s, "status": "finished", "test_nats_iw": v, "test_nats_elbo": v + 5}
            for s, v in enumerate(nll)
        ]
        + [
            {
                "run": "standard_cells",
                "seed": s,
                "status": "finished",
                "test_nats_iw": v,
                "test_nats_elbo": v + 5,
            }
            for s, v in enumerate(conv_nll)
        ],
    )
    text = exercise1.nll_table(exercise1.rows_of(ablations))
    diffs = [1.0, 2.0, 0.5]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(diffs), scale=stats.sem(diffs))
    assert (
        f"| importance-weighted | 102.17 ± 1.04 | 103.33 ± 1.53 | +1.17 [{low:+.2f}, {high:+.2f}] | 3 |"
        in text
    )
    assert "| ELBO | 107.17 ± 1.04 |" in text

    with pytest.raises(SystemExit, match="cannot read the experiment's results"):
        exercise1.rows_of(tmp_path / "nowhere")
