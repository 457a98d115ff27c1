"""Experiment trackers: where a run's metrics go besides its own ``metrics.jsonl``.

A :class:`Tracker` gets what the run's logger (:class:`genzoo.engine.logging.RunLogger`) gets: the
resolved run config once, each record of training and evaluation scalars, the image grids of the
final evaluation and the run's row of results. Three are built in, each chosen by
``logging.backends`` (:class:`~genzoo.engine.config.LoggingConfig`) and each an extra:

- :class:`TensorBoardTracker`: event files in ``<run>/tensorboard/`` (the default where
  TensorBoard is installed);
- :class:`MlflowTracker`: an MLflow run: the config as params, each scalar as a metric at its
  step, the results as metrics and tags, the grids as artifacts;
- :class:`WandbTracker`: a W&B run, online or offline: the config, the history, the results in
  the run's summary, the grids as images.

A resumed run continues the same MLflow / W&B run: :meth:`Tracker.start` returns the ids it
needs, which the logger keeps in ``trackers.json`` (:class:`genzoo.io.run_layout.RunPaths`) and
hands back when the run resumes. Only the main process (rank 0) has trackers. Each package is
imported when its tracker starts, so that a run without trackers never loads them.
"""

from __future__ import annotations

import abc
import json
import numbers
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from genzoo.engine.config import TRACKER_BACKENDS, LoggingConfig, MlflowConfig, WandbConfig
from genzoo.errors import ConfigError
from genzoo.io.run_layout import RunPaths


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker is told when the run starts.

    - ``name``: the run's name (the experiment runner's ``<run>/seed<k>``).
    - ``out_dir``: the run's folder.
    - ``config``: the resolved run configuration (nested plain values), as ``train_config.json``
      holds it.
    - ``start_step``: 0 for a new run; for a resumed one, the step of its checkpoint.
    - ``previous``: what :meth:`Tracker.start` returned in the session this one resumes (from
      ``trackers.json``); None for a new run, or a tracker the run did not use before.
    """

    name: str
    out_dir: Path
    config: Mapping[str, Any]
    start_step: int = 0
    previous: Mapping[str, Any] | None = None


class Tracker(abc.ABC):
    """One tracking backend of one run, fed by the run's logger on rank 0.

    The logger calls :meth:`start` once, then the ``log_*`` methods in step order, then
    :meth:`close` once, also when the run fails. After a resume it sends a tracker that
    :attr:`continued` an earlier record none of the steps it already had (the steps between the
    checkpoint and the stop are trained again, with the same results: resumes are exact).
    """

    name: ClassVar[str]
    continued: bool = False
    """Set by :meth:`start`: whether this session writes into the record of an earlier one."""

    @abc.abstractmethod
    def start(self, run: TrackedRun) -> dict[str, Any]:
        """Open the run's record, or reopen ``run.previous``'s, and record the config; return
        what a resumed session needs to find it again (plain JSON values)."""

    @abc.abstractmethod
    def log_scalars(self, kind: str, step: int, scalars: Mapping[str, float]) -> None:
        """Record ``scalars`` of one ``kind`` (``train``, ``eval``, ``curve``) at ``step``."""

    @abc.abstractmethod
    def log_image(self, name: str, path: Path, step: int) -> None:
        """Record the PNG at ``path`` (a grid of the evaluation) as ``name`` at ``step``."""

    @abc.abstractmethod
    def log_final(self, results: Mapping[str, Any], step: int) -> None:
        """Record the run's row of results (``results.json``) once it is over."""

    @abc.abstractmethod
    def close(self, status: str) -> None:
        """Close the record with the run's ``status`` (``finished``, ``interrupted``,
        ``diverged`` or ``failed``)."""


def build_trackers(config: LoggingConfig) -> list[Tracker]:
    """The trackers ``config`` asks for, in the order of ``backends`` (not started)."""
    makers = {
        "tensorboard": TensorBoardTracker,
        "mlflow": lambda: MlflowTracker(config.mlflow),
        "wandb": lambda: WandbTracker(config.wandb),
    }
    return [makers[name]() for name in config.trackers]


# -- helpers ------------------------------------------------------------------------------------
def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys: ``{"train": {"lr": 0.01}}`` ->
    ``{"train.lr": 0.01}`` (lists and other values are kept as they are)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def scalar(value: Any) -> float | None:
    """``value`` as a float if it is a real number (a bool counts as 0 / 1, a one-element tensor
    as its value, NaN and infinities stay), else None."""
    if hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1:
        value = value.item()
    return float(value) if isinstance(value, numbers.Real) else None


def _results_split(results: Mapping[str, Any]) -> Iterator[tuple[str, float | str | bool]]:
    """The fields of a row of results a tracker records: numbers as floats, words and flags as
    they are (mappings such as ``changes`` and empty fields are left out)."""
    for key, value in results.items():
        if isinstance(value, (str, bool)):
            yield key, value
        elif (number := scalar(value)) is not None:
            yield key, number


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _import(backend: str) -> Any:
    """The package of ``backend``, or the error that names the extra to install."""
    import importlib

    package = TRACKER_BACKENDS[backend]
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ConfigError(
            f"logging.backends lists {backend!r}, which needs {package} ({exc}): "
            f"pip install 'genzoo[{backend}]'"
        ) from exc


# -- TensorBoard --------------------------------------------------------------------------------
class TensorBoardTracker(Tracker):
    """Event files in ``<run>/tensorboard/``: scalars under ``<kind>/<name>``, the grids under
    ``images/``, the results as a text table. A resumed run purges the events after its
    checkpoint's step (``SummaryWriter(purge_step=...)``), which it logs again."""

    name = "tensorboard"

    def __init__(self) -> None:
        self._writer: Any = None

    def start(self, run: TrackedRun) -> dict[str, Any]:
        _import("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        purge = run.start_step + 1 if run.start_step > 0 else None
        self._writer = SummaryWriter(log_dir=str(RunPaths(run.out_dir).tensorboard), purge_step=purge)
        return {}

    def log_scalars(self, kind: str, step: int, scalars: Mapping[str, float]) -> None:
        for name, value in scalars.items():
            self._writer.add_scalar(f"{kind}/{name}", value, step)

    def log_image(self, name: str, path: Path, step: int) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self._writer.add_image(f"images/{name}", pixels, step, dataformats="HWC")

    def log_final(self, results: Mapping[str, Any], step: int) -> None:
        rows = [f"| {key} | {value} |" for key, value in results.items() if not isinstance(value, Mapping)]
        self._writer.add_text("results", "\n".join(["| result | value |", "| --- | --- |", *rows]), step)

    def close(self, status: str) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# -- MLflow -------------------------------------------------------------------------------------
_MLFLOW_STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "diverged": "FAILED", "failed": "FAILED"}
_MLFLOW_NAME = re.compile(r"[^\w\-. /]")  # the characters MLflow accepts in a key
_MLFLOW_PARAM_LENGTH = 6000  # MLflow's limit on a param's value (MAX_PARAM_VAL_LENGTH)


class MlflowTracker(Tracker):
    """An MLflow run in ``config.experiment`` at ``config.tracking_uri``: the run config as
    params (nested keys dotted: ``train.lr``), each scalar as the metric ``<kind>/<name>`` at its
    step, the numbers of the results as metrics of their own name and its words as
    ``genzoo.<field>`` tags, the grids as artifacts under ``grids/``. A run that ends
    ``interrupted`` is ``KILLED``, ``diverged`` or ``failed`` is ``FAILED``."""

    name = "mlflow"

    def __init__(self, config: MlflowConfig | None = None) -> None:
        self.config = config or MlflowConfig()
        self.client: Any = None
        self.run_id: str | None = None

    def start(self, run: TrackedRun) -> dict[str, Any]:
        _import("mlflow")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.config.tracking_uri)
        previous = (run.previous or {}).get("run_id")
        if previous and self._exists(previous):
            self.run_id, self.continued = previous, True
            self.client.update_run(previous, status="RUNNING")
        else:
            tags = {"genzoo.name": run.name, **self.config.tags}
            created = self.client.create_run(self._experiment_id(), run_name=run.name, tags=tags)
            self.run_id = created.info.run_id
            self._log_params(flatten(run.config))
        return {"run_id": self.run_id, "tracking_uri": self.client.tracking_uri}

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException:
            return False  # another tracking URI than the last session's, or a deleted run
        return True

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.config.experiment or "Default"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # created meanwhile by a run in another process
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        entries = [
            Param(_MLFLOW_NAME.sub("_", key)[:250], str(value)[:_MLFLOW_PARAM_LENGTH])
            for key, value in params.items()
        ]
        for batch in _chunks(entries, 100):  # MLflow's limit of params per batch
            self.client.log_batch(self.run_id, params=list(batch))

    def _log_metrics(self, values: Mapping[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(_MLFLOW_NAME.sub("_", key), value, now, step) for key, value in values.items()]
        for batch in _chunks(entries, 1000):  # MLflow's limit of metrics per batch
            self.client.log_batch(self.run_id, metrics=list(batch))

    def log_scalars(self, kind: str, step: int, scalars: Mapping[str, float]) -> None:
        self._log_metrics({f"{kind}/{name}": value for name, value in scalars.items()}, step)

    def log_image(self, name: str, path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path="grids")

    def log_final(self, results: Mapping[str, Any], step: int) -> None:
        fields = dict(_results_split(results))
        self._log_metrics({k: v for k, v in fields.items() if isinstance(v, float)}, step)
        for key, value in fields.items():
            if not isinstance(value, float):
                self.client.set_tag(self.run_id, f"genzoo.{_MLFLOW_NAME.sub('_', key)}", str(value))

    def close(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=_MLFLOW_STATUS.get(status, "FAILED"))
            self.run_id = None


# -- Weights & Biases ---------------------------------------------------------------------------
class WandbTracker(Tracker):
    """A W&B run (``config``: project, entity, mode, group, tags, folder): the run config as its
    config, each scalar as ``<kind>/<name>`` in its history at the training step, the grids as
    ``images/<name>`` at the last step, the results in its summary. W&B's console capture is
    off (the run's output is not what it tracks). Offline runs are files under
    ``<dir>/wandb/offline-run-*``, uploaded later by ``wandb sync``; a resumed run writes a
    second folder with the same run id, and ``wandb sync`` appends one to the other."""

    name = "wandb"

    def __init__(self, config: WandbConfig | None = None) -> None:
        self.config = config or WandbConfig()
        self.run: Any = None

    def start(self, run: TrackedRun) -> dict[str, Any]:
        wandb = _import("wandb")
        config = self.config
        previous = (run.previous or {}).get("run_id")
        folder = Path(config.dir) if config.dir else run.out_dir
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=config.project,
            entity=config.entity,
            mode=config.mode,
            group=config.group,
            tags=list(config.tags) or None,
            name=run.name,
            dir=str(folder),
            id=previous,
            resume="allow" if previous else None,
            config=json.loads(json.dumps(run.config, default=str)),  # plain values only
            settings=wandb.Settings(console="off"),
        )
        self.continued = previous is not None
        return {"run_id": self.run.id, "project": self.run.project, "mode": config.mode or "default"}

    def log_scalars(self, kind: str, step: int, scalars: Mapping[str, float]) -> None:
        self.run.log({f"{kind}/{name}": value for name, value in scalars.items()}, step=step)

    def log_image(self, name: str, path: Path, step: int) -> None:
        import wandb

        self.run.log({f"images/{name}": wandb.Image(str(path))}, step=step)

    def log_final(self, results: Mapping[str, Any], step: int) -> None:
        self.run.summary.update(dict(_results_split(results)))

    def close(self, status: str) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "finished" else 1)
            self.run = None
