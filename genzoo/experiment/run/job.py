"""One run as a submitit job: what runs inside each job that ``genzoo run --launcher`` submits.

A :class:`RunJob` carries the experiment as it was submitted (the file's text, the profile and
the ``--set`` overrides), resolves it again inside the job and checks that the run's
fingerprint is the one that was submitted. Then it

1. with the local launcher, waits for its concurrency slot (``launcher.max_parallel`` slots,
   each with its own GPUs, or ``launcher.runs_per_gpu`` of them sharing each GPU group): a lock
   in ``jobs/slots/``, taken before torch is imported, so a waiting job costs little;
2. sets up data parallelism when the job has several processes (one per GPU): rank, world size,
   local rank and the rendezvous (first node, a port derived from the job id) from the job's
   environment, exported as the variables torchrun sets (``RANK``, ``WORLD_SIZE``,
   ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), which the engine reads
   (:mod:`genzoo.engine.distributed`);
3. takes the run's lock (rank 0, for all ranks: the runner's
   :func:`~genzoo.experiment.run.runner.claim_run`): a run that another process owns, or that is
   over already, is left alone, so a run submitted twice trains once;
4. trains the run with the runner's :func:`~genzoo.experiment.run.runner.train_run` (resuming from
   its checkpoint): the run's request to the engine (:class:`genzoo.engine.request.RunRequest`)
   carries the process group the job joined before step 3 and the fingerprint checked when the
   job resolved its run, so neither is joined or computed again; then it renders the report (unless the submitting command waits
   to render it).

Time limits and preemption follow submitit's checkpointing protocol. Before a job's time
limit, Slurm (and submitit's local controller) send the job its checkpoint signal (USR2);
the job turns it into the engine's stop request (SIGTERM: the current step finishes and the
checkpoint is written), then hands over to submitit's handler, which calls
:meth:`RunJob.checkpoint` and requeues the job; the requeued job resumes the run exactly where
it stopped. A SIGTERM alone (a preemption, ``scontrol requeue``, ``scancel``) stops the run the
same way; Slurm requeues a preempted job itself.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import submitit

from genzoo.experiment.run.locks import FileLock, current_job_id, owner_of
from genzoo.io.run_layout import ExperimentPaths


class CheckpointSignal:
    """submitit's checkpoint signal (USR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise),
    caught for the duration of a job: it asks the trainer to stop (SIGTERM) and is remembered,
    so that :meth:`hand_over` can requeue the job once the checkpoint is written."""

    def __init__(self) -> None:
        self.signum = submitit.JobEnvironment._usr_sig()
        self.submitit_handler = signal.getsignal(self.signum)
        self.requested = False
        signal.signal(self.signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        print(
            f"genzoo: {signal.Signals(signum).name}: stopping at the end of this step to requeue", flush=True
        )
        self.requested = True
        signal.raise_signal(signal.SIGTERM)

    def hand_over(self) -> None:
        """submitit's handler: :meth:`RunJob.checkpoint`, requeue, exit (rank 0; other ranks
        return)."""
        if callable(self.submitit_handler):
            self.submitit_handler(self.signum, None)


@dataclass
class RunJob(submitit.helpers.Checkpointable):
    """The job of one run. Everything it needs travels in it: its pickle is all a requeued
    job has."""

    experiment_text: str
    experiment_file: str
    profile: str | None
    overrides: list[str]
    experiment_name: str
    run_name: str
    seed: int
    fingerprint: str
    out_root: str
    cwd: str
    device: str | None = None
    cpus_per_task: int | None = None  # each process's threads (OMP_NUM_THREADS); None: torch's default
    slot: int | None = None  # the local launcher's concurrency slot
    slot_gpus: list[int] | None = None  # the GPUs of that slot (None: leave the job's own)
    render_report: bool = True  # False when the submitting command waits and renders it once

    @property
    def run_id(self) -> str:
        return f"{self.run_name}/seed{self.seed}"

    def __call__(self) -> str:
        os.chdir(self.cwd)
        env = submitit.JobEnvironment()
        if self.cpus_per_task:  # before torch is imported, which reads it (so does cpu_threads: auto)
            os.environ["OMP_NUM_THREADS"] = str(self.cpus_per_task)
        checkpoint_signal = CheckpointSignal()
        slot = None
        if self.slot is not None:
            slot = self._wait_for_slot(env, checkpoint_signal)
            if checkpoint_signal.requested:  # the time limit came while it waited
                checkpoint_signal.hand_over()
                return "requeued"
        try:
            status = self._run(env, checkpoint_signal)
        finally:
            if slot is not None:
                slot.release()
        if status == "interrupted" and checkpoint_signal.requested:
            checkpoint_signal.hand_over()
        return status

    def _wait_for_slot(self, env: Any, checkpoint_signal: CheckpointSignal) -> FileLock | None:
        """Wait for this job's slot (rank 0 takes it; the other processes of the job wait until
        it names this job), then give the job the slot's GPUs."""
        path = ExperimentPaths(Path(self.out_root) / self.experiment_name).slot(self.slot)
        lock = FileLock(path) if env.global_rank == 0 else None
        told = False
        while not checkpoint_signal.requested:
            if lock is not None and lock.acquire():
                break
            owner = owner_of(path)
            if lock is None and owner is not None and owner.job_id == current_job_id():
                break
            if not told:
                print(
                    f"genzoo: {self.run_id}: waiting for slot {self.slot} (launcher.max_parallel)", flush=True
                )
                told = True
            time.sleep(0.5)
        if self.slot_gpus is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.slot_gpus))
        return lock

    def _run(self, env: Any, checkpoint_signal: CheckpointSignal) -> str:
        # torch and the engine are imported only now, once the job may go on
        import torch.distributed as dist

        from genzoo.engine.devices import device_type
        from genzoo.engine.distributed import broadcast_object, init_distributed
        from genzoo.experiment.report import render_report
        from genzoo.experiment.run.outputs import ExperimentDir
        from genzoo.experiment.run.runner import claim_run, load_plugins, train_run
        from genzoo.machine.cpu_share import cpu_training
        from genzoo.plugin.discovery import get_host

        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(
                set_cuda_visible_devices=False, overwrite=True
            )
        run, experiment = self._resolve()
        ctx = init_distributed(device_type(self.device or run.training.device))  # the run's only join
        exp_dir = ExperimentDir(self.out_root, experiment)
        paths = exp_dir.run_paths(run)
        lock = FileLock(paths.lock)
        try:
            decision = claim_run(exp_dir, run, lock, ctx, wait=False, echo=print)
            if decision == "owned":
                owner = owner_of(paths.lock)
                print(f"genzoo: {self.run_id} is trained by {owner.describe() if owner else 'another process'}; "
                      "this job leaves it alone", flush=True)  # fmt: skip
                return "skipped"
            if decision != "train":
                print(f"genzoo: {self.run_id} is {decision} already; this job leaves it alone", flush=True)
                return "skipped"
            if broadcast_object(checkpoint_signal.requested):  # it came before the trainer listens
                return "interrupted"
            host = get_host()
            load_plugins(experiment, host, [run])
            if ctx.is_main:
                exp_dir.remove_stale_temporaries(paths.dir)
            print(f"genzoo: {self.run_id}: training ({run.training.steps} steps)", flush=True)
            on_cpu = device_type(self.device or run.training.device) == "cpu"
            with cpu_training(on_cpu):
                status = train_run(
                    run, paths, host, {}, ctx, lambda line: print(line, flush=True),
                    device=self.device, progress_bar=None if sys.stderr.isatty() else False,
                )  # fmt: skip
            if self.render_report and ctx.is_main and status != "interrupted":  # (a grace period to keep)
                render_report(exp_dir.root, title=experiment.name, host=host)
            return status
        finally:
            lock.release()
            if ctx.is_distributed and dist.is_initialized():
                dist.destroy_process_group()

    def _resolve(self):
        """The experiment and this job's run, resolved from the text that was submitted."""
        from genzoo.errors import GenzooError
        from genzoo.experiment.config.spec import resolve_experiment
        from genzoo.experiment.config.yamlio import parse_yaml

        raw, source = parse_yaml(self.experiment_text, self.experiment_file)
        experiment = resolve_experiment(raw, source, profile=self.profile, overrides=self.overrides)
        for run in experiment.runs:
            if run.run_id == self.run_id:
                if run.fingerprint() != self.fingerprint:
                    raise GenzooError(
                        f"{self.run_id}: the experiment resolves to another configuration inside the job "
                        f"(fingerprint {run.fingerprint()}, submitted {self.fingerprint}): genzoo or a plugin "
                        "changed between submission and start. Resubmit with `genzoo run --launcher`."
                    )
                return run, experiment
        raise GenzooError(f"{self.run_id}: no such run in the experiment submitted as {self.experiment_file}")
