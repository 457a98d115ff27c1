"""``genzoo sample``: rebuild a trained run's model from its folder and draw a sample grid."""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch
import yaml

from genzoo.atomic import atomic_write_bytes
from genzoo.discovery import get_host
from genzoo.errors import ConfigError, GenzooError
from genzoo.layout import RunPaths
from genzoo.spec import ComponentSpec


def load_run_model(run_dir: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The run's hierarchy with the weights of its latest checkpoint (EMA weights when the run
    kept an EMA), in eval mode."""
    from genzoo.engine import load_checkpoint

    run_dir = Path(run_dir)
    config_path, ckpt_path = RunPaths(run_dir).config, RunPaths(run_dir).checkpoint
    if not config_path.exists() or not ckpt_path.exists():
        raise ConfigError(
            f"{run_dir}: not a trained run folder (expected {config_path.name} and {ckpt_path.name})"
        )
    try:
        config = yaml.safe_load(config_path.read_text())
        spec = ComponentSpec.parse(config["hierarchy"], where=f"{config_path}: hierarchy")
        image_shape = tuple(config["image_shape"])
    except (yaml.YAMLError, KeyError, TypeError) as exc:
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
    num_samples: int = 64,
    out: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    readjust_bn: bool = False,
) -> Path:
    """Write a grid of ``num_samples`` samples at ``temperature``; returns the PNG's path."""
    from torchvision.utils import save_image

    if not temperature > 0:
        raise ConfigError(f"--temperature {temperature}: expected a number > 0")
    if num_samples < 1:
        raise ConfigError(f"-n {num_samples}: expected at least 1 sample")
    model = load_run_model(run_dir, device)
    torch.manual_seed(seed)
    if readjust_bn:
        from genzoo.engine import readjusted_batchnorm

        with readjusted_batchnorm(model, temperature=temperature):
            images = model.sample(num_samples, temperature)
    else:
        images = model.sample(num_samples, temperature)
    out_path = Path(out) if out else RunPaths(Path(run_dir)).cli_samples(temperature)
    buf = io.BytesIO()
    save_image(images.float().cpu(), buf, format="png", nrow=max(1, int(math.sqrt(num_samples))), padding=2)
    atomic_write_bytes(out_path, buf.getvalue())
    return out_path
