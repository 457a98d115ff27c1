"""A diagonal Gaussian with the handful of exact operations latent groups need."""

from __future__ import annotations

import math

import torch

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def check_temperature(temperature: float) -> None:
    """Refuse a sampling temperature that is not a number >= 0 (0 gives the most likely value)."""
    if not temperature >= 0:
        raise ValueError(f"temperature={temperature!r}; expected a number >= 0")


def normal_noise(like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise of ``like``'s shape, dtype and device, drawn in logical (row-major)
    element order: a seed gives the same noise whatever ``like``'s memory format
    (``torch.randn_like`` follows the strides, so channels_last would change every sample)."""
    return torch.randn(like.shape, dtype=like.dtype, device=like.device)


def uniform_noise(like: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) noise as :func:`normal_noise`: independent of ``like``'s memory format."""
    return torch.rand(like.shape, dtype=like.dtype, device=like.device)


class DiagonalNormal:
    """N(mu, diag(sigma^2)), elementwise; ``sigma`` must be positive."""

    def __init__(self, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        self.mu = mu
        self.sigma = sigma

    @property
    def mean(self) -> torch.Tensor:
        return self.mu

    def sample(self, temperature: float = 1.0) -> torch.Tensor:
        """A reparameterized sample; ``temperature`` multiplies sigma."""
        return self.mu + temperature * self.sigma * normal_noise(self.mu)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Elementwise log-density."""
        scaled = (z - self.mu) / self.sigma
        return -0.5 * scaled * scaled - HALF_LOG_2PI - torch.log(self.sigma)

    def kl(self, other: DiagonalNormal) -> torch.Tensor:
        """Elementwise KL(self || other), closed form."""
        term1 = (self.mu - other.mu) / other.sigma
        ratio = self.sigma / other.sigma
        return 0.5 * (term1 * term1 + ratio * ratio) - 0.5 - torch.log(ratio)
