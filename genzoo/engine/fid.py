"""Fréchet Inception Distance (Heusel et al. 2017), with features from a maintained library.

The Inception-v3 network, its TensorFlow-ported weights and the TensorFlow-compatible resize to
299x299 come from ``torch-fidelity`` (the same extractor ``torchmetrics`` wraps), so numbers
are comparable with published FIDs (NVAE reports FID against the training set). Install it with
``pip install genzoo[fid]``. These machines cannot download weights at run time: point
``EvalConfig.fid_weights_path`` at ``weights-inception-2015-12-05-6726825d.pth`` (the file
torch-fidelity downloads) on offline machines.

Reference statistics (mean and covariance of the reference set's features) are cached per
dataset, split, extractor and image count under ``EvalConfig.fid_cache_dir``.

The distance itself, ``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})``, is computed here in
float64 via the symmetric form ``tr((S1^{1/2} S2 S1^{1/2})^{1/2})``, which has the same
eigenvalues as ``S1 S2`` and stays real; the tests check it against ``scipy.linalg.sqrtm``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from genzoo.engine.checkpoint import save_checkpoint
from genzoo.errors import ConfigError

FEATURE_NAME = "inception-v3-compat-2048"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "genzoo" / "fid"

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]
"""Maps uint8 images ``(B, 3, H, W)`` to features ``(B, F)``."""


def frechet_distance(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    """The Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``."""
    mu1, mu2 = mu1.double(), mu2.double()
    sigma1, sigma2 = sigma1.double(), sigma2.double()
    if (
        mu1.shape != mu2.shape
        or mu1.dim() != 1
        or sigma1.shape != sigma2.shape
        or sigma1.shape != (len(mu1),) * 2
    ):
        raise ValueError(
            f"shapes mu1 {tuple(mu1.shape)}, sigma1 {tuple(sigma1.shape)}, mu2 {tuple(mu2.shape)}, "
            f"sigma2 {tuple(sigma2.shape)}; expected (F,) means and (F, F) covariances"
        )
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


class FeatureStatistics:
    """Running mean and (unbiased, as ``numpy.cov``) covariance of feature vectors, in float64."""

    def __init__(self) -> None:
        self.count = 0
        self._sum: torch.Tensor | None = None
        self._outer: torch.Tensor | None = None

    def update(self, features: torch.Tensor) -> None:
        f = features.detach().double().cpu()
        if f.dim() != 2:
            raise ValueError(f"features have shape {tuple(f.shape)}; expected (batch, features)")
        if self._sum is None:
            self._sum = torch.zeros(f.shape[1], dtype=torch.float64)
            self._outer = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
        self._sum += f.sum(0)
        self._outer += f.T @ f
        self.count += f.shape[0]

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, sigma)``; needs at least two feature vectors."""
        if self.count < 2 or self._sum is None or self._outer is None:
            raise ValueError(f"FID statistics need at least 2 images; got {self.count}")
        mu = self._sum / self.count
        sigma = (self._outer - self.count * torch.outer(mu, mu)) / (self.count - 1)
        return mu, sigma


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] to uint8 RGB ``(B, 3, H, W)`` (grey images repeated to 3 channels)."""
    x = (images.float() * 255).round().clamp(0, 255).to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[1] != 3:
        raise ValueError(f"images have {x.shape[1]} channels; FID needs 1 or 3")
    return x


def statistics_of(batches: Iterable[torch.Tensor], extractor: FeatureExtractor, device: torch.device) -> dict:
    """``{"mu", "sigma", "count"}`` of the features of image batches in [0, 1]."""
    stats = FeatureStatistics()
    with torch.no_grad():
        for images in batches:
            stats.update(extractor(to_uint8_rgb(images.to(device))))
    mu, sigma = stats.compute()
    return {"mu": mu, "sigma": sigma, "count": stats.count}


def reference_statistics(
    batches: Callable[[], Iterable[torch.Tensor]],
    extractor: FeatureExtractor,
    device: torch.device,
    *,
    cache_file: str | os.PathLike | None,
    feature_name: str = FEATURE_NAME,
) -> dict:
    """Reference statistics from ``cache_file`` when it holds them for ``feature_name``;
    otherwise computed from ``batches()`` and written there (atomically)."""
    if cache_file is not None and Path(cache_file).exists():
        cached = torch.load(Path(cache_file), map_location="cpu", weights_only=True)
        if cached.get("feature_name") == feature_name:
            return cached
    stats = statistics_of(batches(), extractor, device)
    stats["feature_name"] = feature_name
    if cache_file is not None:
        save_checkpoint(cache_file, stats)
    return stats


def cache_file_for(cache_dir: str | os.PathLike | None, dataset: str, split: str, count: int) -> Path:
    """Where the reference statistics of ``count`` images of ``dataset``/``split`` are cached."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset)
    return Path(cache_dir or DEFAULT_CACHE_DIR) / f"{safe}-{split}-{FEATURE_NAME}-n{count}.pt"


def inception_extractor(weights_path: str | None, device: torch.device) -> FeatureExtractor:
    """torch-fidelity's FID Inception-v3 (2048-d pool features), in eval mode on ``device``."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as exc:
        raise ConfigError(
            "EvalConfig.fid=True needs torch-fidelity; install the extra with: pip install 'genzoo[fid]'"
        ) from exc
    if weights_path is not None and not Path(weights_path).is_file():
        raise ConfigError(f"EvalConfig.fid_weights_path={weights_path!r}: no such file")
    try:
        net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=weights_path
        )
    except Exception as exc:
        raise ConfigError(
            "could not load the FID Inception weights"
            + ("" if weights_path else " (no EvalConfig.fid_weights_path set, and downloading failed)")
            + f": {type(exc).__name__}: {exc}. Put weights-inception-2015-12-05-6726825d.pth on this "
            "machine and set EvalConfig.fid_weights_path to it."
        ) from exc
    net = net.to(device).eval()

    def extract(images: torch.Tensor) -> torch.Tensor:
        (features,) = net(images)
        return features

    return extract


def fid_score(
    generated: Iterable[torch.Tensor],
    reference: Callable[[], Iterable[torch.Tensor]],
    extractor: FeatureExtractor,
    device: torch.device,
    *,
    cache_file: str | os.PathLike | None = None,
) -> float:
    """FID between generated images and a reference set (both batches in [0, 1])."""
    ref = reference_statistics(reference, extractor, device, cache_file=cache_file)
    gen = statistics_of(generated, extractor, device)
    return frechet_distance(gen["mu"], gen["sigma"], ref["mu"], ref["sigma"])
