"""A diagonal Gaussian with the handful of exact operations latent groups need."""

from __future__ import annotations

import math

import torch

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


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
        return self.mu + temperature * self.sigma * torch.randn_like(self.mu)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Elementwise log-density."""
        scaled = (z - self.mu) / self.sigma
        return -0.5 * scaled * scaled - HALF_LOG_2PI - torch.log(self.sigma)

    def kl(self, other: DiagonalNormal) -> torch.Tensor:
        """Elementwise KL(self || other), closed form."""
        term1 = (self.mu - other.mu) / other.sigma
        ratio = self.sigma / other.sigma
        return 0.5 * (term1 * term1 + ratio * ratio) - 0.5 - torch.log(ratio)
