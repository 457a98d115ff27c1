"""`genzoo run --launcher slurm` against a real Slurm: a single-node cluster started on this
machine (tests/slurm_cluster.py: munged, slurmctld, slurmd). Marked ``slurm`` and left out of
the default run: `python -m pytest -m slurm` (Debian: `apt-get install slurm-wlm munge`; the
daemons run as the current user, root in CI containers). Skipped, with the reason, where the
cluster cannot start.

A smoke matrix is submitted as a job array and its report checked; a running job is requeued
with `scontrol requeue` (as a preemption does) and with submitit's checkpoint signal (as a time
limit does), and the run resumes where it stopped, with the results of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from launcher_helpers import (
    LONGER,
    genzoo,
    logged_steps,
    reference_run,
    results,
    status,
    wait_for,
    write_matrix,
)
from slurm_cluster import ClusterUnavailable, start_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def cluster():
    try:
        started = start_cluster()
    except ClusterUnavailable as exc:
        pytest.skip(f"no Slurm cluster could be started here: {exc}")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> Path:
    return reference_run(tmp_path_factory.mktemp("long"), only=["wide"], **LONGER)


def slurm(cluster, *args: str, cwd: Path):
    return genzoo(*args, cwd=cwd, SLURM_CONF=cluster.env["SLURM_CONF"])


def test_a_matrix_submitted_to_slurm_trains_as_a_job_array_and_reports(cluster, tmp_path):
    (tmp_path / "reference").mkdir()
    reference = reference_run(tmp_path / "reference")
    file = write_matrix(
        tmp_path, launcher="launcher: {partition: debug, cpus_per_task: 1, timeout_min: 10}\n"
    )
    done = slurm(cluster, "run", file, "--out", "out", "--launcher", "slurm", "--wait", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    exp_dir = tmp_path / "out" / "matrix"
    states = status(exp_dir)
    array = states["wide/seed0"]["job_id"].split("_")[0]
    assert {run: (s["state"], s["job_id"]) for run, s in states.items()} == {
        "wide/seed0": ("finished", f"{array}_0"),
        "narrow/seed0": ("finished", f"{array}_1"),
    }
    assert f"[1/2] wide/seed0: submitted as job {array}_0" in done.stdout
    assert results(exp_dir) == results(reference)
    assert sorted(row["run"] for row in json.loads((exp_dir / "results.json").read_text())) == [
        "narrow",
        "wide",
    ]
    assert "| wide |" in (exp_dir / "report.md").read_text()
    again = slurm(cluster, "run", file, "--out", "out", "--launcher", "slurm", cwd=tmp_path)
    assert again.returncode == 0 and "0 job(s) submitted" in again.stdout  # nothing left to do


def submit_long(cluster, tmp_path: Path) -> tuple[Path, str]:
    """The long run submitted (not waited for), once it has trained 100 steps: (run folder, job)."""
    file = write_matrix(tmp_path, **LONGER, launcher="launcher: {cpus_per_task: 1, timeout_min: 30}\n")
    done = slurm(cluster, "run", file, "--out", "out", "--only", "wide", "--launcher", "slurm", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = tmp_path / "out" / "matrix" / "runs" / "wide" / "seed0"
    job_id = json.loads((run_dir / "job.json").read_text())["job_id"]
    wait_for(lambda: len(logged_steps(run_dir)) >= 100, timeout=300, what="100 steps")
    return run_dir, job_id


def interrupted_row(run_dir: Path) -> dict | None:
    try:
        row = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    return row if row.get("status") == "interrupted" else None


def finish_after_requeue(cluster, tmp_path: Path, job_id: str) -> None:
    """Wait for the run to finish, releasing the requeued job from Slurm's two-minute hold."""
    exp_dir = tmp_path / "out" / "matrix"

    def finished() -> bool:
        cluster.release_requeued(job_id)
        return status(exp_dir)["wide/seed0"]["state"] == "finished"

    wait_for(finished, timeout=600, interval=1.0, what="the requeued run to finish")


def test_scontrol_requeue_stops_the_run_at_a_step_and_the_requeued_job_resumes_it(
    cluster, long_reference, tmp_path
):
    run_dir, job_id = submit_long(cluster, tmp_path)
    cluster.run("scontrol", "requeue", job_id)  # SIGTERM to the job, then back to the queue
    row = wait_for(lambda: interrupted_row(run_dir), timeout=120, what="the checkpoint of the stopped run")
    stopped_at = row["step"]
    assert 100 <= stopped_at < 1500
    finish_after_requeue(cluster, tmp_path, job_id)
    log = (tmp_path / "out" / "matrix" / "jobs" / f"{job_id}_0_log.out").read_text()
    assert log.count("genzoo: wide/seed0: training (1500 steps)") == 2  # started twice, same job
    assert results(tmp_path / "out" / "matrix") == results(long_reference)
    assert logged_steps(run_dir) == list(range(1, 1501))


def test_the_checkpoint_signal_requeues_the_job_through_submitit(cluster, long_reference, tmp_path):
    run_dir, job_id = submit_long(cluster, tmp_path)
    # what Slurm sends signal_delay_s before the time limit (--signal=USR2@...): the job
    # checkpoints, and submitit's handler requeues it (scontrol requeue from inside the job)
    cluster.run("scancel", "--signal=USR2", job_id)
    finish_after_requeue(cluster, tmp_path, job_id)
    log = (tmp_path / "out" / "matrix" / "jobs" / f"{job_id}_0_log.out").read_text()
    assert "SIGUSR2: stopping at the end of this step to requeue" in log and f"Requeued job {job_id}" in log
    assert log.count("genzoo: wide/seed0: training (1500 steps)") == 2
    assert results(tmp_path / "out" / "matrix") == results(long_reference)
    assert logged_steps(run_dir) == list(range(1, 1501))
