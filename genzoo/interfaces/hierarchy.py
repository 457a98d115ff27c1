"""The ``hierarchy`` kind: a whole VAE (encoder, latent groups, decoder, output likelihood)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch
from torch import nn

from genzoo.interfaces.latent import LatentOutput
from genzoo.interfaces.likelihood import OutputLikelihood
from genzoo.io.validation import invalid, is_int


@dataclass(frozen=True)
class GroupInfo:
    """Where one latent group sits: ``scale`` 0 is the coarsest (top) scale; ``index`` counts
    groups from the top. ``groups_in_scale`` is how many groups share that scale (NVAE's KL
    balancing weights groups by it)."""

    index: int
    scale: int
    groups_in_scale: int
    latent_chs: int
    height: int
    width: int

    @property
    def num_latents(self) -> int:
        return self.latent_chs * self.height * self.width


@dataclass
class HierarchyOutput:
    """What :meth:`Hierarchy.forward` returns; all per-example values are ``(B,)`` in nats.

    - ``log_px``: ``log p(x | z)``, summed over the scored pixels (padding excluded).
    - ``latents``: one :class:`LatentOutput` per group, top group first.
    - ``params``: the likelihood parameters for the scored image, ``(B, param_chs, H, W)``.
    """

    log_px: torch.Tensor
    latents: list[LatentOutput]
    params: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def kl(self) -> list[torch.Tensor]:
        """KL per group, top first, each ``(B,)``."""
        return [lat.kl for lat in self.latents]

    @property
    def kl_total(self) -> torch.Tensor:
        return torch.stack(self.kl, dim=0).sum(0)

    @property
    def elbo(self) -> torch.Tensor:
        """The evidence lower bound ``log p(x|z) - KL`` per example."""
        return self.log_px - self.kl_total

    @property
    def log_weight(self) -> torch.Tensor:
        """``log p(x|z) + log p(z) - log q(z|x)`` for the drawn ``z``: one importance weight."""
        log_p = torch.stack([lat.log_p for lat in self.latents], 0).sum(0)
        log_q = torch.stack([lat.log_q for lat in self.latents], 0).sum(0)
        return self.log_px + log_p - log_q


class Hierarchy(nn.Module, abc.ABC):
    """A hierarchical VAE: the unit that is trained, checkpointed and compared.

    Constructed with keyword ``image_shape=(C, H, W)`` (the scored image size), plus the keys
    and options of its components (cells, gate, latent group, likelihood), which it builds from
    the registry so that any one of them can be swapped alone.

    Contract:

    - ``forward(x)`` takes images ``(B, C, H, W)`` in ``[0, 1]`` and returns a
      :class:`HierarchyOutput`. A hierarchy that needs a larger size internally (NVAE pads
      28x28 MNIST to 32x32) pads itself and scores only the ``H x W`` interior.
    - ``groups``: a :class:`GroupInfo` per latent group, top first, in the order of
      ``HierarchyOutput.latents``.
    - ``likelihood``: the :class:`OutputLikelihood` module.
    - ``sample_params(n, temperature)`` decodes ``n`` prior samples to likelihood parameters;
      ``sample`` and ``reconstruct`` are built on it and on ``forward``.
    - ``state_dict()`` is the checkpoint; the constructor keywords rebuild the module.
    """

    def __init__(self, *, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        shape = tuple(image_shape)
        if len(shape) != 3 or not all(is_int(s) and s > 0 for s in shape):
            raise invalid("image_shape", image_shape, "(channels, height, width)")
        self.image_shape: tuple[int, int, int] = shape  # type: ignore[assignment]

    @property
    @abc.abstractmethod
    def groups(self) -> list[GroupInfo]:
        """One :class:`GroupInfo` per latent group, top first."""

    @property
    @abc.abstractmethod
    def likelihood(self) -> OutputLikelihood:
        """The output distribution p(x | z)."""

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> HierarchyOutput:
        """Encode, sample every group's posterior, decode and score ``x``."""

    @abc.abstractmethod
    def sample_params(self, num_samples: int, temperature: float = 1.0) -> torch.Tensor:
        """Likelihood parameters of ``num_samples`` images decoded from prior samples."""

    @property
    def num_dims(self) -> int:
        """The number of scored dimensions ``C * H * W`` (the D of bits/dim)."""
        c, h, w = self.image_shape
        return c * h * w

    @torch.no_grad()
    def sample(self, num_samples: int, temperature: float = 1.0) -> torch.Tensor:
        """Images ``(n, C, H, W)`` in ``[0, 1]`` drawn at ``temperature``."""
        return self.likelihood.sample(self.sample_params(num_samples, temperature), temperature)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstructions of ``x`` (likelihood mean at a posterior sample)."""
        return self.likelihood.mean(self(x).params)
