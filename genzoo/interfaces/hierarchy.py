"""The ``hierarchy`` kind: a whole VAE (encoder, latent groups, decoder, output likelihood)."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributions import Normal

from genzoo.errors import ConfigError, GenzooError
from genzoo.interfaces.latent import LatentOutput
from genzoo.interfaces.likelihood import OutputLikelihood
from genzoo.io.validation import check_int, invalid, is_int, is_number

Temperature = float | Sequence[float]
"""One temperature for every latent group, or one per group, top first."""


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


class LatentStep:
    """One latent group's turn in :meth:`Hierarchy.traverse`: what the ``draw`` callback sees.

    - ``info``: the group's :class:`GroupInfo` (``info.index`` counts from the top);
    - ``dec_state``: the decoder state the group's prior reads (``None`` for the top group);
    - ``batch_size``: the number of images being decoded;
    - :meth:`prior`: ``p(z | z above)`` at this state; :meth:`posterior`: the group's
      :class:`LatentOutput` (a posterior draw, its KL ...) at this state, when the pass was
      given images. Both are computed on first use and kept, so asking twice draws once.
    """

    def __init__(
        self,
        info: GroupInfo,
        dec_state: torch.Tensor | None,
        batch_size: int,
        *,
        prior: Callable[[], Normal],
        posterior: Callable[[], LatentOutput] | None = None,
    ) -> None:
        self.info = info
        self.dec_state = dec_state
        self.batch_size = batch_size
        self._prior_fn, self._posterior_fn = prior, posterior
        self._prior: Normal | None = None
        self._posterior: LatentOutput | None = None

    @property
    def index(self) -> int:
        return self.info.index

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(B, latent_chs, H, W)``: the shape of the ``z`` that ``draw`` returns."""
        return (self.batch_size, self.info.latent_chs, self.info.height, self.info.width)

    def prior(self) -> Normal:
        """The group's prior at this decoder state."""
        if self._prior is None:
            self._prior = self._prior_fn()
        return self._prior

    def posterior(self) -> LatentOutput:
        """The group's posterior output at this decoder state: a draw ``z`` of ``q(z | x, z
        above)``, its KL and log-densities (drawn once, on the first call)."""
        if self._posterior_fn is None:
            raise GenzooError(
                f"latent group {self.index}: no posterior in a pass without images; "
                "call Hierarchy.traverse(draw, x=images)"
            )
        if self._posterior is None:
            self._posterior = self._posterior_fn()
        return self._posterior

    def standardize(self, z: torch.Tensor) -> torch.Tensor:
        """``(z - prior mean) / prior stddev``: ``z`` in units of the prior's spread here."""
        prior = self.prior()
        return (z - prior.mean) / prior.stddev

    def unstandardize(self, eps: torch.Tensor) -> torch.Tensor:
        """The ``z`` whose standardized value is ``eps``: ``prior mean + prior stddev * eps``."""
        prior = self.prior()
        return prior.mean + prior.stddev * eps

    def sample_prior(self, temperature: float = 1.0) -> torch.Tensor:
        """A prior draw with the stddev times ``temperature`` (0: the prior mean); the noise is
        one standard normal tensor of :attr:`shape`, drawn in logical element order, as the
        groups' own ``sample`` draws it, so that the two agree for the same seed."""
        prior = self.prior()
        noise = torch.randn(prior.mean.shape, dtype=prior.mean.dtype, device=prior.mean.device)
        return prior.mean + temperature * prior.stddev * noise


@dataclass
class Encoding:
    """What :meth:`Hierarchy.encode` returns; lists have one entry per group, top first.

    - ``z``: the posterior draws, each ``(B, latent_chs, H, W)``;
    - ``eps``: the same draws standardized by the prior at their decoder state,
      ``(z - prior mean) / prior stddev``: for a prior draw at temperature ``t`` they are
      ``t`` times standard normal noise, so they can be mixed, interpolated and decoded
      (:meth:`Hierarchy.decode`) whatever the groups above them are;
    - ``latents``: each group's :class:`LatentOutput` (KL, log-densities);
    - ``params``: the likelihood parameters decoded from ``z``, as ``forward`` gives them.
    """

    z: list[torch.Tensor]
    eps: list[torch.Tensor]
    latents: list[LatentOutput]
    params: torch.Tensor


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

    The latent API (:meth:`encode`, :meth:`decode`, per-group temperatures in :meth:`sample`,
    :meth:`reconstruct` with ``keep_groups``) is built here on one method a hierarchy may
    implement, :meth:`traverse`: the top-down pass with each group's ``z`` chosen by a
    callback. Its contract, which ``genzoo.testing.check_hierarchy`` checks where it is
    implemented:

    - with ``draw = lambda step: step.posterior().z`` and images ``x``, it returns
      ``forward(x).params``, bit for bit for the same seed (the same draws in the same order);
    - with ``draw = lambda step: step.sample_prior(t)`` and ``num_samples=n``, it returns
      ``sample_params(n, t)`` for the same seed: ``sample_params`` honours the temperature in
      every group (the bug of NVAE's PR #55 was a sampler that did not below the top group).
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

    def traverse(
        self,
        draw: Callable[[LatentStep], torch.Tensor],
        *,
        x: torch.Tensor | None = None,
        num_samples: int | None = None,
    ) -> torch.Tensor:
        """Run the top-down pass, asking ``draw(step)`` for each group's ``z`` (top group
        first, each :class:`LatentStep` at the decoder state the groups above produced), and
        return the likelihood parameters ``(B, param_chs, H, W)``.

        Give images ``x`` (the steps then offer :meth:`LatentStep.posterior`, from the encoder
        path) or ``num_samples`` (prior only). Not abstract, so hierarchies written before it
        keep training and sampling; implementing it enables :meth:`encode`, :meth:`decode`,
        per-group temperatures and ``reconstruct(keep_groups=...)``.
        """
        raise GenzooError(
            f"the hierarchy {type(self).__qualname__} does not implement Hierarchy.traverse; "
            "encode/decode/interpolate and per-group temperatures need it"
        )

    def encode(self, x: torch.Tensor) -> Encoding:
        """Posterior draws of every group for images ``x`` and their standardized values (see
        :class:`Encoding`); ``encode(x).params`` is ``forward(x).params`` for the same seed."""
        z: list[torch.Tensor] = []
        eps: list[torch.Tensor] = []
        latents: list[LatentOutput] = []

        def posterior(step: LatentStep) -> torch.Tensor:
            latent = step.posterior()
            latents.append(latent)
            z.append(latent.z)
            eps.append(step.standardize(latent.z))
            return latent.z

        params = self.traverse(posterior, x=x)
        return Encoding(z=z, eps=eps, latents=latents, params=params)

    def decode(
        self,
        latents: Sequence[torch.Tensor | None] = (),
        *,
        standardized: bool = True,
        temperature: Temperature = 1.0,
        num_samples: int | None = None,
    ) -> torch.Tensor:
        """Likelihood parameters decoded from given latents, top group first.

        :param latents: one entry per group from the top, each ``(B, latent_chs, H, W)`` or
            ``None``; groups not given (``None``, or past the end) are drawn from the prior.
        :param standardized: the entries are standardized latents (``Encoding.eps``: each
            becomes ``prior mean + prior stddev * eps`` at its decoder state) rather than ``z``.
        :param temperature: of the prior draws, one number or one per group.
        :param num_samples: the batch size when no entry is a tensor.
        """
        given = list(latents)
        groups = self.groups
        if len(given) > len(groups):
            raise invalid("latents", f"{len(given)} entries", f"at most one per latent group ({len(groups)})")
        temperatures = self._temperatures(temperature)
        batch = next((t.shape[0] for t in given if t is not None), num_samples)
        if batch is None:
            raise invalid("num_samples", None, "the batch size, since no group's latents are given")

        def chosen(step: LatentStep) -> torch.Tensor:
            value = given[step.index] if step.index < len(given) else None
            if value is None:
                return step.sample_prior(temperatures[step.index])
            if tuple(value.shape) != step.shape:
                raise invalid(f"latents[{step.index}]", tuple(value.shape), f"a tensor of shape {step.shape}")
            return step.unstandardize(value) if standardized else value

        return self.traverse(chosen, num_samples=check_int("num_samples", batch, 1))

    @torch.no_grad()
    def sample(
        self, num_samples: int, temperature: Temperature = 1.0, *, output_temperature: float | None = None
    ) -> torch.Tensor:
        """Images ``(n, C, H, W)`` in ``[0, 1]`` drawn at ``temperature``: one number (through
        :meth:`sample_params`; the likelihood is sampled at the same temperature), or one per
        latent group, top first (through :meth:`decode`; the likelihood at 1 unless
        ``output_temperature`` says otherwise)."""
        if is_number(temperature):
            t = float(temperature)  # type: ignore[arg-type]
            out_t = t if output_temperature is None else output_temperature
            return self.likelihood.sample(self.sample_params(num_samples, t), out_t)
        params = self.decode(num_samples=num_samples, temperature=temperature)
        return self.likelihood.sample(params, 1.0 if output_temperature is None else output_temperature)

    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor, *, keep_groups: int | None = None, temperature: Temperature = 1.0
    ) -> torch.Tensor:
        """Deterministic reconstructions of ``x`` (the likelihood's mean), ``(B, C, H, W)``.

        With ``keep_groups=k``, only the top ``k`` groups take their posterior draw; the rest
        are drawn from the prior at ``temperature`` (NVAE, Fig. of reconstructions that keep
        the top groups: what the top of the hierarchy holds). ``None`` or every group: a full
        posterior draw, ``forward(x)``'s.
        """
        num_groups = len(self.groups)
        if keep_groups is None or keep_groups == num_groups:
            return self.likelihood.mean(self(x).params)
        check_int("keep_groups", keep_groups, 0, num_groups)
        temperatures = self._temperatures(temperature)

        def top_k(step: LatentStep) -> torch.Tensor:
            if step.index < keep_groups:
                return step.posterior().z
            return step.sample_prior(temperatures[step.index])

        return self.likelihood.mean(self.traverse(top_k, x=x))

    def _temperatures(self, temperature: Temperature) -> list[float]:
        """One temperature per group from one number or a sequence; each a number >= 0."""
        num_groups = len(self.groups)
        expected = f"a number >= 0, or {num_groups} of them (one per latent group, top first)"
        if is_number(temperature):
            values = [float(temperature)] * num_groups  # type: ignore[arg-type]
        elif isinstance(temperature, Sequence) and len(temperature) == num_groups:
            values = list(temperature)
        else:
            raise invalid("temperature", temperature, expected)
        if not all(is_number(t) and t >= 0 for t in values):
            raise invalid("temperature", temperature, expected)
        return [float(t) for t in values]

    def _batch_size(self, x: torch.Tensor | None, num_samples: int | None) -> int:
        """The batch size of a :meth:`traverse`: from ``x`` or ``num_samples`` (exactly one)."""
        if (x is None) == (num_samples is None):
            raise ConfigError(
                f"{type(self).__qualname__}.traverse: give images x or num_samples, exactly one "
                f"(got {'both' if x is not None else 'neither'})"
            )
        return x.shape[0] if x is not None else check_int("num_samples", num_samples, 1)
