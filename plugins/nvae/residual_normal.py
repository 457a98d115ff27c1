"""NVAE's residual normal latent group (Sec. 3.2, "Residual Normal Distributions").

The prior of group l is N(mu_p, sigma_p) from the decoder state (ELU -> 1x1 wn-conv); the encoder
predicts a relative change (d_mu, d_log_sigma) from its feature (3x3 wn-conv). The paper writes
the posterior as N(mu_p + d_mu, sigma_p * d_sigma). What is implemented is the official code's
form (``Normal(mu_p + mu_q, log_sig_p + log_sig_q)``): the *raw* parameters are added, then
NVAE's normal applies its soft clamp and floor to the sums,

    mu_q    = 5 tanh((mu_p_raw + d_mu) / 5)
    sigma_q = exp(5 tanh((log_sigma_p_raw + d_log_sigma) / 5)) + 1e-2

(and likewise for the prior from its raw parameters alone). This equals the paper's form
(sigma_p * exp(d_log_sigma)) only where neither the clamp nor the 1e-2 floor is active; it is
chosen because it is what NVAE's reported numbers were trained with, and because a zero residual
then gives a posterior identical to the prior (KL exactly 0), which the paper's form would not
if d_sigma got the same floor (sigma_q = 1.01 sigma_p). The top group's prior is fixed (raw mu = 0, raw log_sigma = 0,
hence sigma = 1.01 because of the floor) and its posterior reads the encoder only.

KL: closed form per example without flows; with ``num_flows`` posterior flows
(:mod:`genzoo_plugins.nvae.flows`, also on the top group, as official) the single-sample
estimate log q(z) - log p(z) of the flowed sample, as official.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal

import genzoo
from genzoo.interfaces import LatentGroup, LatentOutput
from genzoo.io.validation import check_int
from genzoo.layers.activations import elu
from genzoo.layers.distributions import DiagonalNormal, check_temperature
from genzoo_plugins.nvae.flows import PairedAutoregressiveFlow
from genzoo_plugins.nvae.weight_norm import wn_conv2d

SIGMA_FLOOR = 1e-2


def soft_clamp(x: torch.Tensor, bound: float = 5.0) -> torch.Tensor:
    """A differentiable clamp to (-bound, bound): ``bound * tanh(x / bound)``."""
    return bound * torch.tanh(x / bound)


def nvae_normal(mu: torch.Tensor, log_sigma: torch.Tensor) -> DiagonalNormal:
    """NVAE's parameterization: soft-clamped mu and log-sigma, sigma = exp(log_sigma) + 1e-2."""
    return DiagonalNormal(soft_clamp(mu), torch.exp(soft_clamp(log_sigma)) + SIGMA_FLOOR)


@genzoo.component(
    "latent_group",
    "nvae.residual_normal",
    description="NVAE residual normal: posterior relative to the prior, optional AR flows",
)
class ResidualNormal(LatentGroup):
    """One group of NVAE latents (see the module docstring).

    ``num_flows`` pairs of autoregressive flow cells (0: none, the closed-form KL; official
    ``--num_nf``); ``flow_expansion`` is their hidden-channel multiplier (official 6).
    ``sample`` multiplies the prior's sigma (floor included) by the temperature, as official.
    """

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
        check_int("num_flows", num_flows, 0)
        check_int("flow_expansion", flow_expansion, 1)
        self.encoder_params = wn_conv2d(enc_chs, 2 * latent_chs, 3)
        self.prior_params = None if top else wn_conv2d(dec_chs, 2 * latent_chs, 1)
        self.num_flows = num_flows
        self.flows = nn.ModuleList(
            PairedAutoregressiveFlow(latent_chs, enc_chs, expansion=flow_expansion) for _ in range(num_flows)
        )

    def _prior_params(
        self, dec_state: torch.Tensor | None, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.top:
            zeros = torch.zeros_like(like)
            return zeros, zeros
        if dec_state is None:
            raise ValueError("a non-top latent group needs the decoder state for its prior")
        assert self.prior_params is not None
        mu, log_sigma = self.prior_params(elu(dec_state)).chunk(2, dim=1)
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

    def prior_distribution(
        self, dec_state: torch.Tensor | None, *, size: tuple[int, int, int] | None = None
    ) -> Normal:
        """The prior, soft clamp and 1e-2 floor included (N(0, 1.01^2) for the top group)."""
        if self.top:
            if size is None:
                raise ValueError("the top group needs size=(batch, height, width) for its prior")
            b, h, w = size
            like = self.encoder_params.weight.new_zeros(b, self.latent_chs, h, w)
            mu, log_sigma = like, like
        else:
            mu, log_sigma = self._prior_params(dec_state, dec_state)
        prior = nvae_normal(mu, log_sigma)
        return Normal(prior.mu, prior.sigma, validate_args=False)

    def sample(
        self,
        dec_state: torch.Tensor | None,
        *,
        temperature: float = 1.0,
        size: tuple[int, int, int] | None = None,
    ) -> torch.Tensor:
        check_temperature(temperature)
        prior = self.prior_distribution(dec_state, size=size)
        return DiagonalNormal(prior.loc, prior.scale).sample(temperature)


__all__ = ["ResidualNormal", "nvae_normal", "soft_clamp"]
