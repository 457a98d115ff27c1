"""Running an experiment's matrix of runs: build each model from registry keys, train it with the
engine, record its results, and keep the report current.

A matrix resumes after any stop: a run whose ``results.json`` says it is over (finished or
diverged) under the same configuration is skipped, and a run with a checkpoint continues from
it. A diverged run is recorded and the matrix goes on; an interrupted run (SIGINT/SIGTERM) writes
its checkpoint and stops the matrix, so that rerunning the command picks up where it stopped.

A run has one owner at a time (:mod:`.locks`): a run that another process trains (a second
``genzoo run``, a launcher's job) is skipped with its owner named, the matrix goes on with the
others, and at the end waits for the skipped runs; one that its owner left unfinished (killed)
is taken over and resumed here. ``genzoo run --launcher`` submits the runs as jobs instead
(:mod:`.launcher`); each job trains its run with :func:`train_run`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genzoo.engine.devices import device_type
from genzoo.engine.distributed import DistContext, broadcast_object, init_distributed
from genzoo.engine.request import RunRequest
from genzoo.engine.results import summary_line
from genzoo.errors import ConfigError, GenzooError
from genzoo.experiment.config.spec import Experiment, RunSpec
from genzoo.experiment.report import render_report
from genzoo.experiment.run.locks import FileLock, owner_of
from genzoo.experiment.run.outputs import ExperimentDir
from genzoo.interfaces import Hierarchy, ImageDataset, Regularizer
from genzoo.io.run_layout import RunPaths
from genzoo.plugin.component_spec import ComponentSpec
from genzoo.plugin.discovery import DISABLE_AUTOLOAD_ENV, PluginHost, get_host
from genzoo.plugin.registry import namespace_of

Printer = Callable[[str], None]


@dataclass
class MatrixOutcome:
    """What happened to each run of one invocation."""

    exp_dir: Path
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)  # runs handed to a launcher as jobs

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed else 0


def load_plugins(experiment: Experiment, host: PluginHost, runs: list[RunSpec] | None = None) -> None:
    """Load the plugin modules the experiment file lists (once per host), then check that a
    plugin provides each key namespace the file ``requires`` and ``runs`` (default: all) use,
    naming how to get the ones missing."""
    for module in experiment.plugins:
        host.load_module(module, source="experiment")
    used = set()
    for run in experiment.runs if runs is None else runs:
        used |= _namespaces_in(run.to_config())
    missing = {
        ns: hint
        for ns, hint in experiment.requires.items()
        if ns in used and not host.registry.has_namespace(ns)
    }
    if missing:
        wanted = "; ".join(
            f"'{ns}.*' keys: {hint}" if hint else f"'{ns}.*' keys" for ns, hint in missing.items()
        )
        autoload_off = os.environ.get(DISABLE_AUTOLOAD_ENV)
        raise ConfigError(
            f"{experiment.requires_origin}: requires plugins that are not loaded here: {wanted}. "
            f"(loaded: {', '.join(f'{n}.*' for n in host.registry.namespaces())}"
            + (
                f"; {DISABLE_AUTOLOAD_ENV} is set, so installed plugins were not loaded"
                if autoload_off
                else ""
            )
            + ")"
        )


def _namespaces_in(config: Any) -> set[str]:
    """The ``plugin`` parts of every ``plugin.component`` string in a run's resolved config."""
    if isinstance(config, dict):
        return set().union(*map(_namespaces_in, config.values())) if config else set()
    if isinstance(config, list):
        return set().union(*map(_namespaces_in, config)) if config else set()
    return {namespace_of(config)} if isinstance(config, str) and "." in config else set()


def build_dataset(spec: ComponentSpec, host: PluginHost, cache: dict[str, ImageDataset]) -> ImageDataset:
    key = json.dumps(spec.to_config(), sort_keys=True, default=str)
    if key not in cache:
        cache[key] = spec.build("dataset", host.registry)
    return cache[key]


def build_model(run: RunSpec, dataset: ImageDataset, host: PluginHost) -> Hierarchy:
    """The run's hierarchy for the dataset's image shape and bit depth, with a clear error when
    the composition cannot work (e.g. a Bernoulli likelihood on 8-bit images)."""
    extra: dict[str, Any] = {"image_shape": tuple(dataset.image_shape)}
    try:
        accepts = run.hierarchy.entry("hierarchy", host.registry).accepts
        if "num_bits" in accepts and "num_bits" not in run.hierarchy.options:
            extra["num_bits"] = dataset.num_bits
        model = run.hierarchy.build("hierarchy", host.registry, **extra)
    except GenzooError as exc:
        raise ConfigError(f"{run.origin}: run {run.name!r}: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(
            f"{run.origin}: run {run.name!r}: hierarchy {run.hierarchy.key!r} cannot be built: {exc}"
        ) from exc
    bits = model.likelihood.num_bits
    if bits != dataset.num_bits:
        raise ConfigError(
            f"{run.origin}: run {run.name!r}: the likelihood {type(model.likelihood).__name__} models {bits}-bit pixels, "
            f"but the dataset {run.data.dataset.key!r} has {dataset.num_bits}-bit pixels; choose a likelihood "
            "that fits the data (Bernoulli for binarized images, discretized logistics for 8-bit images)"
        )
    return model


def build_regularizers(run: RunSpec, host: PluginHost) -> list[Regularizer]:
    regs = []
    for name, spec in run.regularizers.items():
        try:
            regs.append(spec.build("regularizer", host.registry))
        except GenzooError as exc:
            raise ConfigError(f"{run.origin}: run {run.name!r}: regularizer {name!r}: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(
                f"{run.origin}: run {run.name!r}: regularizer {name!r} ({spec.key}): {exc}"
            ) from exc
    return regs


def check_compositions(
    runs: list[RunSpec],
    host: PluginHost,
    datasets: dict[str, ImageDataset],
    *,
    data_problems: list[str] | None = None,
) -> list[int | None]:
    """Build every run's dataset, model and regularizers once, before anything trains, so that
    a bad composition fails now rather than hours into the matrix. Returns parameter counts.

    With ``data_problems`` (``genzoo validate``), a dataset that cannot be loaded here (files
    not downloaded yet) is recorded there instead of failing, and its runs' models are not
    built (their count is None): the file itself may still be valid."""
    counts: list[int | None] = []
    seen: dict[str, int | None] = {}
    for run in runs:
        key = run.hierarchy.key + json.dumps(run.hierarchy.options, sort_keys=True, default=str)
        key += json.dumps(run.data.dataset.to_config(), sort_keys=True, default=str)
        if key not in seen:
            try:
                dataset = build_dataset(run.data.dataset, host, datasets)
            except ConfigError as exc:
                if data_problems is None:
                    raise
                if str(exc) not in data_problems:
                    data_problems.append(str(exc))
                seen[key] = None
            else:
                # on the CPU, not on the meta device: the first operator on meta tensors loads
                # torch's decompositions (about 1.4 s, every process), more than building a small
                # model takes (0.13 s for the quickstart's three); a paper-scale model's weights
                # (130M parameters, 0.5 GB) are freed as soon as they are counted
                with torch.device("cpu"), torch.no_grad():
                    model = build_model(run, dataset, host)
                seen[key] = sum(p.numel() for p in model.parameters())
                del model
        build_regularizers(run, host)
        counts.append(seen[key])
    return counts


def run_matrix(
    experiment: Experiment,
    out_root: str | Path,
    *,
    only: list[str] | None = None,
    device: str | None = None,
    resume: bool = False,
    fresh: bool = False,
    host: PluginHost | None = None,
    echo: Printer = print,
) -> MatrixOutcome:
    """Train and evaluate every selected run, skipping finished ones and waiting for those
    another process owns; render the report. Under ``torchrun`` every process runs the matrix
    together: rank 0 decides what each run needs (and holds its lock), all train it with DDP."""
    host = host or get_host()
    runs = experiment.select(only)
    load_plugins(experiment, host, runs)
    datasets: dict[str, ImageDataset] = {}
    check_compositions(runs, host, datasets)
    exp_dir = ExperimentDir(out_root, experiment)
    exp_dir.prepare(runs, resume=resume, fresh=fresh)
    ctx = _join_process_group(runs, device)
    outcome = MatrixOutcome(exp_dir.root)
    owned_elsewhere: list[tuple[int, RunSpec]] = []
    reported = False  # whether the report shows the last run's row already

    def settle(index: int, run: RunSpec, *, wait: bool = False) -> str | None:
        """Claim ``run`` and train it; its status, or None when it is over or owned elsewhere."""
        where = f"[{index}/{len(runs)}] {run.run_id}"
        lock = FileLock(exp_dir.run_paths(run).lock)
        decision = claim_run(exp_dir, run, lock, ctx, wait=wait, echo=echo)
        try:
            if decision in ("finished", "diverged"):
                echo(
                    f"{where}: {decision} by another process"
                    if wait
                    else f"{where}: already {decision}, skipped"
                )
                outcome.skipped.append(run.run_id)
                return None
            if decision == "owned":
                owner = owner_of(lock.path)
                echo(
                    f"{where}: being trained by {owner.describe() if owner else 'another process'}; skipped for now"
                )
                owned_elsewhere.append((index, run))
                return None
            paths = exp_dir.run_paths(run)
            if ctx.is_main:
                exp_dir.remove_stale_temporaries(paths.dir)
            echo(f"{where}: training ({run.training.steps} steps)")
            status = train_run(run, paths, host, datasets, ctx, echo, device=device)
        finally:
            lock.release()
        getattr(outcome, status).append(run.run_id)
        if ctx.is_main:
            render_report(exp_dir.root, title=experiment.name, host=host)  # current while the matrix runs
        return status

    for index, run in enumerate(runs, 1):
        status = settle(index, run)
        reported = reported or status is not None
        if status == "interrupted":
            echo(f"interrupted: {run.run_id} saved a checkpoint; rerun the same command to continue")
            return outcome
    if ctx.is_distributed:  # rank 0 alone cannot wait while the others sit in a collective
        if owned_elsewhere:
            echo(f"left to their owners: {', '.join(run.run_id for _, run in owned_elsewhere)}")
    else:
        for index, run in list(owned_elsewhere):  # wait; take over any that its owner left unfinished
            status = settle(index, run, wait=True)
            reported = reported or status is not None
            if status == "interrupted":
                echo(f"interrupted: {run.run_id} saved a checkpoint; rerun the same command to continue")
                return outcome
    if not reported and ctx.is_main:
        render_report(exp_dir.root, title=experiment.name, host=host)
    return outcome


def _join_process_group(runs: list[RunSpec], device: str | None) -> DistContext:
    """The process group when launched by torchrun (``WORLD_SIZE`` > 1), joined once, before
    the first run, so that rank 0's decisions reach every rank; else one process. Every run's
    request carries it to the engine, which joins nothing itself."""
    if not runs:
        return DistContext()
    return init_distributed(device_type(device or runs[0].training.device))


def claim_run(
    exp_dir: ExperimentDir, run: RunSpec, lock: FileLock, ctx: DistContext, *, wait: bool, echo: Printer
) -> str:
    """What the run needs, decided by rank 0 and known to every rank: ``finished`` or
    ``diverged`` (over under this configuration: skip), ``owned`` (another process holds its
    lock) or ``train`` (rank 0 now holds ``lock``; the caller releases it). With ``wait``, wait
    for the lock first. The runner and each launcher's job decide with it."""
    decision = None
    if ctx.is_main:
        if wait:
            lock.wait(on_wait=lambda owner: echo(
                f"waiting for {run.run_id}, trained by {owner.describe() if owner else 'another process'} "
                "(Ctrl-C stops waiting; nothing is lost)"
            ))  # fmt: skip
        paths = exp_dir.run_paths(run)
        over = exp_dir.finished_results(paths)
        if over is not None and exp_dir.recorded_fingerprint(paths) == run.fingerprint():
            decision = over["status"]  # (checked again under the lock, so a run is trained once)
        elif not lock.acquire():
            decision = "owned"
        else:
            over = exp_dir.finished_results(paths)
            same = over is not None and exp_dir.recorded_fingerprint(paths) == run.fingerprint()
            decision = over["status"] if same else "train"
    return broadcast_object(decision)


def run_request(
    run: RunSpec,
    paths: RunPaths,
    host: PluginHost,
    datasets: dict[str, ImageDataset],
    ctx: DistContext,
    *,
    device: str | None = None,
    progress_bar: bool | None = None,
) -> RunRequest:
    """What the engine is asked to do for ``run``, built once: its dataset, model (its initial
    weights from the run's seed alone) and regularizers built from registry keys; its settings,
    with ``device`` and ``progress_bar`` overriding the run's without changing its fingerprint;
    its identity (name, seed, fingerprint, folder), the fields of its row of results and the
    process group ``ctx`` that the caller joined."""
    dataset = build_dataset(run.data.dataset, host, datasets)
    torch.manual_seed(run.seed)  # the initial weights depend on the seed only
    model = build_model(run, dataset, host)
    regularizers = build_regularizers(run, host)
    changes: dict[str, Any] = {"device": device, "progress_bar": progress_bar}
    training = dataclasses.replace(run.training, **{k: v for k, v in changes.items() if v is not None})
    facts = {"image_shape": list(dataset.image_shape), "num_bits": dataset.num_bits}
    return RunRequest(
        model=model,
        train_data=dataset.split("train"),
        test_data=dataset.split("test"),
        config=training,
        eval_config=run.evaluation,
        logging=run.logging,
        regularizers=regularizers,
        out_dir=paths.dir,
        name=run.run_id,
        fingerprint=run.fingerprint(),
        row_fields={
            "run": run.name,
            "seed": run.seed,
            "group": run.group,
            "base": run.base,
            "changes": run.changes,
            "hierarchy": run.hierarchy.key,
        },
        run_config={**run.to_config(), **facts},
        dataset_name=json.dumps(run.data.dataset.to_config(), sort_keys=True, default=str),
        host=host,
        dist=ctx,
    )


def train_run(
    run: RunSpec,
    paths: RunPaths,
    host: PluginHost,
    datasets: dict[str, ImageDataset],
    ctx: DistContext,
    echo: Printer,
    *,
    device: str | None = None,
    progress_bar: bool | None = None,
) -> str:
    """Build the request of one run whose lock the caller holds (:func:`run_request`), write
    its ``config.yaml`` and hand the request to the engine; returns the run's status
    (``finished``, ``diverged``, ``interrupted`` or ``failed``; after Ctrl-C, which the trainer
    raises once the checkpoint is written, ``interrupted`` too). In a data-parallel job every
    process of ``ctx`` calls it, and only its main process writes files (the trainer's rank 0)."""
    from genzoo.engine import train_request
    from genzoo.engine.signals import RunInterrupted

    request = run_request(run, paths, host, datasets, ctx, device=device, progress_bar=progress_bar)
    if ctx.is_main:
        ExperimentDir.write_run_config(request)
    try:
        row = train_request(request)
    except RunInterrupted as stop:  # the matrix stops as for SIGTERM; the command exits with 130
        row = stop.results
    except GenzooError:
        raise
    except Exception as exc:  # a crash in one run must not cost the others; the trainer wrote its row
        echo(f"    failed: {type(exc).__name__}: {exc} (traceback in {paths.error})")
        return "failed"
    echo(f"    {summary_line(row)}")
    status = row.get("status", "finished")
    return status if status in ("finished", "diverged", "interrupted") else "failed"
