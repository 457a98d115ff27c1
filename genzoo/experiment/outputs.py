"""The experiment's output folder: which runs are over, and what happens to earlier results.

The layout itself (every file name) is :mod:`genzoo.layout`'s. Earlier results are never
overwritten silently: a run folder written with another configuration stops the command,
unless the user passes ``--resume`` (continue those runs under the new configuration) or
``--fresh`` (move them to ``archive/`` and start again).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from genzoo.atomic import atomic_write_text
from genzoo.errors import ConfigError, GenzooError
from genzoo.experiment.spec import Experiment, RunSpec
from genzoo.layout import ExperimentPaths, RunPaths


def confined(root: Path, *parts: str) -> Path:
    """``root / parts`` resolved, refusing any path that would leave ``root``."""
    root = root.resolve()
    path = root.joinpath(*parts).resolve()
    if not path.is_relative_to(root):
        raise ConfigError(f"output path {'/'.join(parts)!r} would leave the output folder {root}")
    return path


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

    def remove_stale_temporaries(self) -> None:
        """Temporary files of atomic writes that a kill interrupted (never the files themselves)."""
        for tmp in self.root.rglob(".*.tmp"):
            if "archive" not in tmp.relative_to(self.root).parts:
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
            self._archive(existing)
        elif changed and not resume:
            names = ", ".join(r.run_id for r in changed[:5]) + (" ..." if len(changed) > 5 else "")
            raise ConfigError(
                f"{self.root} already holds results of {len(changed)} run(s) with a different configuration "
                f"({names}). Rerun with --resume to continue them under the new configuration, with --fresh "
                "to move them to archive/ and start again, or choose another --out folder."
            )
        if self.root.is_dir():
            self.remove_stale_temporaries()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for run in runs:
                self.run_paths(run).dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GenzooError(f"cannot create the output folder {self.root}: {exc.strerror or exc}") from exc
        manifest = {
            "name": self.experiment.name,
            "file": str(self.experiment.file),
            "profile": self.experiment.profile,
            "overrides": self.experiment.overrides,
            "plugins": self.experiment.plugins,
            "runs": {r.run_id: r.fingerprint() for r in self.experiment.runs},
        }
        atomic_write_text(self.paths.manifest, json.dumps(manifest, indent=2) + "\n")

    def write_run_config(self, run: RunSpec, **facts: Any) -> None:
        """``config.yaml``: the fingerprint, the resolved run config, and ``facts`` learned while
        building it (image shape, bit depth) that ``genzoo sample`` needs to rebuild the model."""
        doc = {"fingerprint": run.fingerprint(), **run.to_config(), **facts}
        atomic_write_text(self.run_paths(run).config, yaml.safe_dump(doc, sort_keys=False))

    def _archive(self, runs: list[RunSpec]) -> None:
        if not runs:
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest_root = confined(self.root, self.paths.archive.name, stamp)
        for run in runs:
            src = self.run_paths(run).dir
            dest = dest_root / "runs" / run.name / f"seed{run.seed}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dest))
