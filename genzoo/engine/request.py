"""What the engine is asked to do for one run: a :class:`RunRequest`, the one hand-off from the
caller to the trainer.

The experiment layer builds one request per run (``genzoo.experiment.run.runner.run_request``, for
``genzoo run`` and for each job of ``genzoo run --launcher``): the run's model, data and
regularizers built from registry keys, its validated settings, its identity (name, seed,
fingerprint, folder), the fields of its row of results and the process group it joined.
:func:`genzoo.engine.train` builds one from its arguments. The engine trusts what a request
holds: its :class:`TrainConfig` and :class:`EvalConfig` were checked when they were built, so
nothing downstream checks a setting again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genzoo.engine.config import EvalConfig, LoggingConfig, TrainConfig
from genzoo.interfaces.hierarchy import Hierarchy
from genzoo.interfaces.regularizer import Regularizer

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from genzoo.engine.distributed import DistContext
    from genzoo.plugin.discovery import PluginHost


@dataclass(frozen=True)
class RunRequest:
    """One run for the engine to train (or resume) and evaluate.

    - ``model``: the :class:`genzoo.Hierarchy` to train (moved to the configured device).
    - ``train_data`` / ``test_data``: datasets of images ``(C, H, W)`` in [0, 1] (or
      ``(image, label)`` pairs); ``test_data`` None skips evaluation.
    - ``config`` / ``eval_config``: the validated training and evaluation settings.
    - ``out_dir``: the run's folder (:class:`genzoo.io.run_layout.RunPaths`); a checkpoint there is
      resumed.
    - ``regularizers``: :class:`genzoo.Regularizer` objects added to the loss.
    - ``name``: the run's name in its results, log and hooks (default: the folder's name).
    - ``fingerprint``: the hash of the configuration that decides the run's results, computed
      once by the caller (the experiment runner) and written into the row of results, where the
      runner reads it to tell a finished run from a changed one; None for a bare ``train`` call.
    - ``row_fields``: the caller's fields of the run's row of results (the experiment runner:
      run name, seed, group, base, changes, hierarchy), written with it once, complete.
    - ``run_config``: extra plain values recorded in ``train_config.json`` and
      ``RunInfo.config`` (the runner: the resolved run configuration).
    - ``dataset_name``: names the dataset for the FID reference-statistics cache.
    - ``host``: the plugin host whose lifecycle hooks are called (None: ``genzoo.get_host()``).
    - ``dist``: the process group the caller joined (:func:`genzoo.engine.distributed.init_distributed`);
      None: the engine joins it from the environment (``torchrun``'s variables).
    - ``logging``: the trackers the run logs to besides ``metrics.jsonl`` (:class:`LoggingConfig`;
      default: TensorBoard where it is installed).
    """

    model: Hierarchy
    train_data: Dataset
    test_data: Dataset | None
    config: TrainConfig
    out_dir: Path
    eval_config: EvalConfig = field(default_factory=EvalConfig)
    regularizers: Sequence[Regularizer] = ()
    name: str = ""
    fingerprint: str | None = None
    row_fields: Mapping[str, Any] = field(default_factory=dict)
    run_config: Mapping[str, Any] = field(default_factory=dict)
    dataset_name: str | None = None
    host: PluginHost | None = None
    dist: DistContext | None = None
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.model, Hierarchy):
            raise TypeError(f"model is a {type(self.model).__name__}; expected a genzoo.Hierarchy")
        if not isinstance(self.config, TrainConfig):
            raise TypeError(f"config is a {type(self.config).__name__}; expected a TrainConfig")
        if not isinstance(self.eval_config, EvalConfig):
            raise TypeError(f"eval_config is a {type(self.eval_config).__name__}; expected an EvalConfig")
        if not isinstance(self.logging, LoggingConfig):
            raise TypeError(f"logging is a {type(self.logging).__name__}; expected a LoggingConfig")
        for i, reg in enumerate(self.regularizers):
            if not isinstance(reg, Regularizer):
                raise TypeError(f"regularizers[{i}] is a {type(reg).__name__}; expected a genzoo.Regularizer")
        out_dir = Path(self.out_dir)
        object.__setattr__(self, "out_dir", out_dir)
        object.__setattr__(self, "regularizers", tuple(self.regularizers))
        object.__setattr__(self, "name", self.name or out_dir.name)
        object.__setattr__(self, "row_fields", dict(self.row_fields))
        object.__setattr__(self, "run_config", dict(self.run_config))

    @property
    def seed(self) -> int:
        """The run's seed (``config.seed``: the experiment runner sets it to the run's)."""
        return self.config.seed

    def results_fields(self) -> dict[str, Any]:
        """The caller's fields of the row of results: ``row_fields`` and the ``fingerprint``."""
        fingerprint = {} if self.fingerprint is None else {"fingerprint": self.fingerprint}
        return {**self.row_fields, **fingerprint}
