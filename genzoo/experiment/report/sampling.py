"""``genzoo sample``: rebuild a trained run's model from its folder and draw a sample grid, as the
run's own evaluation draws its ``samples_t<T>.png``: BatchNorm statistics readjusted from the
model's own samples first (NVAE, App. B: without it, samples of a model with BatchNorm are
mostly noise), the same seed, the same chunks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from genzoo.errors import ConfigError, GenzooError
from genzoo.io.run_layout import RunPaths, new_file
from genzoo.plugin.component_spec import ComponentSpec
from genzoo.plugin.discovery import get_host


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


def load_run_model(run_dir: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The run's hierarchy with the weights of its latest checkpoint (EMA weights when the run
    kept an EMA), in eval mode."""
    from genzoo.engine import load_checkpoint

    run_dir = Path(run_dir)
    config_path, ckpt_path = RunPaths(run_dir).config, RunPaths(run_dir).checkpoint
    config = _run_config(run_dir)
    try:
        spec = ComponentSpec.parse(config["hierarchy"], where=f"{config_path}: hierarchy")
        image_shape = tuple(config["image_shape"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{config_path}: unreadable run config ({exc})") from exc
    host = get_host()
    extra = {"image_shape": image_shape}
    if "num_bits" in spec.entry("hierarchy", host.registry).accepts and "num_bits" not in spec.options:
        extra["num_bits"] = config.get("num_bits", 8)
    model = spec.build("hierarchy", host.registry, **extra)
    try:
        state = load_checkpoint(ckpt_path)
    except Exception as exc:
        raise GenzooError(f"{ckpt_path}: cannot read the checkpoint (corrupt or truncated?): {exc}") from exc
    weights = state.get("model")
    if state.get("ema"):  # torch.optim.swa_utils.AveragedModel keeps the copy under "module."
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError) as exc:
        raise GenzooError(
            f"{ckpt_path}: the checkpoint does not fit the model in {config_path}: {exc}"
        ) from exc
    return model.to(device).eval()


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
