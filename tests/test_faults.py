"""Faults, with nothing lost: real `genzoo run` subprocesses are interrupted (SIGINT, SIGTERM) and
killed (SIGKILL) at several points, including in the middle of a checkpoint write; rerunning the
same command finishes the matrix with the same final metrics as an uninterrupted run, and no
result, checkpoint or report is ever half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXPERIMENT = """\
name: faults
seeds: [0]
data:
  dataset: {key: data.shapes, image_size: 16, channels: 1, num_bits: 1, num_train: 256, num_test: 32}
training:
  steps: 40
  batch_size: 16
  lr: 0.005
  precision: fp32
  progress_bar: false
  checkpoint_every: 1
  log_every: 1
evaluation:
  batch_size: 32
  iw_samples: 4
  temperatures: [1.0]
  num_samples: 4
  bn_readjust_iters: 2
  speed_batches: 0
variants:
  first:
    hierarchy: {key: baselines.standard_vae, num_channels: 16, latent_chs: 8, num_downsamples: 2}
  second:
    hierarchy: {key: baselines.standard_vae, num_channels: 8, latent_chs: 4, num_downsamples: 2}
"""

COMPARED = ("test_bpd_elbo", "test_bpd_iw", "test_nats_elbo", "final_loss", "step", "status")


def start(exp: Path, out: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENZOO_")}
    env["OMP_NUM_THREADS"] = "1"  # same kernels in every run, so results compare exactly
    return subprocess.Popen(
        [sys.executable, "-m", "genzoo.cli", "run", str(exp), "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(exp: Path, out: Path) -> subprocess.CompletedProcess:
    proc = start(exp, out)
    stdout, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("the condition was not reached in time")


def logged_steps(run_dir: Path) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    steps = [json.loads(line)["step"] for line in lines if line.strip().endswith("}")]
    return max(steps, default=0)


def final_results(out: Path) -> dict[str, dict]:
    rows = json.loads((out / "faults" / "results.json").read_text())
    return {row["run"]: {k: row.get(k) for k in COMPARED} for row in rows}


def assert_nothing_half_written(out: Path) -> None:
    exp_dir = out / "faults"
    for path in exp_dir.rglob("*.json"):
        json.loads(path.read_text())  # parses: written whole
    for path in exp_dir.rglob("checkpoint.pt"):
        import torch

        torch.load(path, weights_only=True)
    leftovers = [p for p in exp_dir.rglob("*.tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same matrix, uninterrupted."""
    root = tmp_path_factory.mktemp("reference")
    exp = root / "faults.yaml"
    exp.write_text(EXPERIMENT)
    out = finish(exp, root / "out")
    assert out.returncode == 0, out.stderr
    return final_results(root / "out")


# SIGTERM takes the same path as SIGINT (genzoo.engine.signals.StopSignals handles both): slow,
# to keep the default run under 5 minutes
@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_interrupt_writes_a_checkpoint_and_the_rerun_resumes(tmp_path, reference, sig):
    exp = tmp_path / "faults.yaml"
    exp.write_text(EXPERIMENT)
    out = tmp_path / "out"
    run_dir = out / "faults" / "runs" / "first" / "seed0"
    proc = start(exp, out)
    wait_for(lambda: logged_steps(run_dir) >= 20)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    # Ctrl-C stops train() with a KeyboardInterrupt, SIGTERM with a returned row: the matrix says the same
    assert "interrupted: first/seed0 saved a checkpoint; rerun the same command to continue" in stdout
    assert "Traceback" not in stderr and not (run_dir / "error.txt").exists()
    state = json.loads((run_dir / "results.json").read_text())
    assert state["status"] == "interrupted" and 20 <= state["step"] < 40
    assert not (out / "faults" / "runs" / "second").joinpath("seed0", "results.json").exists()
    rerun = finish(exp, out)
    assert rerun.returncode == 0, rerun.stderr
    assert final_results(out) == reference
    assert_nothing_half_written(out)


@pytest.mark.slow  # 15 s: four processes; the SIGINT test above checks the checkpoint and the resume
def test_sigkill_at_three_points_including_a_checkpoint_write(tmp_path, reference):
    exp = tmp_path / "faults.yaml"
    exp.write_text(EXPERIMENT)
    out = tmp_path / "out"
    first = out / "faults" / "runs" / "first" / "seed0"
    second = out / "faults" / "runs" / "second" / "seed0"

    def during_checkpoint_write() -> bool:
        return any(first.glob(".checkpoint.pt.*.tmp"))

    kill_points = [
        lambda: logged_steps(first) >= 10,  # mid-training
        during_checkpoint_write,  # while checkpoint.pt is being written
        lambda: logged_steps(second) >= 5,  # in the second run, after the first finished
    ]
    for point in kill_points:
        proc = start(exp, out)
        wait_for(point)
        proc.kill()
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
    rerun = finish(exp, out)
    assert rerun.returncode == 0, rerun.stderr
    assert "first/seed0: already finished, skipped" in rerun.stdout
    assert final_results(out) == reference
    assert_nothing_half_written(out)
