"""NVAE's official models at paper scale, as the paper-scale benchmarks measure them: the
CIFAR-10 architecture (``nvae.hierarchy``'s defaults) and the MNIST one of experiments/mnist.yaml,
built with genzoo's cells or the naive reference cells, and random images to train them on."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import yaml

import genzoo
from benchmarks.harness import REPO
from genzoo_plugins.nvae.naive_cells import naive_model

CIFAR_PARAMS = 130_852_480
MNIST_PARAMS = 33_363_134  # docs/architectures.md, against the official code
CELLS = {
    "naive": "naive cells (plain modules, NCHW): the reference",
    "default": "genzoo's cells, defaults (fast paths 'auto': plain modules on CUDA)",
    "cpu-paths": "genzoo's cells with fused + channels_last forced on (the CPU defaults)",
    "enc-nchw": "genzoo's cells, the encoder and pre-process cells in NCHW (channels_last off)",
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A hierarchy to measure: ``nvae.hierarchy`` options, the images' bit depth, its batch,
    and the regularizers of its experiment file (``{key: options}``)."""

    name: str
    options: dict[str, Any]
    num_bits: int
    batch: int
    regularizers: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    params: int | None = None  # the count it must have, where known

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.options["image_shape"])


def _variant(path: Path, name: str) -> tuple[dict, dict]:
    spec = yaml.safe_load(path.read_text())
    variant = spec["variants"][name]
    return spec, variant


def _regularizers(variant: dict) -> dict[str, dict[str, Any]]:
    out = {}
    for spec in (variant.get("regularizers") or {}).values():
        spec = {"key": spec} if isinstance(spec, str) else dict(spec)
        out[spec.pop("key")] = spec
    return out


def cifar10() -> ModelSpec:
    """The official CIFAR-10 model: ``nvae.hierarchy``'s defaults (docs/architectures.md)."""
    _, variant = _variant(REPO / "experiments" / "nvae_vs_standard.yaml", "nvae")
    return ModelSpec(
        "cifar10", {"image_shape": (3, 32, 32)}, 8, 32, _regularizers(variant), params=CIFAR_PARAMS
    )


def mnist() -> ModelSpec:
    """The official MNIST model of experiments/mnist.yaml at its ``paper`` profile's batch."""
    spec, variant = _variant(REPO / "experiments" / "mnist.yaml", "nvae")
    options = {k: v for k, v in variant["hierarchy"].items() if k != "key"}
    options["image_shape"] = (1, 28, 28)
    batch = spec["profiles"]["paper"]["training"]["batch_size"]
    return ModelSpec("mnist", options, 1, batch, _regularizers(variant), params=MNIST_PARAMS)


def build_model(spec: ModelSpec, cells: str, device: torch.device, *, seed: int = 0) -> torch.nn.Module:
    """``spec``'s hierarchy with ``cells`` (:data:`CELLS`), its weights drawn on ``device``
    (fast on a GPU; the same weights for every setting of one device)."""
    options = dict(spec.options)
    if cells == "cpu-paths":
        forced = {"key": "nvae.separable_cell", "fused": True, "channels_last": True}
        options["decoder_cell"] = options["postprocess_cell"] = forced
    if cells == "enc-nchw":
        nchw = {"key": "nvae.residual_cell", "channels_last": False}
        options["encoder_cell"] = options["preprocess_cell"] = nchw
    torch.manual_seed(seed)
    with torch.device(device):
        model = genzoo.create("hierarchy", "nvae.hierarchy", **options)
    if cells == "naive":
        model = naive_model(model)
    return model


def random_images(spec: ModelSpec, batch: int, device: torch.device, *, seed: int = 0) -> torch.Tensor:
    """Random 8-bit images in [0, 1] (random binary ones for a 1-bit model)."""
    generator = torch.Generator().manual_seed(seed)
    levels = 2**spec.num_bits
    x = torch.randint(0, levels, (batch, *spec.image_shape), generator=generator).float() / (levels - 1)
    return x.to(device)
