"""``genzoo reconstruct`` and ``genzoo interpolate``: image grids that look into a trained run's
latent groups, drawn through :meth:`genzoo.Hierarchy.encode` and :meth:`~genzoo.Hierarchy.decode`.

- Reconstructions (:func:`reconstruct_run`), one column per input: the inputs; their full
  reconstructions (the likelihood's mean at one posterior draw, as the run's
  ``reconstructions.png``); then NVAE's figure (Vahdat & Kautz 2020): for each ``k``, the same
  posterior draw of the top ``k`` groups and the rest drawn from the prior at the temperature,
  which shows what the top of the hierarchy holds.
- Interpolation (:func:`interpolate_run`), one row: image A, the frames, image B. Each frame is
  linear in each group's standardized latent (``Encoding.eps``) between A's and B's; with
  ``groups=K`` only the top K groups are interpolated and the others drawn from the prior once,
  the same standardized draw in every frame.
- Traversal (``interpolate_run(traverse=G)``), one row per image: the image, then its latents
  with group ``G``'s standardized latent moved along one seeded direction (unit root mean
  square), from ``-span`` to ``span``; every other group keeps the image's own standardized
  latent.

Every draw starts from ``seed`` (the run's seed unless given), so a grid can be redrawn. Prior
draws run after NVAE's BatchNorm readjustment at the temperature, as ``genzoo sample``'s do
(:func:`genzoo.engine.readjusted_batchnorm`, the run's ``evaluation.bn_readjust*`` settings):
the images are encoded first, with the checkpoint's statistics, and only the rows that draw
from the prior are decoded with the readjusted ones (the readjustment resets every BatchNorm,
the encoder's included). Grids are written under new names in the run folder
(:func:`genzoo.io.run_layout.new_file`), or to ``out``, which must not exist.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from einops import rearrange

from genzoo.errors import ConfigError
from genzoo.experiment.trained.inputs import AS_GIVEN, InputOptions, load_inputs
from genzoo.interfaces.dataset import ImageDataset
from genzoo.interfaces.hierarchy import Hierarchy
from genzoo.io.atomic import atomic_write_bytes
from genzoo.io.run_layout import RunPaths, new_file
from genzoo.plugin.component_spec import ComponentSpec
from genzoo.plugin.discovery import get_host


def default_keep_groups(num_groups: int) -> list[int]:
    """1, 2, 4 ... below ``num_groups``: the rows of NVAE's figure for a hierarchy that deep."""
    counts, k = [], 1
    while k < num_groups:
        counts.append(k)
        k *= 2
    return counts


def reconstruct_run(
    run_dir: str | Path,
    images: Sequence[str],
    *,
    keep_groups: Sequence[int] | None = None,
    temperature: float = 1.0,
    out: str | Path | None = None,
    seed: int | None = None,
    device: str = "cpu",
    readjust_bn: bool | None = None,
    inputs: InputOptions = AS_GIVEN,
) -> Path:
    """Write the reconstruction grid of ``images`` (files, or ``<split>:<index>`` of the run's
    dataset; see the module docstring) and return its path.

    :param keep_groups: the ``k`` of each row that keeps the posterior of the top ``k`` groups
        (0 to the number of groups; default 1, 2, 4 ... below it).
    :param temperature: of the prior draws of the other groups.
    """
    if not images:
        raise ConfigError("genzoo reconstruct: name at least one image (a file, or e.g. test:12)")
    _check_options(temperature, out)
    run = _TrainedRun.open(run_dir, device, seed, readjust_bn)
    model, num_groups = run.model, len(run.model.groups)
    counts = default_keep_groups(num_groups) if keep_groups is None else list(keep_groups)
    for k in counts:
        if not 0 <= k <= num_groups:
            raise ConfigError(
                f"--keep-groups {k}: the model has {_groups(num_groups)}; expected counts from 0 "
                f"to {num_groups}"
            )
    with run.seeded():
        x = run.inputs(images, inputs)
        code = model.encode(x)
        full = model.likelihood.mean(code.params)
        rows = [x, full]
        with run.prior_draws(temperature, any(k < num_groups for k in counts)):
            for k in counts:
                if k == num_groups:
                    rows.append(full)
                    continue
                params = model.decode(
                    code.z[:k], standardized=False, temperature=temperature, num_samples=len(x)
                )
                rows.append(model.likelihood.mean(params))
    return run.write(torch.cat(rows), nrow=len(x), kind="reconstructions", out=out)


def interpolate_run(
    run_dir: str | Path,
    a: str,
    b: str | None = None,
    *,
    steps: int = 8,
    groups: int | None = None,
    traverse: int | None = None,
    span: float = 2.0,
    temperature: float = 1.0,
    out: str | Path | None = None,
    seed: int | None = None,
    device: str = "cpu",
    readjust_bn: bool | None = None,
    inputs: InputOptions = AS_GIVEN,
) -> Path:
    """Write an interpolation between images ``a`` and ``b``, or with ``traverse=G`` a
    traversal of group ``G`` (0 is the top group) for each image given; return the path.

    :param steps: frames of the interpolation or traversal (at least 2).
    :param groups: interpolate the top ``groups`` groups only (default: all).
    :param span: a traversal moves the group's standardized latent from ``-span`` to ``span``.
    :param temperature: of the prior draws of the groups not interpolated.
    """
    if not (isinstance(steps, int) and steps >= 2):
        raise ConfigError(f"--steps {steps}: expected at least 2 frames")
    if traverse is None and b is None:
        raise ConfigError("genzoo interpolate: name two images A B (or one with --traverse GROUP)")
    if traverse is not None and groups is not None:
        raise ConfigError(
            "--groups chooses what an interpolation interpolates; a traversal (--traverse) keeps each "
            "image's own latents in every group but the one it moves"
        )
    if not span > 0:
        raise ConfigError(f"--span {span}: expected a number > 0")
    _check_options(temperature, out)
    run = _TrainedRun.open(run_dir, device, seed, readjust_bn)
    num_groups = len(run.model.groups)
    if groups is not None and not 1 <= groups <= num_groups:
        raise ConfigError(
            f"--groups {groups}: the model has {_groups(num_groups)}; expected 1 to {num_groups}"
        )
    if traverse is not None and not 0 <= traverse < num_groups:
        raise ConfigError(
            f"--traverse {traverse}: the model has {_groups(num_groups)}; expected a group index "
            f"from 0 (the top group) to {num_groups - 1}"
        )
    with run.seeded():
        x = run.inputs([a] if b is None else [a, b], inputs)
        if traverse is None:
            frames = _interpolation(run, x, steps, num_groups if groups is None else groups, temperature)
            grid, nrow, kind = torch.cat([x[:1], frames, x[1:]]), steps + 2, "interpolation"
        else:
            rows = [
                torch.cat([x[i : i + 1], frames])
                for i, frames in enumerate(_traversal(run, x, steps, traverse, span))
            ]
            grid, nrow, kind = torch.cat(rows), steps + 1, "traversal"
    return run.write(grid, nrow=nrow, kind=kind, out=out)


def _interpolation(
    run: _TrainedRun, x: torch.Tensor, steps: int, top: int, temperature: float
) -> torch.Tensor:
    """``steps`` frames from ``x[0]`` to ``x[1]``, linear in the top ``top`` groups' standardized
    latents; the groups below share one prior draw at ``temperature``."""
    model = run.model
    code = model.encode(x)
    weights = rearrange(torch.linspace(0, 1, steps, device=x.device), "s -> s 1 1 1")
    latents = []
    for i, eps in enumerate(code.eps):
        if i < top:
            latents.append((1 - weights) * eps[:1] + weights * eps[1:])
        else:
            shared = temperature * torch.randn(eps.shape[1:], dtype=eps.dtype, device=eps.device)
            latents.append(shared.expand(steps, *eps.shape[1:]))
    with run.prior_draws(temperature, top < len(code.eps)):
        return model.likelihood.mean(model.decode(latents))


def _traversal(
    run: _TrainedRun, x: torch.Tensor, steps: int, group: int, span: float
) -> Iterator[torch.Tensor]:
    """For each image, ``steps`` frames that move ``group``'s standardized latent along one seeded
    direction; the other groups keep the image's own standardized latents."""
    model = run.model
    code = model.encode(x)
    shape = code.eps[group].shape[1:]
    direction = torch.randn(shape, dtype=code.eps[group].dtype, device=x.device)
    direction = direction / direction.square().mean().sqrt()
    offsets = rearrange(torch.linspace(-span, span, steps, device=x.device), "s -> s 1 1 1")
    for i in range(len(x)):
        latents = [eps[i : i + 1].expand(steps, *eps.shape[1:]) for eps in code.eps]
        latents[group] = code.eps[group][i] + offsets * direction
        yield model.likelihood.mean(model.decode(latents))


def _groups(count: int) -> str:
    return f"{count} latent group{'' if count == 1 else 's'}"


def _check_options(temperature: float, out: str | Path | None) -> None:
    if not temperature > 0:
        raise ConfigError(f"--temperature {temperature}: expected a number > 0")
    if out is not None and Path(out).exists():
        raise ConfigError(f"--out {out}: the file exists; genzoo never overwrites it, name another file")


@dataclass
class _TrainedRun:
    """A run folder's model, config and the settings its grids are drawn with."""

    dir: Path
    model: Hierarchy
    config: dict[str, Any]
    seed: int
    readjust: tuple[bool, int, int]  # (on, iterations, batch size)

    @classmethod
    def open(
        cls, run_dir: str | Path, device: str, seed: int | None, readjust_bn: bool | None
    ) -> _TrainedRun:
        from genzoo.engine import EvalConfig
        from genzoo.experiment.report.sampling import load_run_model

        run_dir = Path(run_dir)
        model = load_run_model(run_dir, device)  # checks that run_dir is a trained run's folder
        paths = RunPaths(run_dir)
        config = yaml.safe_load(paths.config.read_text())
        evaluation = EvalConfig.from_dict(config.get("evaluation") or {}, where=f"{paths.config}: evaluation")
        training = config.get("training") or {}
        if seed is None:
            seed = int(training.get("seed", config.get("seed", 0)))
        on = evaluation.bn_readjust if readjust_bn is None else readjust_bn
        return cls(
            run_dir,
            model,
            config,
            seed,
            (on, evaluation.bn_readjust_iters, evaluation.bn_readjust_batch_size),
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @contextlib.contextmanager
    def seeded(self) -> Iterator[None]:
        """Draws from a generator forked and seeded with the run's seed, without gradients."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(self.seed)
            yield

    def prior_draws(self, temperature: float, needed: bool) -> contextlib.AbstractContextManager[Any]:
        """BatchNorm readjusted at ``temperature`` for decoding prior draws (when ``needed`` and
        the run readjusts), as ``genzoo sample`` draws."""
        from genzoo.engine import readjusted_batchnorm

        on, iterations, batch_size = self.readjust
        if not (needed and on):
            return contextlib.nullcontext()
        return readjusted_batchnorm(
            self.model, temperature=temperature, iterations=iterations, batch_size=batch_size
        )

    def inputs(self, specs: Sequence[str], options: InputOptions) -> torch.Tensor:
        model = self.model
        x = load_inputs(
            specs,
            image_shape=model.image_shape,
            num_bits=model.likelihood.num_bits,
            dataset=self._dataset,
            options=options,
        )
        return x.to(self.device)

    def _dataset(self) -> ImageDataset:
        where = f"{RunPaths(self.dir).config}: data.dataset"
        try:
            spec = ComponentSpec.parse(self.config["data"]["dataset"], where=where)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{where}: missing or unreadable ({exc}); name image files instead") from exc
        return spec.build("dataset", get_host().registry)

    def write(self, images: torch.Tensor, *, nrow: int, kind: str, out: str | Path | None) -> Path:
        """``images`` as a PNG grid of ``nrow`` a row, to ``out`` or a new ``<kind>_cli.png``."""
        path = Path(out) if out is not None else new_file(RunPaths(self.dir).cli_grid(kind))
        return atomic_write_bytes(path, grid_png(images, nrow))


GRID_PADDING = 2
"""Black pixels around and between the images of a grid (as ``torchvision``'s ``save_image``)."""


def grid_png(images: torch.Tensor, nrow: int) -> bytes:
    """Images ``(N, C, H, W)`` in ``[0, 1]`` (``N`` a multiple of ``nrow``) as the bytes of a PNG
    grid, ``nrow`` images a row: grey for one channel, RGB for three. Drawn with PIL rather than
    ``torchvision.utils``, whose import costs seconds (it imports ``torch._dynamo``)."""
    from PIL import Image

    n, c, h, w = images.shape
    pad = GRID_PADDING
    pixels = images.float().cpu().mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    tiles = torch.nn.functional.pad(pixels, (0, pad, 0, pad))
    grid = rearrange(tiles, "(r k) c h w -> (r h) (k w) c", k=nrow)
    grid = torch.nn.functional.pad(grid, (0, 0, pad, 0, pad, 0)).numpy()
    image = Image.fromarray(grid[:, :, 0] if c == 1 else grid, mode="L" if c == 1 else "RGB")
    buf = io.BytesIO()
    image.save(buf, format="png")
    return buf.getvalue()
