"""A tiny two-scale hierarchical VAE and toy data for the engine's tests.

``TinyVAE`` honours the :class:`genzoo.Hierarchy` contract with as little as possible: a 1x8x8
binary image, a top latent group at 2x2 (prior N(0, I)) and a second group at 4x4 whose prior
comes from the decoder state, BatchNorm in both towers (so BN readjustment has something to
do), and a Bernoulli likelihood. It trains in milliseconds per step on one CPU core.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence
from torch.utils.data import Dataset

import genzoo


class BernoulliLikelihood(genzoo.OutputLikelihood):
    """Independent Bernoulli pixels parameterized by logits; lower temperature sharpens them."""

    def __init__(self, *, image_chs: int = 1, num_bits: int = 1) -> None:
        super().__init__(image_chs=image_chs, num_bits=num_bits)

    @property
    def param_chs(self) -> int:
        return self.image_chs

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none").sum((1, 2, 3))

    def sample(self, params: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(params / temperature))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


def _normal(params: torch.Tensor) -> Normal:
    mu, log_sigma = params.chunk(2, dim=1)
    return Normal(mu, F.softplus(log_sigma) + 1e-2)


class TinyVAE(genzoo.Hierarchy):
    """Two latent groups (2x2 and 4x4, ``latent_chs`` channels each) over 1x8x8 images."""

    def __init__(self, *, image_shape=(1, 8, 8), chs: int = 8, latent_chs: int = 2) -> None:
        super().__init__(image_shape=image_shape)
        c = chs
        self.latent_chs = latent_chs
        self.enc1 = nn.Sequential(nn.Conv2d(1, c, 3, 2, 1), nn.BatchNorm2d(c), nn.SiLU())  # 4x4
        self.enc2 = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.SiLU())  # 2x2
        self.q_top = nn.Conv2d(c, 2 * latent_chs, 1)
        self.dec_top = nn.Sequential(nn.Conv2d(latent_chs, c, 3, 1, 1), nn.BatchNorm2d(c), nn.SiLU())
        self.p_low = nn.Conv2d(c, 2 * latent_chs, 1)
        self.q_low = nn.Conv2d(2 * c, 2 * latent_chs, 1)
        self.head = nn.Sequential(nn.Conv2d(c + latent_chs, c, 3, 1, 1), nn.SiLU(), nn.Conv2d(c, 1, 3, 1, 1))
        self._likelihood = BernoulliLikelihood()

    @property
    def groups(self) -> list[genzoo.GroupInfo]:
        k = self.latent_chs
        return [genzoo.GroupInfo(0, 0, 1, k, 2, 2), genzoo.GroupInfo(1, 1, 1, k, 4, 4)]

    @property
    def likelihood(self) -> genzoo.OutputLikelihood:
        return self._likelihood

    def _decode_state(self, z_top: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.dec_top(z_top), scale_factor=2.0, mode="nearest")

    def _params(self, state: torch.Tensor, z_low: torch.Tensor) -> torch.Tensor:
        h = torch.cat([state, z_low], dim=1)
        return self.head(F.interpolate(h, scale_factor=2.0, mode="nearest"))

    def forward(self, x: torch.Tensor) -> genzoo.HierarchyOutput:
        h1 = self.enc1(x)
        h2 = self.enc2(h1)
        prior_top = Normal(
            torch.zeros_like(h2[:, : self.latent_chs]), torch.ones_like(h2[:, : self.latent_chs])
        )
        q_top = _normal(self.q_top(h2))
        z_top = q_top.rsample()
        state = self._decode_state(z_top)
        prior_low = _normal(self.p_low(state))
        q_low = _normal(self.q_low(torch.cat([h1, state], dim=1)))
        z_low = q_low.rsample()
        params = self._params(state, z_low)
        latents = [self._latent(z_top, q_top, prior_top), self._latent(z_low, q_low, prior_low)]
        return genzoo.HierarchyOutput(
            log_px=self._likelihood.log_prob(params, x), latents=latents, params=params
        )

    @staticmethod
    def _latent(z: torch.Tensor, q: Normal, p: Normal) -> genzoo.LatentOutput:
        kl = kl_divergence(q, p)
        return genzoo.LatentOutput(
            z=z,
            kl=kl.sum((1, 2, 3)),
            kl_per_channel=kl.sum((2, 3)),
            log_q=q.log_prob(z).sum((1, 2, 3)),
            log_p=p.log_prob(z).sum((1, 2, 3)),
            q_mean=q.mean,
        )

    def sample_params(self, num_samples: int, temperature: float = 1.0) -> torch.Tensor:
        device = self.q_top.weight.device
        z_top = temperature * torch.randn(num_samples, self.latent_chs, 2, 2, device=device)
        state = self._decode_state(z_top)
        prior_low = _normal(self.p_low(state))
        z_low = prior_low.mean + temperature * prior_low.stddev * torch.randn_like(prior_low.mean)
        return self._params(state, z_low)


class ToyImages(Dataset):
    """``n`` binary ``size x size`` images of filled rectangles (reproducible from ``seed``),
    yielded as ``(image, label)`` pairs as torchvision datasets do."""

    def __init__(self, n: int = 256, seed: int = 0, size: int = 8) -> None:
        g = torch.Generator().manual_seed(seed)
        images = torch.zeros(n, 1, size, size)
        corners = torch.randint(0, size - size // 2 + 1, (n, 2), generator=g)
        sizes = torch.randint(size // 4, size // 2 + 1, (n, 2), generator=g)
        for i in range(n):
            (r, c), (h, w) = corners[i].tolist(), sizes[i].tolist()
            images[i, 0, r : r + h, c : c + w] = 1.0
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], 0


class NaNAfter(genzoo.Regularizer):
    """A regularizer whose loss turns NaN from step ``start`` on, for divergence tests."""

    def __init__(self, *, start: int, stop: int | None = None) -> None:
        super().__init__(coeff=1.0)
        self.start, self.stop = start, stop
        self.step = 0

    def penalty(self, model: nn.Module) -> torch.Tensor:
        zero = sum(p.sum() for p in model.parameters()) * 0.0
        bad = self.step >= self.start and (self.stop is None or self.step < self.stop)
        return zero + (float("nan") if bad else 0.0)

    def loss(self, model: nn.Module, progress: genzoo.TrainProgress) -> torch.Tensor:
        self.step = progress.step
        return super().loss(model, progress)


class HeadSpectralNorm(genzoo.Regularizer):
    """The largest singular value of the first conv of the model's head, by one power iteration
    per step from a persistent vector: a regularizer with state, as spectral regularization has."""

    def __init__(self, *, coeff: float = 1.0) -> None:
        super().__init__(coeff=coeff)
        self.u: torch.Tensor | None = None

    def penalty(self, model: nn.Module) -> torch.Tensor:
        weight = model.head[0].weight.flatten(1)
        if self.u is None:
            self.u = F.normalize(torch.ones(weight.shape[0], device=weight.device), dim=0)
        with torch.no_grad():
            v = F.normalize(weight.T @ self.u, dim=0)
            self.u = F.normalize(weight @ v, dim=0)
        return self.u @ weight @ v

    def state_dict(self) -> dict:
        return {} if self.u is None else {"u": self.u.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.u = state["u"].clone() if state else None
