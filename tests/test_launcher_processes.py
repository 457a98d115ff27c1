"""The launcher with real processes over longer runs (marked slow; `python -m pytest -m slow`):
a job killed mid-run and resubmitted resumes and ends with the same metrics; a job that reaches
its time limit checkpoints, is requeued (submitit's protocol) and resumes exactly; two
concurrent `genzoo run` of one matrix train every run once, with the results of one process; a
run with two processes trains with DDP inside its job."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from launcher_helpers import (
    genzoo,
    logged_steps,
    reference_run,
    results,
    start,
    status,
    wait_for,
    write_matrix,
)

from genzoo.experiment.run.locks import owner_of

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

LONG = {"steps": 300, "checkpoint_every": 10}


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> Path:
    return reference_run(tmp_path_factory.mktemp("long"), **LONG)


@pytest.fixture(scope="module")
def short_reference(tmp_path_factory) -> Path:
    return reference_run(tmp_path_factory.mktemp("short"))


def test_a_killed_job_resubmitted_resumes_and_ends_with_the_same_metrics(long_reference, tmp_path):
    file = write_matrix(tmp_path, **LONG, launcher="launcher: {max_parallel: 1}\n")
    wide = tmp_path / "out" / "matrix" / "runs" / "wide" / "seed0"
    submitted = genzoo("run", file, "--out", "out", "--launcher", "local", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    assert "2 job(s) submitted" in submitted.stdout
    wait_for(lambda: len(logged_steps(wide)) >= 40, what="40 steps of wide/seed0")
    owner = owner_of(wide / "run.lock")
    os.kill(owner.pid, signal.SIGKILL)  # the job's process: nothing runs on its way out
    wait_for(
        lambda: status(tmp_path / "out" / "matrix")["wide/seed0"]["state"] == "interrupted",
        what="wide/seed0 interrupted",
    )
    assert status(tmp_path / "out" / "matrix")["wide/seed0"]["job_id"] == owner.job_id
    again = genzoo("run", file, "--out", "out", "--launcher", "local", "--wait", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (
        "[1/2] wide/seed0: submitted as job" in again.stdout
    )  # resubmitted; narrow is still in its first job
    assert results(tmp_path / "out" / "matrix") == results(long_reference)
    assert logged_steps(wide) == list(range(1, 301))  # resumed from its checkpoint, each step once


def test_a_job_at_its_time_limit_checkpoints_is_requeued_and_resumes(tmp_path):
    # The run must outlast the signal 10 s into its first start: 1500 steps (LONGER) no longer
    # did once steps got faster; 6000 train for about 25 s on one core.
    at_limit = {"steps": 6000, "checkpoint_every": 50}
    (tmp_path / "reference").mkdir()
    reference = reference_run(tmp_path / "reference", only=["wide"], **at_limit)
    # a one-minute limit, and the checkpoint signal (USR2) 50 s before it: 10 s into each start
    launcher = "launcher: {timeout_min: 1, signal_delay_s: 50, max_num_timeout: 8}\n"
    file = write_matrix(tmp_path, **at_limit, launcher=launcher)
    done = genzoo(
        "run", file, "--out", "out", "--only", "wide", "--launcher", "local", "--wait", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    exp_dir = tmp_path / "out" / "matrix"
    log = next(exp_dir.glob("jobs/*_0_log.out")).read_text()
    assert "SIGUSR2: stopping at the end of this step to requeue" in log and "Requeued job" in log
    assert results(exp_dir) == results(reference)
    assert logged_steps(exp_dir / "runs" / "wide" / "seed0") == list(range(1, at_limit["steps"] + 1))


def test_two_concurrent_genzoo_runs_train_every_run_once(short_reference, tmp_path):
    file = write_matrix(tmp_path)
    procs = [start("run", file, "--out", "out", cwd=tmp_path) for _ in range(2)]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outputs]
    text = "\n".join(out for out, _ in outputs)
    for run in ("wide/seed0", "narrow/seed0"):
        assert text.count(f"{run}: training (8 steps)") == 1, text
        assert logged_steps(tmp_path / "out" / "matrix" / "runs" / run) == list(range(1, 9))
    assert "being trained by pid" in text
    assert results(tmp_path / "out" / "matrix") == results(short_reference)
    rows = json.loads((tmp_path / "out" / "matrix" / "results.json").read_text())
    assert sorted(row["run"] for row in rows) == ["narrow", "wide"]  # the last report has both


def test_a_run_with_two_processes_trains_with_ddp_inside_its_job(tmp_path):
    file = write_matrix(tmp_path, launcher="launcher: {tasks_per_node: 2, cpus_per_task: 1}\n")
    done = genzoo(
        "run", file, "--out", "out", "--only", "wide", "--launcher", "local", "--wait", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    exp_dir = tmp_path / "out" / "matrix"
    row = json.loads((exp_dir / "runs" / "wide" / "seed0" / "results.json").read_text())
    assert row["status"] == "finished" and row["world_size"] == 2
    assert logged_steps(exp_dir / "runs" / "wide" / "seed0") == list(range(1, 9))  # rank 0 writes, once
    job_id = status(exp_dir)["wide/seed0"]["job_id"]
    for rank in (0, 1):  # one process per rank, each with its log
        assert (
            "genzoo: wide/seed0: training (8 steps)"
            in (exp_dir / "jobs" / f"{job_id}_{rank}_log.out").read_text()
        )
