"""The models and the training step the model-level and scaling benchmarks measure.

A step is the trainer's objective with the KL coefficient at 1 (``mean(sum_g KL_g - log p(x|z))``),
backward, and an Adamax update (NVAE's optimizer); regularizers, gradient clipping and logging
are left out, being the same for every variant.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import yaml

from benchmarks.harness import REPO
from genzoo_plugins.nvae.hierarchy import NVAEHierarchy
from genzoo_plugins.nvae.naive_cells import UnfoldedCell, naive_model, replace_cells

SEPARABLE = "nvae.separable_cell"


def quickstart_options() -> tuple[dict[str, Any], int]:
    """The hierarchy options of the ``nvae`` variant of experiments/quickstart.yaml, and its batch."""
    spec = yaml.safe_load((REPO / "experiments" / "quickstart.yaml").read_text())
    options = {k: v for k, v in spec["variants"]["nvae"]["hierarchy"].items() if k != "key"}
    data = spec["data"]["dataset"]
    options["image_shape"] = (data["channels"], data["image_size"], data["image_size"])
    return options, spec["training"]["batch_size"]


def cifar_options(*, groups: int = 10, size: int = 32) -> dict[str, Any]:
    """A CIFAR-sized NVAE: one latent scale of ``groups`` groups, 32 channels, the rest default."""
    return {
        "image_shape": (3, size, size),
        "num_channels": 32,
        "num_latent_scales": 1,
        "num_groups_per_scale": groups,
    }


KERNEL_OFF = "default without the CPU kernel"
"""The variant whose steps must run under :func:`common.without_cpu_kernels`."""
VARIANTS = (
    "naive cells (NCHW)",
    "fused=False (channels_last only)",
    "default",
    "default + checkpoint=True",
    "default + channels_last model",
    "default without the folded expansion",
    "default without the CPU kernel",
    "separable branches removed (floor)",
)
"""``naive``: every separable cell replaced by benchmarks' naive twin; ``fused=False``: the
package's cells without the fused BN -> Swish -> conv steps; ``default``: the package's cells as
they are; ``checkpoint``: decoder and post-process cells with ``checkpoint: true``;
``channels_last model``: the trainer's ``channels_last: true`` (model and batch in
channels_last, so the encoder cells run in it too); ``without the folded expansion``: the
default cells with BN -> expand -> BN as two fused steps (the ablation of the fold); ``without
the CPU kernel``: the default model, its steps run with ``GENZOO_CPU_KERNELS=0`` (see
:func:`training_step`); ``floor``: every separable cell reduced to
its skip path (not the same model: the rest of the step at no cost for the separable cells, so
naive time / floor time bounds the speedup any separable cell can give the whole step)."""


def build(options: dict[str, Any], variant: str, *, seed: int = 0) -> tuple[NVAEHierarchy, bool]:
    """The model of ``variant`` (same weights for every variant of one seed), and whether its
    input goes in channels_last."""
    options = copy.deepcopy(options)
    if variant == "default + checkpoint=True":
        for key in ("decoder_cell", "postprocess_cell"):
            options[key] = {"key": SEPARABLE, "checkpoint": True}
    if variant == "fused=False (channels_last only)":
        for key in ("decoder_cell", "postprocess_cell"):
            options[key] = {"key": SEPARABLE, "fused": False}
    torch.manual_seed(seed)
    model = NVAEHierarchy(**options)
    if variant == "naive cells (NCHW)":
        return naive_model(model), False
    if variant == "default + channels_last model":
        return model.to(memory_format=torch.channels_last), True
    if variant == "default without the folded expansion":
        return replace_cells(model, UnfoldedCell.from_cell), False
    if variant == "separable branches removed (floor)":
        return replace_cells(model, lambda cell: cell.skip), False
    if variant == KERNEL_OFF:
        return model, False
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}; expected one of {VARIANTS}")
    return model, False


def training_step(
    model: NVAEHierarchy,
    batch: torch.Tensor,
    channels_last: bool,
    *,
    bf16: bool = False,
    compile: bool = False,
) -> Callable[[], None]:
    """One training step of ``model`` on ``batch`` (a closure; see the module docstring), on
    their device; ``bf16`` runs the forward pass under bf16 autocast (the objective is summed
    in fp32), ``compile`` through ``torch.compile``."""
    optimizer = torch.optim.Adamax(model.parameters(), lr=1e-3, eps=1e-3)
    model.train()
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile else model

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = forward(batch)
        loss = (torch.stack(out.kl, dim=1).float().sum(1) - out.log_px.float()).mean()
        loss.backward()
        optimizer.step()

    return step


def images(batch: int, shape: tuple[int, int, int], *, seed: int = 0) -> torch.Tensor:
    """Random 8-bit images in [0, 1] (the step's cost does not depend on the content)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, *shape), generator=generator).float() / 255
