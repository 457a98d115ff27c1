"""Where a run and an experiment keep their files: every file name genzoo writes, in one place.

Layout::

    OUT/<experiment>/                 ExperimentPaths
      experiment.json                 what was asked: every run asked for and the command that asked for each
      experiment.lock                 held while experiment.json or the report is written (never removed)
      report.md  results.csv  results.json  curves.png   (written by the report only)
      archive/<timestamp>/...         earlier results moved aside by --fresh, never deleted
      jobs/                           submitit's files, <job id>_*: sbatch script, pickles, logs (submitit)
      jobs/slots/slot<i>.lock         the local launcher's concurrency slots, held by the job in each
      runs/<run>/seed<k>/             RunPaths
        run.lock                      held by the one process that trains the run; names it (the owner)
        job.json                      the run's last submission: launcher, job id, log (the launcher)
        config.yaml                   the resolved run config and its fingerprint (the runner)
        train_config.json             the engine's settings as it ran them (the trainer)
        checkpoint.pt                 latest checkpoint, for resuming (the trainer)
        metrics.jsonl  tensorboard/   training and evaluation metrics (the run's logger)
        trackers.json  wandb/         MLflow / W&B run ids a resumed run continues; W&B's files (the logger)
        results.json                  the run's row, written once when the run is over (the trainer)
        error.txt                     the traceback of a run that crashed (the trainer)
        samples_t<T>.png  reconstructions.png   image grids (the evaluator)
        samples_cli_t<T>.png          a grid drawn by ``genzoo sample``
        evaluation_<split>_k<K>.json  scores written by ``genzoo evaluate``
        <kind>_cli.png                grids of ``genzoo reconstruct`` / ``genzoo interpolate``
      (the commands run on a trained run write only new files: a name already taken gets
      ``-1``, ``-2`` ... before its suffix; see :func:`new_file`)

Each file has one writer, named above; everything else asks these classes for paths.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_SAMPLES = re.compile(r"^samples_t(?P<t>[0-9.e+-]+)\.png$")


@dataclass(frozen=True)
class RunPaths:
    """The files of one run's folder."""

    dir: Path

    @property
    def lock(self) -> Path:
        """Locked (``flock``) by the process that trains the run, which writes its host, pid and
        job id into it; never removed, so that every process locks the same file."""
        return self.dir / "run.lock"

    @property
    def job(self) -> Path:
        """The run's last submission through a launcher (``genzoo run --launcher``)."""
        return self.dir / "job.json"

    @property
    def config(self) -> Path:
        return self.dir / "config.yaml"

    @property
    def train_config(self) -> Path:
        return self.dir / "train_config.json"

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint.pt"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.dir / "tensorboard"

    @property
    def trackers(self) -> Path:
        return self.dir / "trackers.json"

    @property
    def results(self) -> Path:
        return self.dir / "results.json"

    @property
    def error(self) -> Path:
        return self.dir / "error.txt"

    @property
    def reconstructions(self) -> Path:
        return self.dir / "reconstructions.png"

    def samples(self, temperature: float) -> Path:
        """The sample grid at ``temperature``."""
        return self.dir / f"samples_t{temperature:g}.png"

    def cli_samples(self, temperature: float) -> Path:
        """The grid ``genzoo sample`` writes at ``temperature`` unless told another file."""
        return self.dir / f"samples_cli_t{temperature:g}.png"

    def evaluation(self, split: str, iw_samples: int) -> Path:
        """The scores ``genzoo evaluate`` writes (pass it through :func:`new_file`)."""
        return self.dir / f"evaluation_{split}_k{iw_samples}.json"

    def cli_grid(self, kind: str) -> Path:
        """A grid of ``genzoo reconstruct`` / ``interpolate`` (``kind``: ``reconstructions``,
        ``interpolation``, ``traversal`` ...; pass it through :func:`new_file`)."""
        return self.dir / f"{kind}_cli.png"

    def sample_grids(self) -> list[tuple[str, Path]]:
        """``(temperature as written, path)`` of the sample grids present, sorted by name."""
        found = []
        for path in sorted(self.dir.glob("samples_t*.png")):
            match = _SAMPLES.match(path.name)
            if match:
                found.append((match["t"], path))
        return found


def new_file(path: str | Path) -> Path:
    """``path`` if no file has that name, else the first free ``<stem>-<i><suffix>``
    (``i = 1, 2, ...``), created empty so that a concurrent caller gets another name: the
    commands that read a finished run write beside it without overwriting anything."""
    path = Path(path)
    for i in range(10_000):
        candidate = path if i == 0 else path.with_name(f"{path.stem}-{i}{path.suffix}")
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{path}: no free name among {path.stem}-1..9999{path.suffix}")


@dataclass(frozen=True)
class ExperimentPaths:
    """The files of one experiment's output folder (``OUT/<experiment>/``)."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "experiment.json"

    @property
    def lock(self) -> Path:
        """Locked while ``experiment.json`` or the report is written, so that concurrent
        processes write them one after the other (the last one sees every finished run)."""
        return self.root / "experiment.lock"

    @property
    def jobs(self) -> Path:
        """submitit's folder: each job's submission script, pickles and logs, named by job id
        (``<job id>_0_log.out``; submitit names them)."""
        return self.root / "jobs"

    def slot(self, index: int) -> Path:
        """The local launcher's concurrency slot ``index`` (``launcher.max_parallel`` of them)."""
        return self.jobs / "slots" / f"slot{index}.lock"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def budget_curves(self) -> Path:
        """Each ablation's paired difference against images seen (only with curve records)."""
        return self.root / "budget.png"

    @property
    def budget_csv(self) -> Path:
        """The figures of ``budget.png``: one row per ablation, metric and images seen."""
        return self.root / "budget.csv"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    def run(self, name: str, seed: int) -> RunPaths:
        """The folder of run ``name`` with ``seed`` (names are checked to be folder-safe when
        the experiment file is read)."""
        return RunPaths(self.root / "runs" / name / f"seed{seed}")

    def runs(self) -> list[tuple[str, str, RunPaths]]:
        """``(run name, seed folder, paths)`` of every run folder present, sorted by name."""
        return [
            (folder.parent.name, folder.name, RunPaths(folder))
            for folder in sorted(self.root.glob("runs/*/seed*"))
            if folder.is_dir()
        ]
