"""One owner per run folder: a lock held by a real process names that process, is released when
it dies (even by SIGKILL), and the runner skips a run another process owns, goes on with the
rest of the matrix, then takes the run over when its owner is gone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from launcher_helpers import logged_steps, results, wait_for, write_matrix

from genzoo.errors import ConfigError
from genzoo.experiment.config.spec import load_experiment
from genzoo.experiment.run.locks import FileLock, owner_of
from genzoo.experiment.run.outputs import ExperimentDir
from genzoo.experiment.run.runner import run_matrix

pytestmark = pytest.mark.usefixtures("one_thread")

# A process that holds a lock until it is killed (it imports genzoo's locks only: no torch).
HOLDER = """
import sys, time
from genzoo.experiment.run.locks import FileLock
lock = FileLock(sys.argv[1])
assert lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def hold(path: Path, **env: str) -> subprocess.Popen:
    """A separate process holding the lock on ``path`` (returns once it holds it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        env={**os.environ, **env}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_a_lock_names_its_owner_and_a_killed_owner_leaves_it_free(tmp_path):
    path = tmp_path / "run.lock"
    holder = hold(path, SLURM_JOB_ID="4242")
    try:
        owner = owner_of(path)
        assert (owner.host, owner.pid, owner.job_id) == (socket.gethostname(), holder.pid, "4242")
        assert f"pid {holder.pid} on {socket.gethostname()} (job 4242)" in owner.describe()
        assert not FileLock(path).acquire()  # taken: another process owns it
    finally:
        kill(holder)  # SIGKILL: no clean-up code runs in the holder
    mine = FileLock(path)
    assert mine.acquire()  # the kernel released the dead process's lock: taken over safely
    assert owner_of(path).pid == os.getpid()  # and its stale record is overwritten
    mine.release()
    assert owner_of(path) is None and path.exists()  # the file stays: every process locks the same one


def test_two_locks_in_one_process_exclude_each_other_too(tmp_path):
    first, second = FileLock(tmp_path / "run.lock"), FileLock(tmp_path / "run.lock")
    assert first.acquire() and not second.acquire()
    first.release()
    assert second.acquire()
    second.release()


def test_the_runner_skips_an_owned_run_goes_on_then_takes_it_over_when_its_owner_dies(tmp_path):
    experiment = load_experiment(write_matrix(tmp_path))
    out = tmp_path / "out"
    exp_dir = ExperimentDir(out, experiment)
    wide, narrow = (exp_dir.run_paths(r) for r in experiment.runs)
    holder = hold(wide.lock)  # another process "trains" wide/seed0
    lines: list[str] = []
    # once the runner has trained the rest of the matrix and waits, the owner dies (SIGKILL)
    waiting = lambda: any(line.startswith("waiting for wide/seed0") for line in lines)  # noqa: E731
    killer = threading.Thread(target=lambda: (wait_for(waiting), kill(holder)))
    killer.start()
    try:
        outcome = run_matrix(experiment, out, echo=lines.append)
    finally:
        killer.join(timeout=120)
        if holder.poll() is None:
            kill(holder)
    text = "\n".join(lines)
    assert f"[1/2] wide/seed0: being trained by pid {holder.pid} on {socket.gethostname()}, since " in text
    assert text.index("[2/2] narrow/seed0: training") < text.index("waiting for wide/seed0")
    assert text.index("waiting for wide/seed0") < text.index("[1/2] wide/seed0: training")
    assert sorted(outcome.finished) == ["narrow/seed0", "wide/seed0"] and outcome.exit_code == 0
    assert logged_steps(wide.dir) == list(range(1, 9))
    assert set(results(exp_dir.root)) == {"wide/seed0", "narrow/seed0"} and narrow.results.exists()
    assert owner_of(wide.lock) is None and owner_of(narrow.lock) is None


def test_fresh_refuses_to_move_a_run_that_a_process_owns(tmp_path):
    experiment = load_experiment(write_matrix(tmp_path))
    exp_dir = ExperimentDir(tmp_path / "out", experiment)
    exp_dir.prepare(experiment.runs)
    wide = exp_dir.run_paths(experiment.runs[0])
    (wide.dir / "checkpoint.pt").write_bytes(b"work in progress")
    holder = hold(wide.lock)
    try:
        with pytest.raises(ConfigError, match=rf"--fresh: 1 run\(s\) .* wide/seed0 by pid {holder.pid}"):
            exp_dir.prepare(experiment.runs, fresh=True)
        assert (wide.dir / "checkpoint.pt").read_bytes() == b"work in progress"
    finally:
        kill(holder)
    exp_dir.prepare(experiment.runs, fresh=True)  # nobody owns it now: archived, not deleted
    assert [p.read_bytes() for p in exp_dir.paths.archive.rglob("checkpoint.pt")] == [b"work in progress"]
