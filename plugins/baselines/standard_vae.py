"""The standard VAE baseline (Kingma & Welling 2014) that NVAE is compared against in the seed table.

One latent group at the bottleneck of a plain convolutional encoder (stride-2 convs, BatchNorm,
Swish), a fixed N(0, I) prior, and a mirror decoder of stride-2 transposed convs: no hierarchy,
no residual cells, no gates, so the comparison isolates what NVAE adds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import Normal

from genzoo.interfaces import GroupInfo, Hierarchy, HierarchyOutput, LatentOutput, OutputLikelihood
from genzoo.interfaces.hierarchy import LatentStep
from genzoo.io.validation import check_int
from genzoo.layers.composition import SpecLike, build_likelihood, crop_center, pad_center, padded_shape
from genzoo.plugin.component_spec import ComponentSpec
from genzoo.plugin.registry import component

LIKELIHOODS = {"binary_default": "nvae.bernoulli", "multibit_default": "nvae.discretized_mix_logistic"}
"""The same output distributions as NVAE's hierarchy (registry keys, no import of that plugin),
so that the seed table compares the models and not their likelihoods."""


def _conv_bn_swish(in_chs: int, out_chs: int, *, transpose: bool = False) -> nn.Sequential:
    """A stride-2 (transposed) 4x4 conv, BatchNorm and Swish: halves (doubles) the resolution."""
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    return nn.Sequential(conv(in_chs, out_chs, 4, stride=2, padding=1), nn.BatchNorm2d(out_chs), nn.SiLU())


@component(
    "hierarchy",
    "baselines.standard_vae",
    description="A standard conv VAE: one latent group at the bottleneck, N(0, I) prior",
    accepts=["num_bits"],
    example=dict(num_channels=8, num_downsamples=2, latent_chs=4),
)
class StandardVAE(Hierarchy):
    """A classic convolutional VAE with a single latent group.

    :param image_shape: ``(C, H, W)`` of the scored images.
    :param padding: zero pixels added on every side (2 for 28x28 MNIST); ``H + 2 padding`` must
        be a multiple of ``2 ** num_downsamples``, and only ``H x W`` is scored.
    :param num_channels: channels of the first encoder conv; they double at every downsampling
        (and halve at every decoder upsampling).
    :param num_downsamples: stride-2 convs in the encoder; the latent group lives at
        ``H / 2 ** num_downsamples``.
    :param latent_chs: channels of ``z``.
    :param latent_group: latent group spec, built with ``top=True`` (fixed N(0, I) prior).
    :param likelihood: output likelihood spec; default as :class:`NVAEHierarchy` (Bernoulli for
        ``num_bits == 1``, 10-mixture discretized logistic otherwise).
    :param num_bits: bit depth of the images; default 1 for one channel, 8 otherwise.
    """

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        num_channels: int = 64,
        num_downsamples: int = 3,
        latent_chs: int = 20,
        latent_group: SpecLike = "baselines.plain_normal",
        likelihood: SpecLike | None = None,
        num_bits: int | None = None,
        padding: int = 0,
    ) -> None:
        super().__init__(image_shape=image_shape)
        image_chs, height, width = self.image_shape
        c = check_int("num_channels", num_channels, 1)
        depth = check_int("num_downsamples", num_downsamples, 1)
        self.latent_chs = check_int("latent_chs", latent_chs, 1)
        self.downsampling = 2**depth
        self.padded_shape = padded_shape(height, width, self.downsampling, padding)

        widths = [c * 2**i for i in range(depth)]  # encoder outputs, finest first
        self.encoder = nn.Sequential(
            *(_conv_bn_swish(w_in, w_out) for w_in, w_out in zip([image_chs, *widths[:-1]], widths))
        )
        self.latent_group = ComponentSpec.parse(latent_group, where="latent_group").build(
            "latent_group",
            enc_chs=widths[-1],
            dec_chs=widths[-1],
            latent_chs=self.latent_chs,
            top=True,
        )
        self.decoder_stem = nn.Sequential(
            nn.Conv2d(self.latent_chs, widths[-1], 3, padding=1), nn.BatchNorm2d(widths[-1]), nn.SiLU()
        )
        reversed_widths = widths[::-1]
        self.decoder = nn.Sequential(
            *(
                _conv_bn_swish(w_in, w_out, transpose=True)
                for w_in, w_out in zip(reversed_widths, [*reversed_widths[1:], c])
            )
        )
        self.output_likelihood = build_likelihood(
            likelihood, image_chs=image_chs, num_bits=num_bits, **LIKELIHOODS
        )
        self.num_bits = self.output_likelihood.num_bits
        self.head = nn.Conv2d(c, self.output_likelihood.param_chs, 3, padding=1)

    @property
    def groups(self) -> list[GroupInfo]:
        h, w = (s // self.downsampling for s in self.padded_shape)
        return [GroupInfo(0, 0, 1, self.latent_chs, h, w)]

    @property
    def likelihood(self) -> OutputLikelihood:
        return self.output_likelihood

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        params = self.head(self.decoder(self.decoder_stem(z)))
        return crop_center(params, *self.image_shape[1:])

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(2.0 * pad_center(x, *self.padded_shape) - 1.0)

    def forward(self, x: torch.Tensor) -> HierarchyOutput:
        feature = self._features(x)
        latent = self.latent_group(feature, None)
        params = self._decode(latent.z)
        return HierarchyOutput(
            log_px=self.output_likelihood.log_prob(params, x), latents=[latent], params=params
        )

    def sample_params(self, num_samples: int, temperature: float = 1.0) -> torch.Tensor:
        info = self.groups[0]
        z = self.latent_group.sample(
            None, temperature=temperature, size=(num_samples, info.height, info.width)
        )
        return self._decode(z)

    def traverse(
        self,
        draw: Callable[[LatentStep], torch.Tensor],
        *,
        x: torch.Tensor | None = None,
        num_samples: int | None = None,
    ) -> torch.Tensor:
        """One step, the single group's (see :meth:`genzoo.Hierarchy.traverse`)."""
        batch = self._batch_size(x, num_samples)
        info = self.groups[0]
        posterior: Callable[[], LatentOutput] | None = None
        if x is not None:
            feature = self._features(x)

            def posterior() -> LatentOutput:
                return self.latent_group(feature, None)

        def prior() -> Normal:
            return self.latent_group.prior_distribution(None, size=(batch, info.height, info.width))

        return self._decode(draw(LatentStep(info, None, batch, prior=prior, posterior=posterior)))

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component; the values sum to the model's total."""
        parts = {
            "encoder": self.encoder,
            "latent_groups": self.latent_group,
            "decoder": nn.ModuleList([self.decoder_stem, self.decoder]),
            "head": self.head,
            "likelihood": self.output_likelihood,
        }
        return {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
