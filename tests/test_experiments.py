"""The experiment files that ship: every one validates with every profile, and the README's main
command (the quickstart) produces a report with a real table and sample images."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from example_plugin import loaded_host

import genzoo
from genzoo.experiment.config.spec import load_experiment
from genzoo.experiment.config.yamlio import load_yaml
from genzoo.experiment.run.runner import check_compositions

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "experiments").glob("*.yaml"))


def profiles_of(path: Path) -> list[str | None]:
    raw, _ = load_yaml(path)
    return [None, *sorted(raw.get("profiles") or {})]


@pytest.mark.parametrize(
    "path, profile",
    [(p, prof) for p in FILES for prof in profiles_of(p)],
    ids=lambda v: v.name if isinstance(v, Path) else str(v),
)
def test_every_experiment_file_and_profile_validates(path, profile, request):
    experiment = load_experiment(path, profile=profile)
    assert experiment.runs, "an experiment with no runs"
    host = genzoo.get_host()
    if path.name == "plugin_ablation.yaml":  # uses the example third-party plugin's keys
        request.getfixturevalue("example")
        host = loaded_host()
    problems: list[str] = []
    counts = check_compositions(experiment.runs, host, {}, data_problems=problems)
    for problem in problems:  # CIFAR-10 / MNIST are not on every machine; their models are unchecked then
        assert "was not found" in problem
    assert all(c is None or c > 0 for c in counts)


def test_every_file_has_a_quick_profile():
    assert all("quick" in profiles_of(p) for p in FILES)


def cli(*args, cwd):
    return run_cli(*args, cwd=cwd)


def test_quickstart_smoke_writes_the_report(tmp_path):
    out = cli(
        "run",
        str(ROOT / "experiments" / "quickstart.yaml"),
        "--profile",
        "smoke",
        "--out",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    exp = tmp_path / "quickstart"
    report = (exp / "report.md").read_text()
    assert "## Comparison" in report and "## Ablations" in report and "## Samples" in report
    for name in ("standard_vae", "nvae", "nvae_standard_cells"):
        assert f"| {name} |" in report
    rows = json.loads((exp / "results.json").read_text())
    assert {r["run"] for r in rows} == {"standard_vae", "nvae", "nvae_standard_cells"}
    assert all(
        np.isfinite(r["test_bpd_elbo"]) and r["test_bpd_iw"] <= r["test_bpd_elbo"] + 0.05 for r in rows
    )
    assert (exp / "results.csv").read_text().startswith("run,") or "run" in (
        exp / "results.csv"
    ).read_text().splitlines()[0]
    assert (exp / "curves.png").stat().st_size > 1000
    for row in rows:
        assert (exp / "runs" / row["run"] / "seed0" / "samples_t1.png").exists()
    # rerunning skips every finished run
    again = cli(
        "run",
        str(ROOT / "experiments" / "quickstart.yaml"),
        "--profile",
        "smoke",
        "--out",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert again.returncode == 0 and again.stdout.count("already finished, skipped") == 3
    # and the CLI draws new samples from a trained run
    grid = cli("sample", str(exp / "runs" / "nvae" / "seed0"), "-t", "0.7", "-n", "4", cwd=tmp_path)
    assert grid.returncode == 0, grid.stderr
    assert Path(grid.stdout.strip()).exists()
    # what the README's "After training" does with a quickstart run (in-process: the commands'
    # own tests are tests/test_evaluate_cli.py, test_export.py and test_cli_latents.py)
    from genzoo.cli import main

    run_dir = exp / "runs" / "nvae" / "seed0"
    for command in (
        ["evaluate", str(run_dir), "--iw-samples", "3", "--max-images", "8", "--no-progress"],
        ["reconstruct", str(run_dir), "test:0", "test:1", "--keep-groups", "1"],
        ["interpolate", str(run_dir), "test:0", "test:1", "--steps", "3"],
        ["export", str(run_dir), str(tmp_path / "model")],
    ):
        assert main(command) == 0, command
    model = genzoo.load_model(tmp_path / "model")
    assert model.sample(2, temperature=0.7).shape == (2, *model.image_shape)


def write_idx(path: Path, images: np.ndarray) -> None:
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">IIII", 2051, *images.shape))
        fh.write(images.astype(np.uint8).tobytes())


@pytest.mark.slow  # 6 s; the idx reader and the MNIST dataset are tested in test_datasets.py
def test_mnist_quick_profile_runs_on_idx_files_anywhere(tmp_path):
    rng = np.random.default_rng(0)
    digits = (rng.random((64, 28, 28)) > 0.7) * 255
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", digits)
    out = cli(
        "run", str(ROOT / "experiments" / "mnist.yaml"), "--profile", "quick", "--out", str(tmp_path / "out"),
        "--set", f"data.dataset.root={tmp_path}", "--set", "data.dataset.train_file=t10k-images-idx3-ubyte",
        "--set", "data.dataset.train_range=[0, 48]", "--set", "data.dataset.test_range=[48, 64]",
        "--set", "training.steps=2", "--set", "training.batch_size=8", "--set", "training.lr_warmup_steps=1",
        "--set", "training.progress_bar=false", "--set", "evaluation.iw_samples=2", "--set", "evaluation.speed_batches=0",
        "--set", "evaluation.bn_readjust_iters=1", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "out" / "mnist" / "results.json").read_text())
    assert {r["run"] for r in rows} == {"standard_vae", "nvae"}
    assert all(r["status"] == "finished" and np.isfinite(r["test_nats_elbo"]) for r in rows)
