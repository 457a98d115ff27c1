"""A small two-variant matrix, and what the launcher tests do with it: run it in this process for
reference, start `genzoo` as a user does, wait for a run to reach a step, compare results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from genzoo.experiment.config.spec import load_experiment
from genzoo.experiment.run.runner import run_matrix

MATRIX = """\
name: matrix
seeds: [0]
data:
  dataset: {{key: data.shapes, image_size: 16, channels: 1, num_bits: 1, num_train: 64, num_test: 16}}
training:
  steps: {steps}
  batch_size: 8
  lr: 0.005
  precision: fp32
  progress_bar: false
  checkpoint_every: {checkpoint_every}
  log_every: 1
evaluation:
  batch_size: 16
  iw_samples: 2
  temperatures: [1.0]
  num_samples: 4
  bn_readjust_iters: 1
  num_reconstructions: 0
  speed_batches: 0
variants:
  wide:
    hierarchy: {{key: baselines.standard_vae, num_channels: 8, latent_chs: 4, num_downsamples: 2}}
  narrow:
    hierarchy: {{key: baselines.standard_vae, num_channels: 4, latent_chs: 4, num_downsamples: 2}}
"""

# what must be equal between two ways of running the same run (not timings, not paths)
COMPARED = (
    "status",
    "step",
    "final_loss",
    "train_loss",
    "test_bpd_elbo",
    "test_bpd_iw",
    "test_nats_elbo",
    "params",
)


LONGER = {"steps": 1500, "checkpoint_every": 50}
"""About 8 s of training and evaluation on one core (2026-12-03): long enough to act on a run
after its first 100 steps."""


def write_matrix(folder: Path, *, steps: int = 8, checkpoint_every: int = 2, launcher: str = "") -> Path:
    """The matrix as ``folder/matrix.yaml``, with ``launcher`` (YAML lines) appended."""
    path = folder / "matrix.yaml"
    path.write_text(MATRIX.format(steps=steps, checkpoint_every=checkpoint_every) + launcher)
    return path


def reference_run(root: Path, only: list[str] | None = None, **matrix) -> Path:
    """The matrix trained in this process, on one thread as the jobs: its experiment folder
    (treat as read-only)."""
    threads, setting = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # what training.cpu_threads: auto reads, as in the jobs
    torch.set_num_threads(1)
    try:
        experiment = load_experiment(write_matrix(root, **matrix))
        outcome = run_matrix(experiment, root / "out", only=only, echo=lambda _: None)
    finally:
        torch.set_num_threads(threads)
        if setting is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = setting
    assert outcome.exit_code == 0
    return outcome.exp_dir


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a `genzoo` command in the tests: no GENZOO_* variables, one thread
    per process (the same kernels in every process, so results compare exactly)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENZOO_")}
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def start(*args: str, cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "genzoo.cli", *map(str, args)],
        cwd=cwd, env=cli_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def genzoo(*args: str, cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    proc = start(*args, cwd=cwd, **env)
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def results(exp_dir: Path) -> dict[str, dict]:
    """Each run's compared figures, from its own results.json."""
    out = {}
    for path in sorted(exp_dir.glob("runs/*/seed*/results.json")):
        row = json.loads(path.read_text())
        out[f"{row['run']}/seed{row['seed']}"] = {k: row.get(k) for k in COMPARED}
    return out


def logged_steps(run_dir: Path) -> list[int]:
    """The training steps in a run's metrics log, in order (each once if the run resumed exactly)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    records = [json.loads(line) for line in lines if line.strip().endswith("}")]
    return [r["step"] for r in records if r.get("kind") == "train"]


def wait_for(predicate, timeout: float = 180.0, interval: float = 0.05, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} was not reached in {timeout:.0f} s")


def status(exp_dir: Path) -> dict[str, dict]:
    """`genzoo status DIR --json`, by run, in this process."""
    import dataclasses

    from genzoo.experiment.run.status import experiment_status

    return {s.run: dataclasses.asdict(s) for s in experiment_status(exp_dir)}
