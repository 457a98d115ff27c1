"""What each run of an experiment folder is doing: ``genzoo status DIR``.

A run's state is read from its folder and, for a run submitted through a launcher, from the
scheduler, in this order:

- ``running``: a process holds the run's lock (:mod:`.locks`); its step is the last one in
  the metrics log, and the owner (host, pid, job id) is named;
- ``finished`` / ``diverged``: its ``results.json`` says so, for the configuration in
  ``experiment.json``;
- ``queued``: its last job (``job.json``) is pending or running in the scheduler but has not
  taken the run yet (or was requeued after a preemption);
- ``failed`` / ``interrupted``: its ``results.json`` says so; a run with training steps logged
  but no result (a SIGKILL, a node failure, a cancelled job) is ``interrupted`` too, and a job
  that ended before its run started is ``failed``;
- ``pending``: nothing yet.

Each step comes with when it was recorded (its metrics record's time, or when ``results.json``
was written), so that a step read from a stalled log is told from a fresh one.

The submission record ``job.json`` is the launcher's (:mod:`.launcher`); this module reads it
and asks the scheduler (``squeue`` for Slurm; the process table for the local launcher, on the
host that submitted).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from genzoo.errors import GenzooError
from genzoo.experiment.run.locks import owner_of
from genzoo.io.atomic import atomic_write_text
from genzoo.io.run_layout import ExperimentPaths, RunPaths

STATES = ("pending", "queued", "running", "finished", "diverged", "failed", "interrupted")
ACTIVE = ("queued", "running")  # a launcher's ``--wait`` waits while a run is in one of these
# squeue's states of a job that has not ended (``man squeue``, JOB STATE CODES)
_SLURM_ALIVE = {
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
    "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD",
}  # fmt: skip


@dataclass(frozen=True)
class JobRecord:
    """A run's last submission (``job.json``), written by the launcher that submitted it."""

    launcher: str  # "local" or "slurm"
    job_id: str
    host: str  # where it was submitted from (the local launcher's jobs run there)
    submitted: float  # time.time() at submission
    log: str = ""  # the job's stdout log (stderr beside it, ``.err``)

    def write(self, paths: RunPaths) -> None:
        atomic_write_text(paths.job, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, paths: RunPaths) -> JobRecord | None:
        try:
            doc = json.loads(paths.job.read_text())
            return cls(
                **{k: doc[k] for k in ("launcher", "job_id", "host", "submitted")}, log=doc.get("log", "")
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class RunStatus:
    """One line of ``genzoo status``."""

    run: str  # run id, ``nvae/seed0``
    state: str  # one of STATES
    step: int | None = None
    steps: int | None = None
    job_id: str | None = None
    detail: str = ""
    # time.time() of what ``step`` was read from: the metrics record, or results.json's writing
    read_at: float | None = None

    def progress(self) -> str:
        if self.step is None:
            return "-"
        return f"{self.step}/{self.steps}" if self.steps else str(self.step)

    def age(self, now: float | None = None) -> str:
        """How long ago ``step`` was recorded (``"14 s ago"``), or ``"-"``."""
        if self.read_at is None:
            return "-"
        seconds = max(0.0, (time.time() if now is None else now) - self.read_at)
        for unit, size, up_to in (("s", 1, 90), ("min", 60, 90 * 60), ("h", 3600, 48 * 3600)):
            if seconds < up_to:
                return f"{seconds / size:.0f} {unit} ago"
        return f"{seconds / 86400:.0f} d ago"


def job_states(records: Iterable[JobRecord]) -> dict[str, str | None]:
    """The scheduler's state of each record's job, by job id: ``PENDING``, ``RUNNING`` ...
    while it has not ended, ``""`` once it has, None where it cannot be asked from here (no
    ``squeue`` on this machine; a local job of another host)."""
    states: dict[str, str | None] = {}
    slurm = [r.job_id for r in records if r.launcher == "slurm"]
    if slurm:
        states.update(_squeue(slurm))
    for record in records:
        if record.launcher == "local":
            states[record.job_id] = _local_job_state(record)
    return states


def _squeue(job_ids: list[str]) -> dict[str, str | None]:
    if shutil.which("squeue") is None:
        return dict.fromkeys(job_ids)
    command = ["squeue", "--noheader", "--array", "--format=%i|%T", f"--jobs={','.join(job_ids)}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return dict.fromkeys(job_ids)
    if done.returncode != 0:
        # squeue refuses a list holding an id that has left its memory; ask one by one then
        if len(job_ids) > 1 and "Invalid job id" in done.stderr:
            states: dict[str, str | None] = {}
            for job_id in job_ids:
                states.update(_squeue([job_id]))
            return states
        return dict.fromkeys(job_ids, "" if "Invalid job id" in done.stderr else None)
    listed = dict(line.split("|", 1) for line in done.stdout.split() if "|" in line)
    return {j: listed[j] if listed.get(j) in _SLURM_ALIVE else "" for j in job_ids}


def _local_job_state(record: JobRecord) -> str | None:
    """A local job's id is the pid of submitit's controller process on the submitting host."""
    if record.host != socket.gethostname():
        return None
    try:
        pid = int(record.job_id)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return ""
    except PermissionError:
        pass  # exists, another user's
    proc = Path(f"/proc/{record.job_id}")
    if proc.exists():  # Linux: an ended process not yet reaped, or a reused pid, is not our job
        try:
            if proc.joinpath("stat").read_text().rpartition(")")[2].split()[0] == "Z":
                return ""
            if b"submitit" not in proc.joinpath("cmdline").read_bytes():
                return ""
        except (OSError, IndexError):
            return ""
    return "RUNNING"


def last_step(paths: RunPaths) -> tuple[int | None, float | None]:
    """The last training step in the run's metrics log (read from its end) and the time it was
    logged; ``(None, None)`` where there is none."""
    try:
        with open(paths.metrics, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            tail = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None, None
    for line in reversed(tail):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("kind") == "train" and "step" in record:
            logged = record.get("time")
            return int(record["step"]), float(logged) if isinstance(logged, (int, float)) else None
    return None, None


def _total_steps(paths: RunPaths) -> int | None:
    try:
        doc = yaml.safe_load(paths.config.read_text())
        return int(doc["training"]["steps"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def _results(paths: RunPaths) -> dict[str, Any] | None:
    try:
        doc = json.loads(paths.results.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _written_at(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def run_status(
    run_id: str, paths: RunPaths, fingerprint: str | None, job_state: str | None = None
) -> RunStatus:
    """The state of one run (see the module doc); ``job_state`` is :func:`job_states`'s
    answer for its ``job.json`` (ask for all runs at once: one ``squeue`` call)."""
    record = JobRecord.read(paths)
    job_id = record.job_id if record else None
    steps = _total_steps(paths)
    owner = owner_of(paths.lock) if paths.lock.exists() else None
    step, logged = last_step(paths)
    if owner is not None:
        return RunStatus(
            run_id, "running", step, steps, owner.job_id or job_id, owner.describe(), read_at=logged
        )
    results = _results(paths)
    same = results is not None and (fingerprint is None or results.get("fingerprint") == fingerprint)
    if same and results.get("status") in ("finished", "diverged"):
        written = _written_at(paths.results)
        return RunStatus(run_id, results["status"], results.get("step"), steps, job_id, read_at=written)
    if record is not None:
        if job_state:
            detail = f"job {job_state.lower()}"
            return RunStatus(run_id, "queued", step, steps, job_id, detail, read_at=logged)
        newer = results is None or record.submitted > paths.results.stat().st_mtime
        if job_state is None and newer:
            where = "no squeue here" if record.launcher == "slurm" else f"a local job of {record.host}"
            detail = f"state unknown ({where})"
            return RunStatus(run_id, "queued", step, steps, job_id, detail, read_at=logged)
    if same and results.get("status") in ("failed", "interrupted"):
        detail = str(results.get("reason", "")) if results["status"] == "failed" else "rerun to resume"
        written = _written_at(paths.results)
        return RunStatus(run_id, results["status"], results.get("step"), steps, job_id, detail, written)
    log = f"; log: {record.log}" if record is not None and record.log else ""
    if step is not None or paths.checkpoint.exists():
        detail = "no process owns it; rerun to resume" + log
        return RunStatus(run_id, "interrupted", step, steps, job_id, detail, read_at=logged)
    if record is not None:
        return RunStatus(run_id, "failed", None, steps, job_id, "its job ended before the run started" + log)
    return RunStatus(run_id, "pending", None, steps)


def experiment_status(root: str | os.PathLike) -> list[RunStatus]:
    """Every run of the experiment folder ``root``, in the order of ``experiment.json``."""
    paths = ExperimentPaths(Path(root))
    try:
        manifest = json.loads(paths.manifest.read_text())
        fingerprints: dict[str, str] = dict(manifest["runs"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GenzooError(
            f"{paths.root}: not an experiment output folder (no readable experiment.json)"
        ) from exc
    run_paths = {}
    for run_id in fingerprints:
        name, _, seed = run_id.rpartition("/seed")
        run_paths[run_id] = paths.run(name, int(seed))
    records = [r for r in (JobRecord.read(p) for p in run_paths.values()) if r is not None]
    states = job_states(records)
    out = []
    for run_id, fingerprint in fingerprints.items():
        record = JobRecord.read(run_paths[run_id])
        state = states.get(record.job_id) if record else None
        out.append(run_status(run_id, run_paths[run_id], fingerprint, state))
    return out
