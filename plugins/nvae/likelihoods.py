"""Output likelihoods of NVAE's decoder (Sec. 4 / official ``distributions.py``).

- :class:`DiscretizedMixLogistic`: a mixture of M discretized logistics per pixel (PixelCNN++,
  Salimans et al. 2017) with the linear autoregressive coupling between R, G and B, for colour
  (and grey) images of any bit depth. Pixels ``k / (2**b - 1)`` are scored in ``[-1, 1]`` with
  bins of half-width ``1 / (2**b - 1)``; the lowest and highest bins take the tails, so the
  probabilities of the ``2**b`` values sum to one. The edge bins are found from the integer
  pixel value, for any bit depth (the official code tests ``x > 0.99``, which only works for 8 bits).
- :class:`Bernoulli`: independent Bernoulli pixels for binarized images (NVAE's MNIST).

Temperature: lower means less noise. For the mixture, the logistic noise is multiplied by the
temperature (the official sampler divides by it, which makes low temperatures noisier; genzoo
does not reproduce that). For the Bernoulli, the logits are divided by the temperature.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

import genzoo
from genzoo.interfaces import OutputLikelihood

LOG_SCALE_MIN = -7.0  # official clamp of the logistic log-scales


class DiscretizedMixLogistic(OutputLikelihood):
    """M-component discretized logistic mixture per pixel.

    Parameters per pixel: M mixture logits, then for each channel M means and M log-scales,
    then (3 channels only) M coefficients for each of the couplings G<-R, B<-R, B<-G, so
    ``param_chs = 10 M`` for RGB (as the official code) and ``3 M`` for one channel.
    """

    def __init__(self, *, image_chs: int = 3, num_bits: int = 8, num_mixtures: int = 10) -> None:
        super().__init__(image_chs=image_chs, num_bits=num_bits)
        if image_chs not in (1, 3):
            raise ValueError(
                f"image_chs={image_chs!r}; the discretized logistic mixture supports 1 or 3 channels"
            )
        if not isinstance(num_mixtures, int) or num_mixtures < 1:
            raise ValueError(f"num_mixtures={num_mixtures!r}; expected a positive integer")
        self.num_mixtures = num_mixtures
        self.max_value = 2**num_bits - 1

    @property
    def param_chs(self) -> int:
        m, c = self.num_mixtures, self.image_chs
        return m + 2 * c * m + (3 * m if c == 3 else 0)

    def _split(self, params: torch.Tensor):
        m, c = self.num_mixtures, self.image_chs
        logits = params[:, :m]
        rest = params[:, m : m + 2 * c * m]
        per_chan = rearrange(rest, "b (c two m) h w -> b c two m h w", c=c, two=2, m=m)
        means, log_scales = per_chan[:, :, 0], per_chan[:, :, 1].clamp(min=LOG_SCALE_MIN)
        coeffs = None
        if c == 3:
            coeffs = torch.tanh(rearrange(params[:, m + 2 * c * m :], "b (k m) h w -> b k m h w", k=3, m=m))
        return logits, means, log_scales, coeffs

    def _coupled_means(
        self, means: torch.Tensor, coeffs: torch.Tensor | None, x: torch.Tensor
    ) -> torch.Tensor:
        """Channel means given the previous channels' values ``x`` (``b c h w`` in [-1, 1])."""
        if coeffs is None:
            return means
        xs = x.unsqueeze(2)  # b c 1 h w, broadcast over mixtures
        g = means[:, 1] + coeffs[:, 0] * xs[:, 0]
        b = means[:, 2] + coeffs[:, 1] * xs[:, 0] + coeffs[:, 2] * xs[:, 1]
        return torch.stack([means[:, 0], g, b], dim=1)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits, means, log_scales, coeffs = self._split(params)
        k = torch.round(x * self.max_value)
        xs = 2.0 * k / self.max_value - 1.0  # b c h w in [-1, 1]
        mu = self._coupled_means(means, coeffs, xs)  # b c m h w
        half_bin = 1.0 / self.max_value
        centered = xs.unsqueeze(2) - mu
        inv_s = torch.exp(-log_scales)
        plus_in = inv_s * (centered + half_bin)
        min_in = inv_s * (centered - half_bin)
        log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in), for the lowest bin
        log_one_minus_cdf_min = -F.softplus(min_in)  # log(1 - sigmoid(min_in)), for the highest bin
        cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
        mid_in = inv_s * centered
        log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)
        # Where the bin mass underflows, the density at the centre times the bin width is exact to
        # first order and keeps the gradient finite.
        log_mid = torch.where(
            cdf_delta > 1e-5,
            torch.log(cdf_delta.clamp(min=1e-12)),
            log_pdf_mid + math.log(2 * half_bin),
        )
        kk = k.unsqueeze(2).expand_as(log_mid)
        log_probs = torch.where(
            kk <= 0, log_cdf_plus, torch.where(kk >= self.max_value, log_one_minus_cdf_min, log_mid)
        )
        log_mix = log_probs.sum(1) + F.log_softmax(logits, dim=1)  # b m h w
        return torch.logsumexp(log_mix, dim=1).flatten(1).sum(1)

    def _choose(self, logits: torch.Tensor, gumbel: bool) -> torch.Tensor:
        if gumbel:
            u = torch.rand_like(logits).clamp(1e-5, 1.0 - 1e-5)
            logits = logits - torch.log(-torch.log(u))
        return F.one_hot(logits.argmax(1), self.num_mixtures).permute(0, 3, 1, 2).to(logits.dtype)  # b m h w

    def _draw(self, params: torch.Tensor, temperature: float, stochastic: bool) -> torch.Tensor:
        logits, means, log_scales, coeffs = self._split(params)
        sel = self._choose(logits, stochastic).unsqueeze(1)  # b 1 m h w
        mu = (means * sel).sum(2)  # b c h w
        scale = torch.exp((log_scales * sel).sum(2))
        if stochastic:
            u = torch.rand_like(mu).clamp(1e-5, 1.0 - 1e-5)
            mu = mu + temperature * scale * (torch.log(u) - torch.log1p(-u))
        if coeffs is not None:
            c = (coeffs * sel).sum(2)  # b 3 h w
            r = mu[:, 0].clamp(-1, 1)
            g = (mu[:, 1] + c[:, 0] * r).clamp(-1, 1)
            b = (mu[:, 2] + c[:, 1] * r + c[:, 2] * g).clamp(-1, 1)
            mu = torch.stack([r, g, b], dim=1)
        x = (mu.clamp(-1, 1) + 1.0) / 2.0
        return torch.round(x * self.max_value) / self.max_value

    def sample(self, params: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return self._draw(params, temperature, stochastic=True)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The centre of each pixel's most likely component (quantized)."""
        return self._draw(params, 0.0, stochastic=False)


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
        return torch.bernoulli(torch.sigmoid(params / temperature))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


def register(registry: genzoo.Registry) -> None:
    registry.add(
        "likelihood", "nvae.discretized_mix_logistic", DiscretizedMixLogistic,
        description="discretized mixture of logistics (PixelCNN++), any bit depth",
    )  # fmt: skip
    registry.add(
        "likelihood", "nvae.bernoulli", Bernoulli, description="Bernoulli pixels for binarized images"
    )
