"""Output likelihoods of NVAE's decoder (Sec. 4 / official ``distributions.py``).

- :class:`DiscretizedMixLogistic`: a mixture of M discretized logistics per pixel (PixelCNN++,
  Salimans et al. 2017) with the linear autoregressive coupling between R, G and B, for colour
  (and grey) images of any bit depth. Pixels ``k / (2**b - 1)`` are scored in ``[-1, 1]`` with
  bins of half-width ``1 / (2**b - 1)``; the lowest and highest bins take the tails, so the
  probabilities of the ``2**b`` values sum to one. The edge bins are found from the integer
  pixel value, for any bit depth (the official code tests ``x > 0.99``, which only works for 8 bits).
- :class:`Bernoulli`: independent Bernoulli pixels for binarized images (NVAE's MNIST).

Temperature ``t``: lower means less noise, and ``t = 0`` gives the most likely image (see each
class's ``sample``); for the mixture, genzoo multiplies the logistic noise
by ``t`` where the official sampler divides by it (which makes low temperatures noisier).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

import genzoo
from genzoo.errors import ConfigError
from genzoo.interfaces import OutputLikelihood
from genzoo.io.validation import check_int
from genzoo.layers.distributions import check_temperature, uniform_noise

LOG_SCALE_MIN = -7.0  # official clamp of the logistic log-scales
SMALL_BIN = 1e-3  # below this bin width in units of the scale, log(1 - e^-t) = log t - t / 2


def _log_one_minus_exp(t: torch.Tensor, log_t: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(-t))`` for ``t >= 0`` given also ``log t``: exact where ``t`` underflows
    (a huge logistic scale), with finite gradients everywhere."""
    small = t < SMALL_BIN
    safe_t = torch.where(small, torch.ones_like(t), t)  # keeps log(0) out of the unused branch
    return torch.where(small, log_t - 0.5 * t, torch.log(-torch.expm1(-safe_t)))


@genzoo.component(
    "likelihood",
    "nvae.discretized_mix_logistic",
    description="discretized mixture of logistics (PixelCNN++), any bit depth",
)
class DiscretizedMixLogistic(OutputLikelihood):
    """M-component discretized logistic mixture per pixel.

    Parameters per pixel: M mixture logits, then for each channel M means and M log-scales,
    then (3 channels only) M coefficients for each of the couplings G<-R, B<-R, B<-G, so
    ``param_chs = 10 M`` for RGB (as the official code counts them; the official order of the
    channels within the head differs, which only matters for porting official weights) and
    ``3 M`` for one channel. Log-scales are clamped below at -7 and couplings pass through
    tanh, as official.

    ``log_prob`` computes each bin's mass exactly in log space,
    ``log(sigmoid(a) - sigmoid(b)) = log sigmoid(a) + log sigmoid(-b) + log(1 - e^(b - a))``,
    where the official code replaces masses below 1e-5 by density x bin width (which
    underestimates them when the logistic is sharper than the bin).
    """

    def __init__(self, *, image_chs: int = 3, num_bits: int = 8, num_mixtures: int = 10) -> None:
        super().__init__(image_chs=image_chs, num_bits=num_bits)
        if image_chs not in (1, 3):
            raise ConfigError(
                f"image_chs={image_chs!r}; the discretized logistic mixture supports 1 or 3 channels"
            )
        check_int("num_mixtures", num_mixtures, 1)
        self.num_mixtures = num_mixtures
        self.max_value = 2**num_bits - 1

    @property
    def param_chs(self) -> int:
        m, c = self.num_mixtures, self.image_chs
        return m + 2 * c * m + (3 * m if c == 3 else 0)

    def _split(
        self, params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(logits b m h w, means b c m h w, log_scales b c m h w, coeffs b 3 m h w or None)``."""
        if params.dim() != 4 or params.shape[1] != self.param_chs:
            raise ValueError(f"params of shape {tuple(params.shape)}; expected (B, {self.param_chs}, H, W)")
        m, c = self.num_mixtures, self.image_chs
        logits = params[:, :m]
        per_chan = rearrange(params[:, m : m + 2 * c * m], "b (c two m) h w -> b c two m h w", c=c, two=2)
        means, log_scales = per_chan[:, :, 0], per_chan[:, :, 1].clamp(min=LOG_SCALE_MIN)
        coeffs = None
        if c == 3:
            coeffs = torch.tanh(rearrange(params[:, m + 2 * c * m :], "b (k m) h w -> b k m h w", k=3))
        return logits, means, log_scales, coeffs

    def _coupled_means(
        self, means: torch.Tensor, coeffs: torch.Tensor | None, x: torch.Tensor
    ) -> torch.Tensor:
        """Channel means given the previous channels' pixel values ``x`` (``b c h w`` in [-1, 1]);
        ``means`` and ``coeffs`` may be per mixture (``b c m h w``) or chosen (``b c h w``)."""
        if coeffs is None:
            return means
        if means.dim() == 5:
            x = x.unsqueeze(2)  # broadcast over mixtures
        g = means[:, 1] + coeffs[:, 0] * x[:, 0]
        b = means[:, 2] + coeffs[:, 1] * x[:, 0] + coeffs[:, 2] * x[:, 1]
        return torch.stack([means[:, 0], g, b], dim=1)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits, means, log_scales, coeffs = self._split(params)
        k = torch.round(x * self.max_value).clamp(0, self.max_value)
        xs = 2.0 * k / self.max_value - 1.0  # b c h w in [-1, 1]
        centered = xs.unsqueeze(2) - self._coupled_means(means, coeffs, xs)  # b c m h w
        half_bin = 1.0 / self.max_value
        inv_s = torch.exp(-log_scales)
        plus_in = inv_s * (centered + half_bin)
        min_in = inv_s * (centered - half_bin)
        log_cdf_plus = -F.softplus(-plus_in)  # log sigmoid(plus_in): the lowest bin
        log_sf_min = -F.softplus(min_in)  # log(1 - sigmoid(min_in)): the highest bin
        log_width = math.log(2.0 * half_bin) - log_scales  # log(plus_in - min_in)
        log_mid = log_cdf_plus + log_sf_min + _log_one_minus_exp(torch.exp(log_width), log_width)
        kk = k.unsqueeze(2).expand_as(log_mid)
        log_probs = torch.where(kk <= 0, log_cdf_plus, torch.where(kk >= self.max_value, log_sf_min, log_mid))
        log_mix = log_probs.sum(1) + F.log_softmax(logits, dim=1)  # b m h w
        return torch.logsumexp(log_mix, dim=1).flatten(1).sum(1)

    def _draw(self, params: torch.Tensor, temperature: float) -> torch.Tensor:
        logits, means, log_scales, coeffs = self._split(params)
        scores = logits
        if temperature > 0:
            u = uniform_noise(logits).clamp(1e-5, 1.0 - 1e-5)
            scores = logits - temperature * torch.log(-torch.log(u))
        sel = F.one_hot(scores.argmax(1), self.num_mixtures)
        sel = rearrange(sel, "b h w m -> b 1 m h w").to(params.dtype)
        mu = (means * sel).sum(2)  # b c h w
        if temperature > 0:
            u = uniform_noise(mu).clamp(1e-5, 1.0 - 1e-5)
            scale = torch.exp((log_scales * sel).sum(2))
            mu = mu + temperature * scale * (torch.log(u) - torch.log1p(-u))
        chosen_coeffs = None if coeffs is None else (coeffs * sel).sum(2)  # b 3 h w
        # Channel by channel, each coupled to the previous channels' *quantized* values, as
        # log_prob conditions on them (the official sampler couples to the continuous draws).
        levels: list[torch.Tensor] = []  # integer pixel values k, channel by channel
        for ch in range(self.image_chs):
            previous = [2.0 * k / self.max_value - 1.0 for k in levels]
            previous += [torch.zeros_like(mu[:, 0])] * (self.image_chs - ch)
            centre = self._coupled_means(mu, chosen_coeffs, torch.stack(previous, dim=1))[:, ch]
            levels.append(torch.round((centre.clamp(-1.0, 1.0) + 1.0) / 2.0 * self.max_value))
        return torch.stack(levels, dim=1) / self.max_value  # exactly k / (2**b - 1), as data

    def sample(self, params: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """An image on the bit grid. The component is drawn by Gumbel-max on
        ``logits + t * gumbel`` (the official ``logits / t + gumbel``, with a defined ``t = 0``);
        the logistic noise is multiplied by ``t``; each channel is quantized (the tails go to
        the edge values) before it enters the next channel's mean. ``t = 0`` gives :meth:`mean`."""
        check_temperature(temperature)
        return self._draw(params, temperature)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The centre of each pixel's most likely component, channel by channel through the
        coupling, quantized to the bit grid: the ``t -> 0`` limit of :meth:`sample` (the
        official ``mean`` averages the components' centres by their weights, unquantized)."""
        return self._draw(params, 0.0)


@genzoo.component("likelihood", "nvae.bernoulli", description="Bernoulli pixels for binarized images")
class Bernoulli(OutputLikelihood):
    """Independent Bernoulli pixels, parameterized by logits, for binarized images."""

    def __init__(self, *, image_chs: int = 1, num_bits: int = 1) -> None:
        super().__init__(image_chs=image_chs, num_bits=num_bits)
        if num_bits != 1:
            raise ValueError(
                f"num_bits={num_bits!r}; a Bernoulli likelihood models binary pixels (num_bits 1). "
                "For 8-bit images use nvae.discretized_mix_logistic."
            )

    @property
    def param_chs(self) -> int:
        return self.image_chs

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none").flatten(1).sum(1)

    def sample(self, params: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Binary pixels with the logits divided by ``t``; ``t = 0`` gives the mode."""
        check_temperature(temperature)
        if temperature == 0:
            return (params > 0).to(params.dtype)
        return (uniform_noise(params) < torch.sigmoid(params / temperature)).to(params.dtype)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The pixel probabilities (not binary), for reconstructions."""
        return torch.sigmoid(params)
