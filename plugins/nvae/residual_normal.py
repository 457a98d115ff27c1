"""NVAE's residual normal latent group (Sec. 3.2, "Residual Normal Distributions").

The prior of group l is N(mu_p, sigma_p) from the decoder state (ELU -> 1x1 conv); the encoder
predicts a *relative* change (d_mu, d_log_sigma) from its feature (3x3 conv), and the posterior
is N(mu_p + d_mu, sigma_p * d_sigma). As in the official code, the sum is taken before the soft
clamp ``5 tanh(x / 5)`` and sigma = exp(log_sigma) + 1e-2, i.e. the posterior is
``Normal(mu_p + d_mu, log_sigma_p + d_log_sigma)`` in its parameterization: with a zero residual
it equals the prior exactly, and its KL is exactly 0. The top group's prior is fixed
(mu = 0, log_sigma = 0, hence sigma = 1.01 because of the +1e-2).

KL: closed form per example without flows; with ``num_flows`` posterior flows
(:mod:`genzoo_plugins.nvae.flows`) the single-sample estimate log q(z) - log p(z), as official.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import genzoo
from genzoo.distributions import DiagonalNormal
from genzoo.interfaces import LatentGroup, LatentOutput
from genzoo_plugins.nvae.weight_norm import wn_conv2d

SIGMA_FLOOR = 1e-2


def soft_clamp(x: torch.Tensor, bound: float = 5.0) -> torch.Tensor:
    """A differentiable clamp to (-bound, bound): ``bound * tanh(x / bound)``."""
    return bound * torch.tanh(x / bound)


def nvae_normal(mu: torch.Tensor, log_sigma: torch.Tensor) -> DiagonalNormal:
    """NVAE's parameterization: soft-clamped mu and log-sigma, sigma = exp(log_sigma) + 1e-2."""
    return DiagonalNormal(soft_clamp(mu), torch.exp(soft_clamp(log_sigma)) + SIGMA_FLOOR)


class ResidualNormal(LatentGroup):
    """One group of NVAE latents; see the module docstring."""

    def __init__(
        self,
        *,
        enc_chs: int,
        dec_chs: int,
        latent_chs: int,
        top: bool = False,
        num_flows: int = 0,
        flow_expansion: int = 6,
    ) -> None:
        super().__init__(enc_chs=enc_chs, dec_chs=dec_chs, latent_chs=latent_chs, top=top)
        if not isinstance(num_flows, int) or num_flows < 0:
            raise ValueError(f"num_flows={num_flows!r}; expected an integer >= 0")
        self.encoder_params = wn_conv2d(enc_chs, 2 * latent_chs, 3)
        self.prior_params = None if top else wn_conv2d(dec_chs, 2 * latent_chs, 1)
        self.num_flows = num_flows
        if num_flows:
            from genzoo_plugins.nvae.flows import PairedAutoregressiveFlow

            self.flows = nn.ModuleList(
                PairedAutoregressiveFlow(latent_chs, enc_chs, expansion=flow_expansion)
                for _ in range(num_flows)
            )
        else:
            self.flows = nn.ModuleList()

    def _prior_params(
        self, dec_state: torch.Tensor | None, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.top:
            zeros = torch.zeros_like(like)
            return zeros, zeros
        if dec_state is None:
            raise ValueError("a non-top latent group needs the decoder state for its prior")
        assert self.prior_params is not None
        mu, log_sigma = self.prior_params(F.elu(dec_state)).chunk(2, dim=1)
        return mu, log_sigma

    def forward(self, enc_feature: torch.Tensor, dec_state: torch.Tensor | None) -> LatentOutput:
        d_mu, d_log_sigma = self.encoder_params(enc_feature).chunk(2, dim=1)
        mu_p, log_sigma_p = self._prior_params(dec_state, d_mu)
        prior = nvae_normal(mu_p, log_sigma_p)
        posterior = nvae_normal(mu_p + d_mu, log_sigma_p + d_log_sigma)
        z = posterior.sample()
        log_q = posterior.log_prob(z)
        for flow in self.flows:
            z, log_det = flow(z, enc_feature)
            log_q = log_q - log_det
        log_p = prior.log_prob(z)
        kl = log_q - log_p if self.num_flows else posterior.kl(prior)
        return LatentOutput.from_elementwise(z, kl=kl, log_q=log_q, log_p=log_p, q_mean=posterior.mean)

    def sample(
        self,
        dec_state: torch.Tensor | None,
        *,
        temperature: float = 1.0,
        size: tuple[int, int, int] | None = None,
    ) -> torch.Tensor:
        if self.top:
            if size is None:
                raise ValueError("the top group needs size=(batch, height, width) to sample")
            b, h, w = size
            like = self.encoder_params.weight.new_zeros(b, self.latent_chs, h, w)
            mu, log_sigma = like, like
        else:
            mu, log_sigma = self._prior_params(dec_state, dec_state)
        return nvae_normal(mu, log_sigma).sample(temperature)


def register(registry: genzoo.Registry) -> None:
    registry.add(
        "latent_group", "nvae.residual_normal", ResidualNormal,
        description="NVAE residual normal: posterior relative to the prior, closed-form KL",
    )  # fmt: skip


__all__ = ["ResidualNormal", "nvae_normal", "soft_clamp"]
