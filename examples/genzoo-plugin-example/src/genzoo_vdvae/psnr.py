"""Reconstruction PSNR: how much of an image survives the round trip through the latents.

PSNR = 10 log10(1 / MSE) for images in [0, 1], per image, averaged over the images. A metric of
the ``metric`` kind, built and called from code::

    metric = genzoo.create("metric", "vdvae.reconstruction_psnr")
    metric.compute(model, batches)  # {"vdvae.reconstruction_psnr": 23.4}
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import genzoo
import torch


class ReconstructionPSNR(genzoo.Metric):
    """Mean PSNR (dB) of ``model.reconstruct(x)`` against ``x``.

    :param max_batches: stop after this many batches (``None``: all).
    """

    name = "vdvae.reconstruction_psnr"

    def __init__(self, *, max_batches: int | None = None) -> None:
        if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
            raise ValueError(f"max_batches={max_batches!r}; expected a positive integer or None")
        self.max_batches = max_batches

    @torch.no_grad()
    def compute(self, model: genzoo.Hierarchy, batches: Iterable[torch.Tensor]) -> dict[str, float]:
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        try:
            for i, x in enumerate(batches):
                if self.max_batches is not None and i >= self.max_batches:
                    break
                mse = (model.reconstruct(x) - x).pow(2).flatten(1).mean(1)
                # A perfect reconstruction would be +inf dB; 1e-10 caps it at 100 dB.
                total += (-10.0 * torch.log10(mse.clamp_min(1e-10))).sum().item()
                count += x.shape[0]
        finally:
            model.train(was_training)
        return {self.name: total / count if count else math.nan}


def register(registry: genzoo.Registry) -> None:
    registry.add(
        "metric", "vdvae.reconstruction_psnr", ReconstructionPSNR,
        description="mean PSNR (dB) of deterministic reconstructions",
    )  # fmt: skip
