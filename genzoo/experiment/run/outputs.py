"""The experiment's output folder: which runs are over, and what happens to earlier results.

The layout itself (every file name) is :mod:`genzoo.io.run_layout`'s. Earlier results are never
overwritten silently: a run folder written with another configuration stops the command,
unless the user passes ``--resume`` (continue those runs under the new configuration) or
``--fresh`` (move them to ``archive/`` and start again). Several processes may work in one
folder at once (two ``genzoo run``, or the jobs of a launcher): each run has one owner
(:mod:`.locks`), ``--fresh`` refuses to move a run that a process owns, and the experiment's
own files are written under the experiment lock.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from genzoo.errors import ConfigError, GenzooError
from genzoo.experiment.config.spec import Experiment, RunSpec
from genzoo.experiment.run.locks import FileLock, owner_of
from genzoo.io.atomic import atomic_write_text
from genzoo.io.run_layout import ExperimentPaths, RunPaths

if TYPE_CHECKING:
    from genzoo.engine.request import RunRequest


def confined(root: Path, *parts: str) -> Path:
    """``root / parts`` resolved, refusing any path that would leave ``root``."""
    root = root.resolve()
    path = root.joinpath(*parts).resolve()
    if not path.is_relative_to(root):
        raise ConfigError(f"output path {'/'.join(parts)!r} would leave the output folder {root}")
    return path


def run_invocation(run_dir: str | Path) -> dict[str, Any] | None:
    """How the run in ``run_dir`` (``OUT/<experiment>/runs/<run>/seed<k>``) was asked for, from
    its experiment's ``experiment.json``: the experiment's ``name`` and the ``file``,
    ``profile``, ``overrides`` and ``plugins`` of the invocation that last asked for the run.
    None where no readable ``experiment.json`` is there. A manifest written before genzoo
    recorded them per run gives its top-level ones: the last invocation's, which may not be
    the run's (a matrix run one seed at a time)."""
    run_dir = Path(run_dir).resolve()
    parents = run_dir.parents
    if len(parents) < 3:
        return None
    try:
        manifest = json.loads(ExperimentPaths(parents[2]).manifest.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    invocations = manifest.get("invocations")
    recorded = (
        invocations.get(f"{run_dir.parent.name}/{run_dir.name}") if isinstance(invocations, dict) else None
    )
    source = recorded if isinstance(recorded, dict) else manifest
    return {
        "name": manifest.get("name"),
        **{k: source.get(k) for k in ("file", "profile", "overrides", "plugins")},
    }


class ExperimentDir:
    """The output folder of one experiment."""

    def __init__(self, out_root: str | Path, experiment: Experiment) -> None:
        self.experiment = experiment
        self.root = confined(Path(out_root), experiment.name)
        self.paths = ExperimentPaths(self.root)

    def run_paths(self, run: RunSpec) -> RunPaths:
        paths = self.paths.run(run.name, run.seed)
        confined(self.root, str(paths.dir.relative_to(self.root)))
        return paths

    def _has_folder(self, run_id: str) -> bool:
        """Whether the run ``name/seedN`` of an earlier ``experiment.json`` has its folder."""
        name, _, seed = run_id.rpartition("/seed")
        return bool(name) and seed.isdigit() and self.paths.run(name, int(seed)).dir.is_dir()

    # -- state of earlier runs ---------------------------------------------------------------
    @staticmethod
    def recorded_fingerprint(paths: RunPaths) -> str | None:
        try:
            doc = yaml.safe_load(paths.config.read_text())
        except (OSError, yaml.YAMLError):
            return None
        return doc.get("fingerprint") if isinstance(doc, dict) else None

    @staticmethod
    def finished_results(paths: RunPaths) -> dict[str, Any] | None:
        """The run's row if it is over (finished or diverged) and was written for a matrix run
        (it carries the run's ``fingerprint``), else None. A row without one comes from a bare
        ``genzoo.engine.train`` call, or from an older genzoo, whose runner completed the
        engine's row in a second write that a kill could cut off: such a run is trained again."""
        try:
            results = json.loads(paths.results.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if "fingerprint" not in results:
            return None
        return results if results.get("status") in ("finished", "diverged") else None

    @staticmethod
    def remove_stale_temporaries(folder: Path) -> None:
        """Temporary files of atomic writes in ``folder`` that a kill interrupted (never the
        files themselves). Call it only while holding the lock of whoever writes there (the
        run's, or the experiment's for its own files): another process may be writing one."""
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def prepare(self, runs: list[RunSpec], *, resume: bool = False, fresh: bool = False) -> None:
        """Check earlier results against ``runs`` and make the folders; see the module doc."""
        if resume and fresh:
            raise ConfigError("--resume and --fresh exclude each other")
        changed = []
        for run in runs:
            paths = self.run_paths(run)
            if not paths.dir.exists():
                continue
            recorded = self.recorded_fingerprint(paths)
            if recorded is not None and recorded != run.fingerprint():
                changed.append(run)
        if fresh:
            existing = [r for r in runs if self.run_paths(r).dir.exists()]
            owned = [(r, owner_of(self.run_paths(r).lock)) for r in existing]
            owned = [(r, o) for r, o in owned if o is not None]
            if owned:
                listed = "; ".join(f"{r.run_id} by {o.describe()}" for r, o in owned[:5])
                raise ConfigError(
                    f"--fresh: {len(owned)} run(s) of {self.root} are being trained: {listed}. Nothing was "
                    "moved; stop them (scancel for Slurm jobs) or wait for them, then rerun with --fresh."
                )
            self._archive(existing)
        elif changed and not resume:
            names = ", ".join(r.run_id for r in changed[:5]) + (" ..." if len(changed) > 5 else "")
            raise ConfigError(
                f"{self.root} already holds results of {len(changed)} run(s) with a different configuration "
                f"({names}). Rerun with --resume to continue them under the new configuration, with --fresh "
                "to move them to archive/ and start again, or choose another --out folder."
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for run in runs:
                self.run_paths(run).dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GenzooError(f"cannot create the output folder {self.root}: {exc.strerror or exc}") from exc
        with FileLock(self.paths.lock, record_owner=False):
            self.remove_stale_temporaries(self.root)
            manifest = self._manifest(runs)
            atomic_write_text(self.paths.manifest, json.dumps(manifest, indent=2) + "\n")

    def _manifest(self, runs: list[RunSpec]) -> dict[str, Any]:
        """``experiment.json`` after an invocation that asked for ``runs``: every run that this
        or an earlier invocation asked for (``runs``: run id -> fingerprint, what ``genzoo
        status`` and the report list) and, per run, the invocation that last asked for it
        (``invocations``: experiment file, profile, ``--set`` overrides, plugin modules; what a
        model card gives as the command). A matrix run one variant or seed at a time
        (``--only``, ``--set seeds=[k]``) thus keeps its earlier runs and lists no run it never
        asked for. The top-level ``file``, ``profile``, ``overrides`` and ``plugins`` are the
        last invocation's. Call it under the experiment lock."""
        try:
            earlier = json.loads(self.paths.manifest.read_text())
        except (OSError, json.JSONDecodeError):
            earlier = {}
        same = isinstance(earlier, dict) and earlier.get("name") == self.experiment.name
        kept = earlier.get("runs") if same else None
        fingerprints = {
            run_id: fingerprint
            for run_id, fingerprint in (kept.items() if isinstance(kept, dict) else ())
            if self._has_folder(run_id)  # a run folder removed by hand is no longer listed
        }
        invocations = earlier.get("invocations") if same else None
        if not isinstance(invocations, dict):
            invocations = {}
        # a run of a manifest that recorded no invocation per run (an older genzoo) keeps that
        # manifest's top-level one: the best record of it there is
        older = {k: earlier.get(k) for k in ("file", "profile", "overrides", "plugins")} if same else {}
        invocations = {k: invocations.get(k, older) for k in fingerprints}
        invocation = {
            "file": str(self.experiment.file),
            "profile": self.experiment.profile,
            "overrides": self.experiment.overrides,
            "plugins": self.experiment.plugins,
        }
        for run in runs:
            fingerprints[run.run_id] = run.fingerprint()
            invocations[run.run_id] = invocation
        return {
            "name": self.experiment.name,
            **invocation,
            "runs": fingerprints,
            "invocations": invocations,
        }

    @staticmethod
    def write_run_config(request: RunRequest) -> None:
        """``config.yaml``: the run's fingerprint and its ``run_config`` as the request carries
        them: the resolved run config and the facts learned while building it (image shape, bit
        depth) that ``genzoo sample`` needs to rebuild the model."""
        doc = {"fingerprint": request.fingerprint, **request.run_config}
        atomic_write_text(RunPaths(request.out_dir).config, yaml.safe_dump(doc, sort_keys=False))

    def _archive(self, runs: list[RunSpec]) -> None:
        if not runs:
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest_root = confined(self.root, self.paths.archive.name, stamp)
        for run in runs:
            paths = self.run_paths(run)
            dest = dest_root / "runs" / run.name / f"seed{run.seed}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(paths.lock, record_owner=False)
            if not lock.acquire():  # taken since the check in prepare()
                raise ConfigError(f"--fresh: {run.run_id} started training meanwhile; it was not moved")
            try:
                shutil.move(str(paths.dir), str(dest))
            finally:
                lock.release()
