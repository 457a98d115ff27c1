"""Submitting an experiment's runs as jobs: ``genzoo run FILE --launcher local|slurm``.

genzoo writes no scheduler: it hands each pending run to **submitit** (the launcher behind
hydra-submitit-launcher) as one job, a :class:`~genzoo.experiment.run.job.RunJob`, with the
resources of the experiment's ``launcher:`` section
(:class:`~genzoo.experiment.launch.options.LauncherConfig`):

- ``slurm``: one ``sbatch`` job array for the matrix (one task per run; ``max_parallel`` is the
  array's throttle), through submitit's ``SlurmExecutor``;
- ``local``: one process tree per run on this machine, through submitit's ``LocalExecutor``;
  at most ``max_parallel`` of them train at once, each with its own ``gpus_per_node`` GPUs, or
  ``runs_per_gpu`` of them on each group of ``gpus_per_node`` GPUs (the jobs wait for a slot:
  :mod:`.job`).

Runs that are over are skipped, as by ``genzoo run``; so are runs that a process trains now, or
whose last job is still queued or running (a second submission of the same matrix submits only
what is left). Each submission is recorded in the run's ``job.json`` (the launcher is its only
writer), which ``genzoo status`` reads. Everything that can be checked here is checked before
anything is written: the launcher's name, its options, ``sbatch`` on the PATH, the GPUs the
local launcher would hand out; a submission that the scheduler refuses writes no record, and
nothing a finished run wrote is ever touched.

The job itself is :mod:`genzoo.experiment.run.job`, the options :mod:`.options`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genzoo.errors import ConfigError, GenzooError
from genzoo.experiment.config.spec import Experiment, RunSpec, resolve_experiment
from genzoo.experiment.config.yamlio import parse_yaml
from genzoo.experiment.launch.options import DEFAULT_SLURM_TIMEOUT_MIN, LauncherConfig, check_launcher_name
from genzoo.experiment.report import render_report
from genzoo.experiment.run.outputs import ExperimentDir
from genzoo.experiment.run.runner import MatrixOutcome, Printer, check_compositions, load_plugins
from genzoo.experiment.run.status import ACTIVE, JobRecord, RunStatus, experiment_status
from genzoo.plugin.discovery import PluginHost, get_host

LOCAL_NO_TIME_LIMIT_MIN = 60 * 24 * 365  # the local launcher's limit when timeout_min is not set
POLL_S = {"local": 1.0, "slurm": 5.0}  # how often --wait looks at the runs


def submit_matrix(
    experiment: Experiment,
    out_root: str | Path,
    *,
    launcher: str,
    only: list[str] | None = None,
    device: str | None = None,
    resume: bool = False,
    fresh: bool = False,
    wait: bool = False,
    host: PluginHost | None = None,
    echo: Printer = print,
    poll_s: float | None = None,
) -> MatrixOutcome:
    """Submit one job per pending run of the selected runs; with ``wait``, wait until no run
    is queued or running, then render the report. See the module doc."""
    check_launcher_name(launcher)
    backend = LocalBackend(experiment) if launcher == "local" else SlurmBackend(experiment)
    host = host or get_host()
    runs = experiment.select(only)
    load_plugins(experiment, host, runs)
    data_problems: list[str] = []  # data that only the compute nodes see is fine
    check_compositions(runs, host, {}, data_problems=data_problems)
    for problem in data_problems:
        echo(
            f"note: the data is not available here, so models on it were not checked; the jobs load it: {problem}"
        )
    text = _submitted_text(experiment, runs)
    exp_dir = ExperimentDir(out_root, experiment)
    exp_dir.prepare(runs, resume=resume, fresh=fresh)
    outcome = MatrixOutcome(exp_dir.root)

    states = {s.run: s for s in experiment_status(exp_dir.root)}
    pending: list[tuple[int, RunSpec]] = []
    for index, run in enumerate(runs, 1):
        state = states[run.run_id]
        where = f"[{index}/{len(runs)}] {run.run_id}"
        if state.state in ("finished", "diverged"):
            echo(f"{where}: already {state.state}, skipped")
            outcome.skipped.append(run.run_id)
        elif state.state == "running":
            echo(f"{where}: being trained by {state.detail}; skipped")
            outcome.skipped.append(run.run_id)
        elif state.state == "queued":
            echo(f"{where}: already queued as job {state.job_id} ({state.detail}); skipped")
            outcome.skipped.append(run.run_id)
        else:
            pending.append((index, run))

    common = {"text": text, "out_root": str(Path(out_root).resolve()), "device": device}
    # with --wait, this command renders the report once, at the end, rather than every job
    jobs = [backend.job(run, i, render_report=not wait, **common) for i, (_, run) in enumerate(pending)]
    submitted = backend.submit(jobs, exp_dir) if jobs else []
    for (index, run), (job_id, log) in zip(pending, submitted):
        JobRecord(launcher, job_id, socket.gethostname(), time.time(), log).write(exp_dir.run_paths(run))
        echo(f"[{index}/{len(runs)}] {run.run_id}: submitted as job {job_id}")
        outcome.submitted.append(run.run_id)
    if not wait:
        return outcome
    final = wait_for_runs(
        exp_dir.root, [r.run_id for r in runs], poll_s or POLL_S[launcher], echo, poll=backend.poll
    )
    for run_id, state in final.items():
        if state.state in ("finished", "diverged", "failed", "interrupted") and run_id not in outcome.skipped:
            getattr(outcome, state.state).append(run_id)
    render_report(exp_dir.root, title=experiment.name, host=host)
    return outcome


def wait_for_runs(
    root: Path, run_ids: list[str], poll_s: float, echo: Printer, *, poll: Callable[[], None] | None = None
) -> dict[str, RunStatus]:
    """Wait until none of ``run_ids`` is queued or running; print each change of the counts.
    ``poll`` is called first on each round (the local launcher reaps its ended processes)."""
    said = ""
    while True:
        if poll is not None:
            poll()
        states = {s.run: s for s in experiment_status(root) if s.run in run_ids}
        counts = Counter(s.state for s in states.values())
        line = ", ".join(f"{counts[state]} {state}" for state in sorted(counts))
        if line != said:
            echo(f"waiting for the jobs: {line}")
            said = line
        if not any(s.state in ACTIVE for s in states.values()):
            return states
        time.sleep(poll_s)


def _submitted_text(experiment: Experiment, runs: list[RunSpec]) -> str:
    """The experiment file's text as the jobs will resolve it, checked to give these runs."""
    try:
        text = Path(experiment.file).read_text(encoding="utf-8")
    except OSError as exc:
        raise GenzooError(
            f"{experiment.file}: cannot read it again to submit it: {exc.strerror or exc}"
        ) from exc
    raw, source = parse_yaml(text, experiment.file)
    again = resolve_experiment(raw, source, profile=experiment.profile, overrides=experiment.overrides)
    fingerprints = {r.run_id: r.fingerprint() for r in again.runs}
    if any(fingerprints.get(r.run_id) != r.fingerprint() for r in runs):
        raise GenzooError(f"{experiment.file} changed while genzoo read it; run the command again")
    return text


class Backend:
    """What differs between launchers: the checks, the executor and how a run's job is made."""

    name = ""

    def __init__(self, experiment: Experiment) -> None:
        if importlib.util.find_spec("submitit") is None:
            raise GenzooError(
                f"--launcher {self.name}: genzoo submits jobs through submitit, which is not installed "
                "here: pip install 'genzoo[cluster]'"
            )
        self.experiment = experiment
        self.options: LauncherConfig = experiment.launcher

    def job(self, run: RunSpec, position: int, **fields: Any) -> Any:
        """The job of ``run``, the ``position``-th submitted (``fields``: text, out_root, device,
        render_report)."""
        from genzoo.experiment.run.job import RunJob

        return RunJob(
            experiment_text=fields["text"],
            experiment_file=self.experiment.file,
            profile=self.experiment.profile,
            overrides=list(self.experiment.overrides),
            experiment_name=self.experiment.name,
            run_name=run.name,
            seed=run.seed,
            fingerprint=run.fingerprint(),
            out_root=fields["out_root"],
            cwd=os.getcwd(),
            device=fields["device"],
            cpus_per_task=self.options.threads_per_process,
            render_report=fields["render_report"],
        )

    def executor(self, folder: Path) -> Any:
        raise NotImplementedError

    def submit(self, jobs: list[Any], exp_dir: ExperimentDir) -> list[tuple[str, str]]:
        """Submit ``jobs`` (one batch: a Slurm job array); ``(job id, stdout log)`` of each."""
        executor = self.executor(exp_dir.paths.jobs)
        refused = io.StringIO()
        try:
            with contextlib.redirect_stderr(refused), executor.batch():
                handles = [executor.submit(job) for job in jobs]
        except Exception as exc:  # submitit raises FailedJobError with the scheduler's message
            message = " ".join(str(exc).split()) or " ".join(refused.getvalue().split())
            raise GenzooError(
                f"the {self.name} scheduler refused the submission of {len(jobs)} run(s): {message} "
                f"(launcher: {self.options.summary()}; {self.experiment.launcher_origin}). No job was "
                "submitted and no run was touched."
            ) from exc
        self.handles = handles
        return [(str(h.job_id), str(h.paths.stdout)) for h in handles]

    def poll(self) -> None:
        """Called on each round of ``--wait`` (the scheduler is asked through ``genzoo status``)."""

    def _where(self, key: str) -> str:
        return f"{self.experiment.launcher_origin}: launcher.{key}"


class SlurmBackend(Backend):
    """Slurm through submitit's ``SlurmExecutor``: the matrix as one job array."""

    name = "slurm"

    def __init__(self, experiment: Experiment) -> None:
        super().__init__(experiment)
        if self.options.runs_per_gpu > 1:
            raise ConfigError(
                f"{self._where('runs_per_gpu')}: runs_per_gpu={self.options.runs_per_gpu} applies to the "
                "local launcher only (Slurm schedules GPUs itself); leave it out with --launcher slurm"
            )
        for program in ("sbatch", "srun"):
            if shutil.which(program) is None:
                raise GenzooError(
                    f"--launcher slurm: {program} was not found on the PATH; run genzoo on a machine "
                    "that submits to Slurm (a login node), or use --launcher local"
                )

    def executor(self, folder: Path) -> Any:
        import submitit

        o = self.options
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=o.max_num_timeout)
        params: dict[str, Any] = {
            "job_name": f"genzoo-{self.experiment.name}",
            "time": o.timeout_min or DEFAULT_SLURM_TIMEOUT_MIN,
            "nodes": o.nodes,
            "ntasks_per_node": o.processes_per_node,
            "signal_delay_s": o.signal_delay_s,
        }
        optional = {
            "partition": o.partition,
            "account": o.account,
            "gpus_per_node": o.gpus_per_node or None,
            "cpus_per_task": o.cpus_per_task,
            "mem": _sbatch_memory(o.mem_gb) if o.mem_gb else None,
            "array_parallelism": o.max_parallel,
            "setup": list(o.setup) or None,
            "additional_parameters": dict(o.sbatch_options) or None,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        executor.update_parameters(**params)
        return executor


class LocalBackend(Backend):
    """This machine through submitit's ``LocalExecutor``: ``max_parallel`` slots, each with
    ``gpus_per_node`` GPUs of its own, or ``runs_per_gpu`` slots on each group of them (every
    job is started at once and waits for its slot)."""

    name = "local"

    def __init__(self, experiment: Experiment) -> None:
        super().__init__(experiment)
        o = self.options
        if o.nodes != 1:
            raise ConfigError(
                f"{self._where('nodes')}: nodes={o.nodes}, but the local launcher runs every job on this "
                "machine; use --launcher slurm for several nodes"
            )
        self.slot_gpus: list[list[int]] | None = None
        if o.gpus_per_node:
            gpus = _visible_gpus()
            g, share = o.gpus_per_node, o.runs_per_gpu
            room = len(gpus) // g * share  # runs at once: runs_per_gpu on each group of g GPUs
            slots = o.max_parallel or room
            if slots < 1 or slots > room:
                raise self._too_few_gpus(max(slots, 1), len(gpus), room)
            self.slot_gpus = [gpus[i // share * g : (i // share + 1) * g] for i in range(slots)]
        self.slots = len(self.slot_gpus) if self.slot_gpus else (o.max_parallel or 1)

    def _too_few_gpus(self, slots: int, have: int, room: int) -> ConfigError:
        """The error for ``slots`` runs at once on ``have`` GPUs, which hold ``room`` of them."""
        o = self.options
        need = -(-slots // o.runs_per_gpu) * o.gpus_per_node  # whole groups of gpus_per_node
        shared = f" and runs_per_gpu={o.runs_per_gpu}" if o.runs_per_gpu > 1 else ""
        key, hint = "gpus_per_node", "Lower launcher.gpus_per_node or launcher.max_parallel"
        if o.runs_per_gpu > 1 and room:
            hint = f"At most {room} fit: lower launcher.max_parallel or raise launcher.runs_per_gpu"
            key = "max_parallel"
        return ConfigError(
            f"{self._where(key)}: {slots} run(s) at once with gpus_per_node={o.gpus_per_node}{shared} need "
            f"{need} GPU(s); this machine has {have}. {hint}"
        )

    def job(self, run: RunSpec, position: int, **fields: Any) -> Any:
        job = super().job(run, position, **fields)
        job.slot = position % self.slots
        job.slot_gpus = self.slot_gpus[job.slot] if self.slot_gpus else None
        return job

    def submit(self, jobs: list[Any], exp_dir: ExperimentDir) -> list[tuple[str, str]]:
        with _detached_output():  # the jobs must not hold this command's output open
            return super().submit(jobs, exp_dir)

    def poll(self) -> None:
        for handle in getattr(self, "handles", []):  # reaps the processes of ended jobs
            handle.done()

    def executor(self, folder: Path) -> Any:
        import submitit

        o = self.options
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=o.max_num_timeout)
        executor.update_parameters(
            timeout_min=o.timeout_min or LOCAL_NO_TIME_LIMIT_MIN,
            tasks_per_node=o.processes_per_node,
            gpus_per_node=0,  # each job sets the GPUs of its slot
            signal_delay_s=o.signal_delay_s,
            setup=list(o.setup),
        )
        return executor


@contextlib.contextmanager
def _detached_output():
    """Standard output and error on ``/dev/null`` while local jobs are started: their processes
    inherit them (submitit's controller writes nothing there; each job writes its own logs),
    and a job holding this command's pipe open would keep ``genzoo run ... | tee`` waiting
    until the last job ends."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def _visible_gpus() -> list[int]:
    """This machine's GPUs as the jobs will number them (``CUDA_VISIBLE_DEVICES`` if set)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip():
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if all(v.isdigit() for v in ids):
            return [int(v) for v in ids]
    import torch

    return list(range(torch.cuda.device_count()))


def _sbatch_memory(mem_gb: float) -> str:
    return f"{int(mem_gb)}GB" if float(mem_gb).is_integer() else f"{int(mem_gb * 1024)}MB"
