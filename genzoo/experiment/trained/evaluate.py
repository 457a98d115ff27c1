"""``genzoo evaluate``: score a trained run's checkpoint as the run's own evaluation scores it.

The figures come from :func:`genzoo.engine.evaluator.evaluate`, the function the trainer's final
evaluation calls, with the run's settings from its ``config.yaml``: the held-out images read
with a seeded generator each (the same dynamic binarization for every model of the seed), the
evaluation noise drawn from the run's seed in a forked generator, the run's batch size, K and N,
and the EMA weights where the run kept them (:func:`~genzoo.experiment.report.sampling.load_run_weights`).
So, on the kind of device the run was evaluated on, the defaults give back the ``test_*``
figures of the run's ``results.json`` (``tests/test_evaluate_cli.py`` checks it), and another K,
N, split or seed scores the same checkpoint the same way. Only the likelihood figures and, with
``fid``, FID are measured: no sample grids, reconstructions or sampling speed.

The scores are written to ``RUN_DIR/evaluation_<split>_k<K>.json`` under a name not taken yet
(:func:`genzoo.io.run_layout.new_file`): nothing in the run's folder is changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from genzoo import __version__
from genzoo.errors import ConfigError
from genzoo.experiment.report.sampling import (
    RunCheckpoint,
    load_experiment_plugins,
    load_run_weights,
    read_run_config,
)
from genzoo.io.atomic import atomic_write_text
from genzoo.io.run_layout import RunPaths, new_file
from genzoo.machine.software import software
from genzoo.plugin.component_spec import ComponentSpec
from genzoo.plugin.discovery import get_host

SPLITS = ("test", "train")

_STATUS = {
    "finished": "finished",
    "interrupted": "interrupted (stopped by a signal; `genzoo run` resumes it)",
    "running": "a periodic checkpoint of an unfinished run (killed, or still training)",
}


def evaluate_run(
    run_dir: str | Path,
    *,
    iw_samples: int | None = None,
    max_images: int | None = None,
    split: str = "test",
    batch_size: int | None = None,
    seed: int | None = None,
    fid: bool = False,
    fid_samples: int | None = None,
    fid_weights: str | None = None,
    device: str = "auto",
    progress: bool = False,
) -> tuple[dict[str, Any], Path]:
    """Score the run's latest checkpoint on ``split``; returns the record and the JSON file it
    was written to.

    What is not given comes from the run's ``config.yaml``: ``iw_samples`` (K of the
    importance-weighted NLL, ``evaluation.iw_samples``; 0 there: ELBO only), ``max_images``
    (the first N images of the split; ``evaluation.max_images``, else all), ``batch_size``
    (``evaluation.batch_size``), ``seed`` (``training.seed``, which the run's evaluation
    draws from), and for FID ``fid_samples`` and ``fid_weights`` (``evaluation.fid_num_samples``
    and ``fid_weights_path``; the reference statistics are cached as the run caches them).
    ``device``: ``auto`` (a GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``.
    ``progress``: a progress bar (stderr) over the images scored.
    """
    from genzoo.engine.config import EvalConfig
    from genzoo.engine.devices import resolve_device
    from genzoo.engine.distributed import DistContext
    from genzoo.engine.evaluator import evaluate

    _check_options(split, iw_samples, max_images, batch_size, fid_samples, device)
    run_dir = Path(run_dir)
    paths = RunPaths(run_dir)
    config = read_run_config(run_dir)
    where = f"{paths.config}: evaluation"
    own = EvalConfig.from_dict(config.get("evaluation") or {}, where=where)
    training = config.get("training") or {}
    seed = int(training.get("seed", config.get("seed", 0))) if seed is None else seed
    try:
        target = resolve_device(device)
    except ConfigError as exc:
        raise ConfigError(f"--device {device}: {exc}") from exc
    load_experiment_plugins(run_dir)  # the dataset's plugin too
    data_spec = _dataset_spec(config, paths)
    dataset = data_spec.build("dataset", get_host().registry)
    data = dataset.split(split)
    available = len(data)
    n = max_images if max_images is not None else min(own.max_images or available, available)
    if not 1 <= n <= available:
        raise ConfigError(
            f"--max-images {n}: expected 1 to {available} (the {split} split of {data_spec.key} has "
            f"{available} images)"
        )
    k = own.iw_samples if iw_samples is None else iw_samples
    settings = own.replace(
        iw_samples=k,
        max_images=n,
        batch_size=batch_size or own.batch_size,
        num_samples=0,
        num_reconstructions=0,
        speed_batches=0,
        fid=fid,
        fid_num_samples=fid_samples or own.fid_num_samples,
        fid_weights_path=fid_weights or own.fid_weights_path,
    )
    if fid:
        _check_fid(settings.fid_weights_path, "--fid-weights" if fid_weights else f"{where}.fid_weights_path")
    reference = dataset.split(settings.fid_reference_split) if fid else None
    model, checkpoint = load_run_weights(run_dir, target)  # after the checks: a checkpoint may be large
    if training.get("channels_last"):  # the kernels the run's evaluation ran
        model.to(memory_format=torch.channels_last)
    if progress:
        data = _Counted(data, n, f"scoring {split}")
        if reference is not None:
            reference = _Counted(reference, len(reference), f"FID reference ({settings.fid_reference_split})")
    if fid:
        print(
            f"FID: {settings.fid_num_samples} samples at T={settings.fid_temperature:g} against the "
            f"{settings.fid_reference_split} split",
            file=sys.stderr,
        )
    try:
        scores = evaluate(
            model,
            data,
            settings,
            device=target,
            reference_data=reference,
            dataset_name=json.dumps(data_spec.to_config(), sort_keys=True, default=str),
            seed=seed,
            ctx=DistContext(),  # one process: a WORLD_SIZE in the environment is not this command's
        )
    finally:
        for counted in (data, reference):
            if isinstance(counted, _Counted):
                counted.close()
    record = _record(run_dir, config, checkpoint, settings, split, seed, target, scores)
    out = new_file(paths.evaluation(split, k))  # after the scores: no empty file left on errors
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    return record, out


def _check_options(
    split: str,
    iw_samples: int | None,
    max_images: int | None,
    batch_size: int | None,
    fid_samples: int | None,
    device: str,
) -> None:
    if split not in SPLITS:
        raise ConfigError(f"--split {split}: expected one of {', '.join(SPLITS)}")
    if iw_samples is not None and iw_samples < 1:
        raise ConfigError(f"--iw-samples {iw_samples}: expected K >= 1 importance samples per image")
    if max_images is not None and max_images < 1:
        raise ConfigError(f"--max-images {max_images}: expected at least 1 image")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: expected at least 1 image per batch")
    if fid_samples is not None and fid_samples < 2:
        raise ConfigError(f"--fid-samples {fid_samples}: expected at least 2 (a covariance)")
    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
        raise ConfigError(f"--device {device}: expected auto, cpu, cuda or cuda:N")


def _check_fid(weights: str | None, name: str) -> None:
    """What FID needs, checked before the likelihood figures, which may take hours (K = 1000)."""
    import importlib.util

    if importlib.util.find_spec("torch_fidelity") is None:
        raise ConfigError("--fid needs torch-fidelity; install the extra with: pip install 'genzoo[fid]'")
    if weights is not None and not Path(weights).is_file():
        raise ConfigError(f"{name} {weights}: no such file (expected torch-fidelity's Inception weights)")


def _dataset_spec(config: dict[str, Any], paths: RunPaths) -> ComponentSpec:
    try:
        return ComponentSpec.parse(config["data"]["dataset"], where=f"{paths.config}: data.dataset")
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{paths.config}: no data.dataset (unreadable run config)") from exc


def _record(
    run_dir: Path,
    config: dict[str, Any],
    checkpoint: RunCheckpoint,
    settings: Any,
    split: str,
    seed: int,
    device: torch.device,
    scores: dict[str, Any],
) -> dict[str, Any]:
    """The JSON written: what was scored, how, and the figures (``metrics``: those of the run's
    ``results.json`` without their ``test_`` prefix, whatever the split)."""
    metrics = {k.removeprefix("test_"): v for k, v in scores.items() if k.startswith("test_")}
    if "fid" in scores:
        metrics["fid"] = scores["fid"]
    record: dict[str, Any] = {
        "run_dir": str(run_dir.resolve()),
        "run": f"{config.get('name')}/seed{config.get('seed')}",
        "checkpoint": {
            "path": str(checkpoint.path.resolve()),
            "step": checkpoint.step,
            "steps": (config.get("training") or {}).get("steps"),
            "status": checkpoint.status,
            "images_seen": checkpoint.images_seen,
            "genzoo_version": checkpoint.genzoo_version,
        },
        "weights": checkpoint.weights,
        "ema_decay": checkpoint.ema_decay,
        "split": split,
        "num_images": metrics.get("num_images"),
        "iw_samples": settings.iw_samples,
        "batch_size": settings.batch_size,
        "iw_batch_size": settings.iw_batch_size,
        "seed": seed,
        "device": str(device),
        "params": scores.get("params"),
        "genzoo_version": __version__,
        "software": software(),
        "metrics": metrics,
    }
    if "fid" in scores:
        record["fid"] = {
            "num_samples": settings.fid_num_samples,
            "temperature": settings.fid_temperature,
            "reference_split": settings.fid_reference_split,
        }
    return record


def format_evaluation(record: dict[str, Any]) -> str:
    """The record as a short table for the terminal."""
    ckpt = record["checkpoint"]
    of = f" of {ckpt['steps']}" if ckpt.get("steps") else ""
    status = _STATUS.get(ckpt["status"], ckpt["status"])
    weights = f"EMA (decay {record['ema_decay']:g})" if record["weights"] == "ema" else "raw"
    m = record["metrics"]
    lines = [
        f"run:        {record['run_dir']}",
        f"checkpoint: step {ckpt['step']}{of}, {status}",
        f"weights:    {weights}",
        f"scored:     {record['num_images']} images of the {record['split']} split, batch size "
        f"{record['batch_size']}, seed {record['seed']}, on {record['device']}",
        "",
        f"{'':16}{'nats/image':>12}{'bits/dim':>10}",
        f"{'ELBO':16}{m['nats_elbo']:>12.4f}{m['bpd_elbo']:>10.4f}",
    ]
    if "nats_iw" in m:
        lines.append(
            f"{'IW NLL (K=' + str(record['iw_samples']) + ')':16}{m['nats_iw']:>12.4f}{m['bpd_iw']:>10.4f}"
        )
    else:
        lines.append(
            "IW NLL          not measured (the run's evaluation.iw_samples is 0; pass --iw-samples K)"
        )
    if "fid" in m:
        fid = record["fid"]
        lines.append(
            f"{'FID':16}{m['fid']:>12.4f}  ({fid['num_samples']} samples at T={fid['temperature']:g}, "
            f"reference: {fid['reference_split']} split)"
        )
    return "\n".join(lines)


class _Counted(Dataset):
    """A split whose reads advance a progress bar (tqdm, stderr), opened at the first read:
    the evaluation reads each image once, just before the batch that holds it is scored."""

    def __init__(self, data: Dataset, total: int, description: str) -> None:
        self.data, self.total, self.description = data, total, description
        self._bar: Any = None

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=self.description, unit="img", file=sys.stderr)
        self._bar.update(1)
        return self.data[index]

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def progress_wanted(no_progress: bool) -> bool:
    """A progress bar unless asked not to, or stderr is not a terminal (a log file, a pipe)."""
    return not no_progress and sys.stderr.isatty()
