"""``genzoo sample``: rebuild a trained run's model from its folder and draw a sample grid, as the
run's own evaluation draws its ``samples_t<T>.png``: BatchNorm statistics readjusted from the
model's own samples first (NVAE, App. B: without it, samples of a model with BatchNorm are
mostly noise), the same seed, the same chunks."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from genzoo import __version__
from genzoo.errors import ConfigError
from genzoo.experiment.run.outputs import run_invocation
from genzoo.interfaces.hierarchy import Hierarchy
from genzoo.io.run_layout import RunPaths, new_file
from genzoo.plugin.component_spec import ComponentSpec
from genzoo.plugin.discovery import PluginHost, get_host


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The run folder's ``config.yaml`` (the resolved run config), checked to be a trained run's."""
    config_path, ckpt_path = RunPaths(run_dir).config, RunPaths(run_dir).checkpoint
    if not config_path.exists() or not ckpt_path.exists():
        raise ConfigError(
            f"{run_dir}: not a trained run folder (expected {config_path.name} and {ckpt_path.name})"
        )
    try:
        config = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path}: unreadable run config ({exc})") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{config_path}: unreadable run config (not a mapping)")
    return config


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved run config (``config.yaml``) of a trained run's folder; a
    :class:`~genzoo.ConfigError` naming the folder when it is not one."""
    return _run_config(Path(run_dir))


@dataclass(frozen=True)
class RunCheckpoint:
    """What a run's checkpoint says about the weights :func:`load_run_weights` loaded from it."""

    path: Path
    step: int
    status: str
    """``finished``, ``interrupted`` (stopped by a signal: the checkpoint of the step it stopped
    at) or ``running`` (a periodic checkpoint: the run was killed, or is still training)."""
    weights: str
    """``ema`` (the exponential moving average the run kept, which its evaluation and samples
    use) or ``raw`` (the optimizer's weights: the run kept no EMA)."""
    ema_decay: float | None
    images_seen: int
    """Training images seen at ``step``, all processes together."""
    genzoo_version: str | None
    """The genzoo that wrote the checkpoint (None: written before genzoo recorded it)."""

    def describe_weights(self) -> str:
        return f"EMA (decay {self.ema_decay:g})" if self.weights == "ema" else "raw"


def build_hierarchy(
    hierarchy: Any, image_shape: Any, num_bits: Any, *, where: str, host: PluginHost | None = None
) -> Hierarchy:
    """The hierarchy of a resolved spec (``{key: ..., options...}``) for images of
    ``image_shape`` and ``num_bits`` bits, built from the registry as the run built it
    (``num_bits`` passed to hierarchies that accept it, unless the spec sets it); ``where``
    names the file in errors."""
    host = host or get_host()
    spec = ComponentSpec.parse(hierarchy, where=f"{where}: hierarchy")
    if not (
        isinstance(image_shape, (list, tuple))
        and len(image_shape) == 3
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in image_shape)
    ):
        raise ConfigError(f"{where}: image_shape {image_shape!r}; expected [channels, height, width]")
    extra: dict[str, Any] = {"image_shape": tuple(image_shape)}
    if "num_bits" in spec.entry("hierarchy", host.registry).accepts and "num_bits" not in spec.options:
        extra["num_bits"] = 8 if num_bits is None else num_bits
    return spec.build("hierarchy", host.registry, **extra)


def load_experiment_plugins(run_dir: Path, host: PluginHost | None = None) -> None:
    """Load the plugin modules the run's experiment listed (``plugins:`` in its file, recorded
    in ``OUT/<experiment>/experiment.json``), as ``genzoo report`` does: the run's components
    may come from them."""
    invocation = run_invocation(run_dir)  # the run is OUT/<experiment>/runs/<run>/seed<k>
    modules = (invocation or {}).get("plugins") or []
    host = host or get_host()
    for module in modules:
        host.load_module(module, source="experiment")


def load_run_weights(run_dir: str | Path, device: str = "cpu") -> tuple[Hierarchy, RunCheckpoint]:
    """The run's hierarchy with the weights of its latest checkpoint (EMA weights when the run
    kept an EMA), in eval mode, and what the checkpoint says about them.

    The checkpoint must be of the format this genzoo reads (``CHECKPOINT_FORMAT``); one written
    by another genzoo version of the same format is read, with a warning. Errors
    (:class:`~genzoo.engine.checkpoint.CheckpointError`, :class:`~genzoo.ConfigError`) name the
    file and what was expected: a folder that is not a run's, a damaged checkpoint, one of
    another format, weights that do not fit the model its ``config.yaml`` describes."""
    from genzoo.engine.checkpoint import CheckpointError, load_checkpoint
    from genzoo.engine.run_state import CHECKPOINT_FORMAT

    run_dir = Path(run_dir)
    config_path, ckpt_path = RunPaths(run_dir).config, RunPaths(run_dir).checkpoint
    config = read_run_config(run_dir)
    load_experiment_plugins(run_dir)
    try:
        model = build_hierarchy(
            config["hierarchy"], config["image_shape"], config.get("num_bits", 8), where=str(config_path)
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{config_path}: unreadable run config ({exc})") from exc
    state = load_checkpoint(ckpt_path)  # CheckpointError when damaged, truncated or not a checkpoint
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{ckpt_path}: not a genzoo checkpoint (no model weights in it)")
    written_by = state.get("genzoo_version")
    by = f"genzoo {written_by}" if written_by else "a genzoo that did not record its version"
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{ckpt_path}: checkpoint format {state.get('format')!r}, written by {by}; this genzoo "
            f"({__version__}) reads format {CHECKPOINT_FORMAT}. Use the genzoo that wrote it."
        )
    if written_by and written_by != __version__:
        warnings.warn(
            f"{ckpt_path} was written by genzoo {written_by}, this is genzoo {__version__} (the same "
            f"checkpoint format {CHECKPOINT_FORMAT}): read as it is",
            stacklevel=2,
        )
    weights, kind = state["model"], "raw"
    if state.get("ema"):  # torch.optim.swa_utils.AveragedModel keeps the copy under "module."
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
        kind = "ema"
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(
            f"{ckpt_path}: the checkpoint (written by {by}) does not fit the model in {config_path}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    trained = state.get("config") if isinstance(state.get("config"), dict) else {}
    step = int(state.get("step", 0))
    info = RunCheckpoint(
        path=ckpt_path,
        step=step,
        status=str(state.get("status", "running")),
        weights=kind,
        ema_decay=trained.get("ema_decay") if kind == "ema" else None,
        images_seen=step * int(trained.get("batch_size", 0)) * int(state.get("world_size", 1)),
        genzoo_version=written_by,
    )
    return model.to(device).eval(), info


def load_run_model(run_dir: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The run's hierarchy with the weights of its latest checkpoint (EMA weights when the run
    kept an EMA), in eval mode (:func:`load_run_weights` without what the checkpoint says)."""
    return load_run_weights(run_dir, device)[0]


def sample_run(
    run_dir: str | Path,
    *,
    temperature: float = 1.0,
    num_samples: int | None = None,
    out: str | Path | None = None,
    seed: int | None = None,
    device: str = "cpu",
    readjust_bn: bool | None = None,
    bn_readjust_iters: int | None = None,
    bn_readjust_batch_size: int | None = None,
) -> Path:
    """Write a grid of ``num_samples`` samples at ``temperature``; returns the PNG's path.

    The samples are drawn as the run's evaluation draws its grids (:func:`genzoo.engine.sample_images`),
    with what is not given taken from the run's ``config.yaml``: ``seed`` (the run's, which
    its evaluation draws from), ``num_samples`` (``evaluation.num_samples``; 64 when the run drew
    none), ``readjust_bn`` (``evaluation.bn_readjust``: BatchNorm statistics re-estimated from
    the model's own samples, for any hierarchy with BatchNorm layers), ``bn_readjust_iters`` and
    ``bn_readjust_batch_size`` (the same keys), and samples in chunks of ``evaluation.batch_size``.
    So at one of the run's temperatures, on the device it was evaluated on, the defaults redraw
    its ``samples_t<T>.png`` exactly (laid out alike: :func:`genzoo.engine.evaluator.write_sample_grid`).
    """
    from genzoo.engine import EvalConfig, sample_images
    from genzoo.engine.evaluator import write_sample_grid

    if not temperature > 0:
        raise ConfigError(f"--temperature {temperature}: expected a number > 0")
    if num_samples is not None and num_samples < 1:
        raise ConfigError(f"-n {num_samples}: expected at least 1 sample")
    if bn_readjust_iters is not None and bn_readjust_iters < 0:
        raise ConfigError(f"--bn-readjust-iters {bn_readjust_iters}: expected a number >= 0")
    if bn_readjust_batch_size is not None and bn_readjust_batch_size < 2:
        raise ConfigError(
            f"--bn-readjust-batch-size {bn_readjust_batch_size}: expected at least 2 (batch statistics)"
        )
    if out is not None and Path(out).exists():
        raise ConfigError(f"--out {out}: the file exists; genzoo sample never overwrites, name another file")
    run_dir = Path(run_dir)
    config = _run_config(run_dir)
    where = f"{RunPaths(run_dir).config}: evaluation"
    evaluation = EvalConfig.from_dict(config.get("evaluation") or {}, where=where)
    changes = {
        "bn_readjust": readjust_bn,
        "bn_readjust_iters": bn_readjust_iters,
        "bn_readjust_batch_size": bn_readjust_batch_size,
    }
    evaluation = evaluation.replace(**{k: v for k, v in changes.items() if v is not None})
    training = config.get("training") or {}
    if seed is None:
        seed = int(training.get("seed", config.get("seed", 0)))
    model = load_run_model(run_dir, device)
    if training.get("channels_last"):  # the kernels the evaluation ran, so the draws match
        model.to(memory_format=torch.channels_last)
    images = sample_images(
        model,
        num_samples or evaluation.num_samples or 64,
        [temperature],
        batch_size=evaluation.batch_size,
        bn_readjust=evaluation.bn_readjust,
        bn_readjust_iters=evaluation.bn_readjust_iters,
        bn_readjust_batch_size=evaluation.bn_readjust_batch_size,
        seed=seed,
    )[float(temperature)]
    return write_sample_grid(
        images, Path(out) if out else new_file(RunPaths(run_dir).cli_samples(temperature))
    )
