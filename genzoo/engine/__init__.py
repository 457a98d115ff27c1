"""The training and evaluation engine: NVAE's recipe, the field's metrics, resumable runs.

A small Python API, usable without any experiment file::

    from genzoo.engine import EvalConfig, TrainConfig, evaluate, train

    results = train(model, train_set, test_set, TrainConfig(steps=2000, batch_size=32),
                    out_dir="runs/nvae", regularizers=[spectral])
    print(results["test_bpd_elbo"], results["test_bpd_iw"])
    scores = evaluate(model, test_set, EvalConfig(iw_samples=100))

A caller that builds runs itself (the experiment runner) hands the engine one typed
:class:`RunRequest` per run instead: ``train_request(request)``.

See ``docs/engine.md`` for the whole tour.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what static tools see; at run time each name is imported on first use
    from genzoo.engine.checkpoint import load_checkpoint, save_checkpoint
    from genzoo.engine.config import EvalConfig, TrainConfig
    from genzoo.engine.efficiency import parameter_counts, peak_memory_bytes, sampling_speed
    from genzoo.engine.evaluation import (
        bits_per_dim,
        evaluate_likelihood,
        importance_weighted_log_likelihood,
        readjusted_batchnorm,
        sample_images,
    )
    from genzoo.engine.evaluator import evaluate
    from genzoo.engine.fid import frechet_distance
    from genzoo.engine.logging import read_metrics
    from genzoo.engine.request import RunRequest
    from genzoo.engine.schedules import WarmupCosine, balanced_kl, kl_balance_alpha, kl_coefficient
    from genzoo.engine.trainer import Trainer, train, train_request
    from genzoo.plugin.run_info import RunInfo

_HOMES = {
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "EvalConfig": "config",
    "TrainConfig": "config",
    "parameter_counts": "efficiency",
    "peak_memory_bytes": "efficiency",
    "sampling_speed": "efficiency",
    "bits_per_dim": "evaluation",
    "evaluate_likelihood": "evaluation",
    "importance_weighted_log_likelihood": "evaluation",
    "readjusted_batchnorm": "evaluation",
    "sample_images": "evaluation",
    "evaluate": "evaluator",
    "frechet_distance": "fid",
    "read_metrics": "logging",
    "RunRequest": "request",
    "WarmupCosine": "schedules",
    "balanced_kl": "schedules",
    "kl_balance_alpha": "schedules",
    "kl_coefficient": "schedules",
    "Trainer": "trainer",
    "train": "trainer",
    "train_request": "trainer",
}
"""Public name -> the engine module that defines it. The names are imported on first use, so
that reading a config (``genzoo.engine.config``, no torch) does not load the whole engine: the
command line reports a mistake in an experiment file before torch is imported."""


def __getattr__(name: str) -> Any:
    if name == "RunInfo":
        from genzoo.plugin.run_info import RunInfo

        value: Any = RunInfo
    elif name in _HOMES:
        value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "EvalConfig",
    "RunInfo",
    "RunRequest",
    "TrainConfig",
    "Trainer",
    "WarmupCosine",
    "balanced_kl",
    "bits_per_dim",
    "evaluate",
    "evaluate_likelihood",
    "frechet_distance",
    "importance_weighted_log_likelihood",
    "kl_balance_alpha",
    "kl_coefficient",
    "load_checkpoint",
    "parameter_counts",
    "peak_memory_bytes",
    "read_metrics",
    "readjusted_batchnorm",
    "sample_images",
    "sampling_speed",
    "save_checkpoint",
    "train",
    "train_request",
]
