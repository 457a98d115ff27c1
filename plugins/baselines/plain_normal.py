"""A plain normal latent group: the posterior is parameterized directly from the encoder feature
(not as a residual of the prior, as NVAE's :mod:`genzoo_plugins.nvae.residual_normal` does, Sec.
3.2); the prior comes from the decoder state, or is N(0, I) exactly for the top group. It is what
"residual normal -> plain normal" swaps in, and the latent of the standard VAE.

Same layout as the NVAE group (3x3 conv of the encoder feature; ELU -> 1x1 conv of the decoder
state), with plain ``nn.Conv2d`` as everywhere in the baselines (no weight normalization).
Means are not clamped and sigmas are ``softplus(raw) + 1e-4``: softplus grows linearly, so no
exponent can overflow and NVAE's soft clamp is not needed, and the small floor keeps log-sigma
and the KL's 1 / sigma_p finite when a raw output is very negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

import genzoo
from genzoo.interfaces import LatentGroup, LatentOutput
from genzoo.layers.activations import elu
from genzoo.layers.distributions import DiagonalNormal, check_temperature

SIGMA_FLOOR = 1e-4


def _normal(params: torch.Tensor) -> DiagonalNormal:
    mu, raw = params.chunk(2, dim=1)
    return DiagonalNormal(mu, F.softplus(raw) + SIGMA_FLOOR)


@genzoo.component(
    "latent_group",
    "baselines.plain_normal",
    description="plain normal: posterior parameterized directly, N(0, I) top prior",
)
class PlainNormal(LatentGroup):
    """q(z|x) = N(mu_q, sigma_q) from a 3x3 conv of the encoder feature; p(z) from a 1x1 conv
    of the decoder state (N(0, I) for the top group); closed-form KL."""

    def __init__(self, *, enc_chs: int, dec_chs: int, latent_chs: int, top: bool = False) -> None:
        super().__init__(enc_chs=enc_chs, dec_chs=dec_chs, latent_chs=latent_chs, top=top)
        self.encoder_params = nn.Conv2d(enc_chs, 2 * latent_chs, 3, padding=1)
        self.prior_params = None if top else nn.Conv2d(dec_chs, 2 * latent_chs, 1)

    def _prior(self, dec_state: torch.Tensor | None, like: torch.Tensor) -> DiagonalNormal:
        if self.top:
            return DiagonalNormal(torch.zeros_like(like), torch.ones_like(like))
        if dec_state is None:
            raise ValueError("a non-top latent group needs the decoder state for its prior")
        assert self.prior_params is not None
        return _normal(self.prior_params(elu(dec_state)))

    def forward(self, enc_feature: torch.Tensor, dec_state: torch.Tensor | None) -> LatentOutput:
        posterior = _normal(self.encoder_params(enc_feature))
        prior = self._prior(dec_state, posterior.mu)
        z = posterior.sample()
        return LatentOutput.from_elementwise(
            z,
            kl=posterior.kl(prior),
            log_q=posterior.log_prob(z),
            log_p=prior.log_prob(z),
            q_mean=posterior.mean,
        )

    def prior_distribution(
        self, dec_state: torch.Tensor | None, *, size: tuple[int, int, int] | None = None
    ) -> Normal:
        """The prior: N(0, I) for the top group, else from the decoder state."""
        if self.top:
            if size is None:
                raise ValueError("the top group needs size=(batch, height, width) for its prior")
            b, h, w = size
            prior = self._prior(None, self.encoder_params.weight.new_zeros(b, self.latent_chs, h, w))
        else:
            prior = self._prior(dec_state, dec_state)
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
