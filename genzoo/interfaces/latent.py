"""The ``latent_group`` kind: one group of latent variables at one scale."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from einops import reduce
from torch import nn
from torch.distributions import Normal

from genzoo.errors import GenzooError
from genzoo.io.validation import check_int


@dataclass
class LatentOutput:
    """What a latent group returns on the inference path (all per example, in nats).

    - ``z``: the sample handed to the decoder, ``(B, latent_chs, H, W)`` (after flows, if any).
    - ``kl``: KL(q || p) per example, ``(B,)``. Closed form when the group has one; with
      posterior flows, the single-sample estimate ``log_q - log_p``.
    - ``kl_per_channel``: the same KL summed over space only, ``(B, latent_chs)``, for KL
      balancing and diagnostics. ``kl_per_channel.sum(1) == kl``.
    - ``log_q``: ``log q(z | x)`` of the sample, ``(B,)``, flow log-determinants included.
    - ``log_p``: ``log p(z)`` of the sample under the prior, ``(B,)``.
    - ``q_mean``: the posterior mean before flows, ``(B, latent_chs, H, W)``, for active units.
    """

    z: torch.Tensor
    kl: torch.Tensor
    kl_per_channel: torch.Tensor
    log_q: torch.Tensor
    log_p: torch.Tensor
    q_mean: torch.Tensor

    @classmethod
    def from_elementwise(
        cls,
        z: torch.Tensor,
        *,
        kl: torch.Tensor,
        log_q: torch.Tensor,
        log_p: torch.Tensor,
        q_mean: torch.Tensor,
    ) -> LatentOutput:
        """Build from elementwise ``(B, C, H, W)`` KL and log-densities, summing them over
        space (``kl_per_channel``) and over everything but the batch (the rest)."""
        kl_per_channel = reduce(kl, "b c h w -> b c", "sum")
        return cls(
            z=z,
            kl=kl_per_channel.sum(1),
            kl_per_channel=kl_per_channel,
            log_q=reduce(log_q, "b c h w -> b", "sum"),
            log_p=reduce(log_p, "b c h w -> b", "sum"),
            q_mean=q_mean,
        )


class LatentGroup(nn.Module, abc.ABC):
    """One group of latent variables at one scale of a hierarchy.

    Constructed with keywords ``enc_chs`` (channels of the encoder feature the posterior reads),
    ``dec_chs`` (channels of the decoder state the prior reads), ``latent_chs`` (channels of
    ``z``) and ``top`` (True for the first, coarsest group, whose prior is fixed and reads no
    decoder state). Groups may take more keywords of their own (``num_flows`` ...).

    Contract:

    - ``forward(enc_feature, dec_state)`` computes the prior from ``dec_state``
      (``None`` for the top group), the posterior from ``enc_feature`` (and, for residual
      parameterizations, the prior), draws ``z`` with the reparameterization trick and returns a
      :class:`LatentOutput`. ``enc_feature`` is ``(B, enc_chs, H, W)``; ``dec_state`` is
      ``(B, dec_chs, H, W)``; ``z`` has the same ``H, W``.
    - ``sample(dec_state, temperature=t, size=(B, H, W))`` draws ``z`` from the prior with its
      standard deviations multiplied by ``t``. ``size`` is required when ``dec_state`` is
      ``None`` (top group) and ignored otherwise.
    - ``prior_distribution(dec_state, size=...)`` (optional; the latent API of
      :class:`genzoo.Hierarchy` needs it) returns that prior as a
      :class:`torch.distributions.Normal`, with the arguments of ``sample``; ``sample`` at
      temperature ``t`` is then ``mean + t * stddev * noise``.
    - All state lives in parameters and buffers, so ``state_dict()`` is the checkpoint.
    """

    def __init__(self, *, enc_chs: int, dec_chs: int, latent_chs: int, top: bool = False) -> None:
        super().__init__()
        for name, value in (("enc_chs", enc_chs), ("dec_chs", dec_chs), ("latent_chs", latent_chs)):
            check_int(name, value, 1)
        self.enc_chs = enc_chs
        self.dec_chs = dec_chs
        self.latent_chs = latent_chs
        self.top = top

    @abc.abstractmethod
    def forward(self, enc_feature: torch.Tensor, dec_state: torch.Tensor | None) -> LatentOutput:
        """Posterior sample, KL and log-densities for one group (see the class contract)."""

    @abc.abstractmethod
    def sample(
        self,
        dec_state: torch.Tensor | None,
        *,
        temperature: float = 1.0,
        size: tuple[int, int, int] | None = None,
    ) -> torch.Tensor:
        """Draw ``z`` from the prior at ``temperature`` (see the class contract)."""

    def prior_distribution(
        self, dec_state: torch.Tensor | None, *, size: tuple[int, int, int] | None = None
    ) -> Normal:
        """The prior ``p(z | dec_state)`` that :meth:`sample` draws from, as a diagonal
        :class:`torch.distributions.Normal` of ``z``'s shape (``size`` as for :meth:`sample`).

        Not abstract, so that groups written before it keep working for training and sampling;
        :meth:`genzoo.Hierarchy.encode` and everything built on it (standardized latents,
        interpolation) need it, and say so through this error. (Not named ``prior``: groups
        commonly hold a submodule of that name.)
        """
        raise GenzooError(
            f"the latent group {type(self).__qualname__} does not expose its prior "
            "(LatentGroup.prior_distribution); encode/decode/interpolate need it"
        )
