"""NVAE's hierarchy (``nvae.hierarchy``) and the standard VAE (``baselines.standard_vae``).

Both are composed from registry keys alone. Every test runs twice: once on small stand-in
components registered into a fresh :class:`genzoo.Registry` under the real keys (so the wiring is
tested on its own), and once on the real NVAE and baseline components (skipped while a module is
missing).
"""

from __future__ import annotations

import importlib
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Normal, kl_divergence

import genzoo
from genzoo_plugins.baselines import standard_vae
from genzoo_plugins.nvae import hierarchy
from genzoo_plugins.nvae.hierarchy import NVAEHierarchy, groups_per_scale

torch.set_num_threads(1)

TINY = {"num_channels": 4, "latent_chs": 2, "num_preprocess_cells": 1, "num_postprocess_cells": 1}
"""Options that make any layout build and run in milliseconds."""


# -- stand-in components ---------------------------------------------------------------------------
class StubCell(genzoo.Cell):
    """A 3x3 conv (+ gate) that resamples like a cell; records what it was built with."""

    def __init__(self, *, in_chs, out_chs, resample="none", gate_layer=None):
        super().__init__(in_chs, out_chs, resample=resample)
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=2 if resample == "down" else 1, padding=1)
        self.bn = nn.BatchNorm2d(out_chs)
        self.gate = gate_layer(out_chs) if gate_layer is not None else nn.Identity()

    def forward(self, x):
        if self.resample == "up":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.gate(self.bn(self.conv(x)))


class StubExpansionCell(StubCell):
    """A stand-in that takes ``expansion`` as separable cells do."""

    def __init__(self, *, expansion=6, **kwargs):
        super().__init__(**kwargs)
        self.expansion = expansion


class StubGate(genzoo.ChannelGate):
    def __init__(self, *, chs):
        super().__init__(chs)
        self.logit = nn.Parameter(torch.zeros(chs, 1, 1))

    def forward(self, x):
        return x * torch.sigmoid(self.logit)


class StubNoGate(genzoo.ChannelGate):
    def forward(self, x):
        return x


class StubNormal(genzoo.LatentGroup):
    """Diagonal normal group: posterior from a 3x3 conv of the feature (added to the prior's
    parameters when ``residual``), prior from ELU + 1x1 conv of the state, N(0, 1) on top."""

    residual = False

    def __init__(self, *, enc_chs, dec_chs, latent_chs, top=False, num_flows=0):
        super().__init__(enc_chs=enc_chs, dec_chs=dec_chs, latent_chs=latent_chs, top=top)
        self.posterior = nn.Conv2d(enc_chs, 2 * latent_chs, 3, padding=1)
        self.prior = None if top else nn.Sequential(nn.ELU(), nn.Conv2d(dec_chs, 2 * latent_chs, 1))

    def _prior(self, dec_state, like):
        if self.top:
            return Normal(torch.zeros_like(like), torch.ones_like(like))
        mu, log_sigma = self.prior(dec_state).chunk(2, dim=1)
        return Normal(mu, log_sigma.exp() + 1e-2)

    def forward(self, enc_feature, dec_state):
        mu, log_sigma = self.posterior(enc_feature).chunk(2, dim=1)
        p = self._prior(dec_state, mu)
        if self.residual:
            mu, log_sigma = mu + p.loc, log_sigma + p.scale.log()
        q = Normal(mu, log_sigma.exp() + 1e-2)
        z = q.rsample()
        kl = kl_divergence(q, p)
        return genzoo.LatentOutput(
            z=z,
            kl=kl.sum((1, 2, 3)),
            kl_per_channel=kl.sum((2, 3)),
            log_q=q.log_prob(z).sum((1, 2, 3)),
            log_p=p.log_prob(z).sum((1, 2, 3)),
            q_mean=q.mean,
        )

    def sample(self, dec_state, *, temperature=1.0, size=None):
        if self.top:
            b, h, w = size
            like = torch.zeros(b, self.latent_chs, h, w, device=self.posterior.weight.device)
        else:
            like = None
        p = self._prior(dec_state, like)
        return p.loc + temperature * p.scale * torch.randn_like(p.loc)


class StubResidualNormal(StubNormal):
    residual = True


class StubBernoulli(genzoo.OutputLikelihood):
    def __init__(self, *, image_chs, num_bits=1):
        super().__init__(image_chs=image_chs, num_bits=num_bits)

    @property
    def param_chs(self):
        return self.image_chs

    def log_prob(self, params, x):
        return Bernoulli(logits=params).log_prob(x).sum((1, 2, 3))

    def sample(self, params, temperature=1.0):
        return torch.bernoulli(torch.sigmoid(params / temperature))

    def mean(self, params):
        return torch.sigmoid(params)


class StubLogistic(genzoo.OutputLikelihood):
    """One discretized logistic per pixel (the real one mixes ``num_mixtures`` of them)."""

    def __init__(self, *, image_chs, num_bits=8, num_mixtures=10):
        super().__init__(image_chs=image_chs, num_bits=num_bits)
        self.num_mixtures = num_mixtures

    @property
    def param_chs(self):
        return 2 * self.image_chs

    def log_prob(self, params, x):
        mu, log_s = params.chunk(2, dim=1)
        half, s = 1.0 / (2**self.num_bits - 1), log_s.clamp(min=-7).exp()
        upper = torch.where(x > 1 - half / 2, torch.ones_like(x), torch.sigmoid((x + half / 2 - mu) / s))
        lower = torch.where(x < half / 2, torch.zeros_like(x), torch.sigmoid((x - half / 2 - mu) / s))
        return torch.log((upper - lower).clamp(min=1e-12)).sum((1, 2, 3))

    def sample(self, params, temperature=1.0):
        return self.mean(params)

    def mean(self, params):
        return params.chunk(2, dim=1)[0].clamp(0, 1)


def stub_registry() -> genzoo.Registry:
    reg = genzoo.Registry()
    reg.add("cell", "nvae.residual_cell", StubCell)
    reg.add("cell", "nvae.separable_cell", StubExpansionCell, accepts=["expansion"])
    reg.add("cell", "baselines.conv_cell", StubExpansionCell, accepts=["expansion"])
    reg.add("gate", "nvae.se", StubGate)
    reg.add("gate", "baselines.none_gate", StubNoGate)
    reg.add("latent_group", "nvae.residual_normal", StubResidualNormal)
    reg.add("latent_group", "baselines.plain_normal", StubNormal)
    reg.add("likelihood", "nvae.bernoulli", StubBernoulli)
    reg.add("likelihood", "nvae.discretized_mix_logistic", StubLogistic)
    reg.add_declared(hierarchy)
    reg.add_declared(standard_vae)
    return reg


def nvae_in(registry: genzoo.Registry, **options) -> NVAEHierarchy:
    """NVAE's hierarchy constructed directly, its components taken from ``registry``."""
    with registry.as_current():
        return NVAEHierarchy(**options)


def standard_vae_in(registry: genzoo.Registry, **options) -> standard_vae.StandardVAE:
    with registry.as_current():
        return standard_vae.StandardVAE(**options)


REAL_MODULES = (
    "genzoo_plugins.nvae.se",
    "genzoo_plugins.nvae.encoder_cell",
    "genzoo_plugins.nvae.decoder_cell",
    "genzoo_plugins.nvae.residual_normal",
    "genzoo_plugins.nvae.likelihoods",
    "genzoo_plugins.baselines.none_gate",
    "genzoo_plugins.baselines.conv_cell",
    "genzoo_plugins.baselines.plain_normal",
)


def real_registry() -> genzoo.Registry:
    """The real components, each module registered alone (other plugin modules may be absent)."""
    reg = genzoo.Registry()
    for name in REAL_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            pytest.skip(f"{name} is not written yet ({exc})")
        reg.add_declared(module)
    reg.add_declared(hierarchy)
    reg.add_declared(standard_vae)
    return reg


@pytest.fixture(params=["stub", "real"])
def registry(request) -> genzoo.Registry:
    return stub_registry() if request.param == "stub" else real_registry()


def binary_images(n, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n, *shape), generator=g).float()


def photo_images(n, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g).float() / 255


def images_for(shape, n=2):
    return binary_images(n, shape) if shape[0] == 1 else photo_images(n, shape)


def check_run(model: genzoo.Hierarchy, x: torch.Tensor) -> genzoo.HierarchyOutput:
    """Forward, backward and the shape contracts every hierarchy must honour."""
    out = model(x)
    b, (_, h, w) = x.shape[0], model.image_shape
    assert torch.isfinite(out.elbo).all() and out.elbo.shape == (b,)
    assert len(out.kl) == len(model.groups) == len(out.latents)
    for info, latent in zip(model.groups, out.latents):
        assert latent.z.shape == (b, info.latent_chs, info.height, info.width)
        assert latent.kl.shape == (b,)
    assert out.params.shape == (b, model.likelihood.param_chs, h, w)
    (-out.elbo.mean()).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters that get no gradient: {unused}"
    return out


def check_sampling(model: genzoo.Hierarchy, x: torch.Tensor) -> None:
    n, (c, h, w) = 3, model.image_shape
    model.eval()
    assert model.sample_params(n, temperature=0.7).shape == (n, model.likelihood.param_chs, h, w)
    for images in (model.sample(n, temperature=0.7), model.reconstruct(x)):
        assert images.shape[1:] == (c, h, w)
        assert images.min() >= 0 and images.max() <= 1


# -- groups per scale -------------------------------------------------------------------------------
def test_groups_per_scale_halves_towards_coarser_scales_with_a_minimum():
    assert groups_per_scale(2, 10, adaptive=True) == [10, 5]  # official MNIST, finest first
    assert groups_per_scale(3, 20, adaptive=True) == [20, 10, 5]  # official CelebA 64
    assert groups_per_scale(5, 16, adaptive=True, min_groups=4) == [16, 8, 4, 4, 4]  # CelebA HQ
    assert groups_per_scale(3, 7, adaptive=False) == [7, 7, 7]


# -- NVAE layouts ----------------------------------------------------------------------------------
LAYOUTS = {
    # MNIST-like: 2 pre-process blocks + 2 scales downsample 8x, so 28x28 is padded to 32x32.
    "mnist_2x2_adaptive": (
        (1, 28, 28),
        dict(
            num_latent_scales=2,
            num_groups_per_scale=2,
            adaptive_groups=True,
            num_preprocess_blocks=2,
            num_postprocess_blocks=2,
            padding=2,
        ),
        [1, 2],
    ),
    "cifar_1x2": ((3, 32, 32), dict(num_latent_scales=1, num_groups_per_scale=2), [2]),
    "rgb_3_scales": (
        (3, 64, 64),
        dict(num_latent_scales=3, num_groups_per_scale=4, adaptive_groups=True, num_preprocess_blocks=1),
        [1, 2, 4],
    ),
    "gray_3_scales_min": (
        (1, 32, 32),
        dict(num_latent_scales=3, num_groups_per_scale=4, adaptive_groups=True, min_groups_per_scale=2),
        [2, 2, 4],
    ),
    "vanilla_1x1": ((3, 32, 32), dict(num_latent_scales=1, num_groups_per_scale=1), [1]),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_nvae_layouts_train_and_sample(registry, layout):
    shape, options, groups_coarsest_first = LAYOUTS[layout]
    torch.manual_seed(0)
    model = registry.create(
        "hierarchy",
        "nvae.hierarchy",
        image_shape=shape,
        **TINY,
        num_cells_per_group_enc=1,
        num_cells_per_group_dec=1,
        **options,
    )
    assert model.groups_per_scale == groups_coarsest_first
    infos = model.groups
    assert [i.index for i in infos] == list(range(sum(groups_coarsest_first)))
    assert [i.groups_in_scale for i in infos] == [n for n in groups_coarsest_first for _ in range(n)]
    # Scale s sits 2 ** (pre + scales - 1 - s) below the padded image.
    padded = model.padded_shape
    for info in infos:
        factor = 2 ** (options.get("num_preprocess_blocks", 1) + len(groups_coarsest_first) - 1 - info.scale)
        assert (info.height, info.width) == (padded[0] // factor, padded[1] // factor)
    x = images_for(shape)
    check_run(model, x)
    check_sampling(model, x)


def test_vanilla_layout_has_no_towers_nor_combiners():
    model = nvae_in(
        stub_registry(), image_shape=(3, 16, 16), num_latent_scales=1, num_groups_per_scale=1, **TINY
    )
    assert model.vanilla and model.decoder_input is None and model.decoder_stem is not None
    assert len(model.encoder_groups) == len(model.encoder_combiners) == len(model.decoder_combiners) == 0
    assert not nvae_in(stub_registry(), image_shape=(3, 16, 16), num_groups_per_scale=2, **TINY).vanilla


# -- every mix of keys ----------------------------------------------------------------------------------
@pytest.mark.parametrize("latent", ["nvae.residual_normal", "baselines.plain_normal"])
@pytest.mark.parametrize("gate", ["nvae.se", "baselines.none_gate"])
@pytest.mark.parametrize("decoder_cell", ["nvae.separable_cell", "baselines.conv_cell"])
@pytest.mark.parametrize("encoder_cell", ["nvae.residual_cell", "baselines.conv_cell"])
def test_every_mix_of_cell_gate_and_latent_keys(registry, encoder_cell, decoder_cell, gate, latent):
    torch.manual_seed(0)
    model = nvae_in(
        registry,
        image_shape=(3, 8, 8),
        num_groups_per_scale=2,
        encoder_cell=encoder_cell,
        decoder_cell=decoder_cell,
        preprocess_cell=encoder_cell,
        postprocess_cell=decoder_cell,
        gate=gate,
        latent_group=latent,
        num_cells_per_group_enc=1,
        num_cells_per_group_dec=1,
        **TINY,
    )

    def cls(kind, key):
        return registry.get(kind, key).factory

    assert type(model.encoder_groups[0][0][0]) is cls("cell", encoder_cell)
    assert type(model.decoder_groups[1][0]) is cls("cell", decoder_cell)
    assert all(type(g) is cls("latent_group", latent) for g in model.latent_groups)
    assert any(type(m) is cls("gate", gate) for m in model.modules())
    check_run(model, photo_images(2, (3, 8, 8)))


def test_decoder_and_postprocess_cells_get_their_expansion_unless_the_spec_sets_it():
    reg = stub_registry()
    model = nvae_in(
        reg,
        image_shape=(3, 8, 8),
        num_groups_per_scale=2,
        **{**TINY, "num_postprocess_cells": 2, "num_preprocess_cells": 2},
    )
    assert {cell.expansion for cell in model.decoder_groups[1]} == {6}
    assert {cell.expansion for cell in model.postprocess} == {3}
    assert not any(hasattr(m, "expansion") for m in model.encoder_groups.modules())  # no such keyword
    model = nvae_in(
        reg,
        image_shape=(3, 8, 8),
        num_groups_per_scale=2,
        decoder_cell={"key": "nvae.separable_cell", "expansion": 4},
        **TINY,
    )
    assert {cell.expansion for cell in model.decoder_groups[1]} == {4}


# -- padding: only the H x W interior is scored -------------------------------------------------------
def zero_conv_(conv: nn.Conv2d) -> None:
    """Make a weight-normalized conv output exactly zero (direction v = 0, bias = 0)."""
    with torch.no_grad():
        conv.parametrizations.weight.original1.zero_()
        conv.bias.zero_()


def test_padded_mnist_scores_exactly_the_784_interior_pixels(registry):
    torch.manual_seed(0)
    model = nvae_in(
        registry,
        image_shape=(1, 28, 28),
        padding=2,
        num_latent_scales=2,
        num_groups_per_scale=2,
        num_preprocess_blocks=2,
        num_postprocess_blocks=2,
        **TINY,
    )
    assert model.padded_shape == (32, 32)
    seen = {}
    model.stem.register_forward_pre_hook(lambda m, args: seen.update(stem_in=args[0]))
    model.head.register_forward_hook(lambda m, args, out: seen.update(head_out=out))
    x = binary_images(2, (1, 28, 28))
    out = model(x)
    # NVAE pads the [0, 1] image with 2 zeros on each side; the stem sees 2x - 1.
    assert seen["stem_in"].shape == (2, 1, 32, 32)
    torch.testing.assert_close(seen["stem_in"][:, :, 2:30, 2:30], 2 * x - 1)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (seen["stem_in"][:, :, border] == -1).all()
    torch.testing.assert_close(out.params, seen["head_out"][:, :, 2:30, 2:30])

    # With all-zero logits each scored pixel has probability 1/2, whatever its value.
    zero_conv_(model.head[-1])
    log_px = model(x).log_px
    torch.testing.assert_close(log_px, torch.full((2,), 784 * math.log(0.5)))
    reference = Bernoulli(logits=torch.zeros(2, 1, 28, 28)).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(log_px, reference)


def test_padding_is_centred_and_cropped_back():
    model = nvae_in(
        stub_registry(),
        image_shape=(1, 12, 8),
        padding=2,
        num_groups_per_scale=2,
        num_preprocess_blocks=2,
        num_postprocess_blocks=2,
        **TINY,
    )
    assert model.padded_shape == (16, 12)
    x = binary_images(2, (1, 12, 8))
    padded = hierarchy.pad_center(x, 16, 12)
    assert padded.shape == (2, 1, 16, 12) and padded.sum() == x.sum()
    torch.testing.assert_close(padded[:, :, 2:14, 2:10], x)
    torch.testing.assert_close(hierarchy.crop_center(padded, 12, 8), x)
    assert model(x).params.shape == (2, 1, 12, 8)


# -- the bottom-up features reach the decoder in reverse, as official ------------------------------------
def test_each_group_reads_the_encoder_feature_of_its_mirror_position():
    torch.manual_seed(0)
    model = nvae_in(
        stub_registry(), image_shape=(3, 16, 16), num_latent_scales=2, num_groups_per_scale=2, **TINY
    )
    outputs, read = [], {}
    for groups in model.encoder_groups:  # finest scale first
        for cells in groups:
            cells.register_forward_hook(lambda m, args, out: outputs.append(out))
    for i, combiner in enumerate(model.encoder_combiners, start=1):
        combiner.register_forward_pre_hook(lambda m, args, i=i: read.update({i: args[0]}))
    model(photo_images(2, (3, 16, 16)))
    n = len(model.groups)
    assert len(outputs) == n and sorted(read) == list(range(1, n))
    for i in range(1, n):  # decoder group i (top first) <- encoder group n - 1 - i (finest first)
        assert read[i] is outputs[n - 1 - i]
    # The top group reads enc0 of the last (coarsest) encoder feature, through no combiner.
    assert model.groups[0].height == outputs[-1].shape[-1]


def test_top_decoder_input_is_a_learned_tensor_at_the_coarsest_scale():
    model = nvae_in(
        stub_registry(),
        image_shape=(3, 32, 32),
        num_latent_scales=3,
        num_groups_per_scale=2,
        num_preprocess_blocks=2,
        num_postprocess_blocks=2,
        **TINY,
    )
    # channels double at each of the 2 + 3 - 1 downsamplings; 32 / 2**4 = 2
    assert model.decoder_input.shape == (4 * 2**4, 2, 2)
    assert isinstance(model.decoder_input, nn.Parameter)


# -- likelihood defaults ---------------------------------------------------------------------------------
def test_likelihood_defaults_follow_the_bit_depth_and_an_explicit_spec_wins(registry):
    gray = nvae_in(registry, image_shape=(1, 8, 8), num_groups_per_scale=2, **TINY)
    assert type(gray.likelihood) is registry.get("likelihood", "nvae.bernoulli").factory
    assert gray.likelihood.num_bits == 1 and gray.likelihood.param_chs == 1
    rgb = nvae_in(registry, image_shape=(3, 8, 8), num_groups_per_scale=2, num_bits=5, **TINY)
    assert type(rgb.likelihood) is registry.get("likelihood", "nvae.discretized_mix_logistic").factory
    assert rgb.likelihood.num_bits == 5 and rgb.likelihood.image_chs == 3
    explicit = nvae_in(
        registry,
        image_shape=(3, 8, 8),
        num_groups_per_scale=2,
        likelihood={"key": "nvae.bernoulli", "num_bits": 1},
        **TINY,
    )
    assert type(explicit.likelihood) is registry.get("likelihood", "nvae.bernoulli").factory
    assert explicit.head[-1].out_channels == explicit.likelihood.param_chs


def test_num_bits_must_agree_with_an_explicit_likelihood_spec():
    with pytest.raises(ValueError, match="num_bits=5"):
        nvae_in(
            stub_registry(),
            image_shape=(3, 8, 8),
            num_bits=5,
            likelihood={"key": "nvae.discretized_mix_logistic", "num_bits": 8},
            **TINY,
        )


# -- errors ---------------------------------------------------------------------------------------------
def test_a_key_of_the_wrong_kind_or_an_unknown_key_is_named():
    reg = stub_registry()
    with pytest.raises(genzoo.WrongKindError, match="nvae.se"):
        nvae_in(reg, image_shape=(3, 8, 8), encoder_cell="nvae.se", **TINY)
    with pytest.raises(genzoo.WrongKindError, match="nvae.residual_cell"):
        nvae_in(reg, image_shape=(3, 8, 8), gate="nvae.residual_cell", **TINY)
    with pytest.raises(genzoo.UnknownKeyError, match="nvae.separable_cel"):
        nvae_in(reg, image_shape=(3, 8, 8), decoder_cell="nvae.separable_cel", **TINY)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"num_latent_scales": 0}, "num_latent_scales=0"),
        ({"latent_chs": -1}, "latent_chs=-1"),
        ({"num_groups_per_scale": 2.5}, "num_groups_per_scale=2.5"),
        ({"num_postprocess_blocks": 2}, "num_postprocess_blocks=2"),
        ({"adaptive_groups": "yes"}, "adaptive_groups='yes'"),
        ({"image_shape": (3, 32)}, "image_shape"),
    ],
)
def test_bad_options_raise_value_errors_naming_the_option(options, named):
    kwargs = {"image_shape": (3, 8, 8), **TINY, **options}
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        nvae_in(stub_registry(), **kwargs)


# -- efficiency columns ---------------------------------------------------------------------------------
def test_parameter_counts_split_the_total_by_component_kind():
    model = nvae_in(
        stub_registry(), image_shape=(3, 16, 16), num_latent_scales=2, num_groups_per_scale=2, **TINY
    )
    counts = model.parameter_counts()
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())
    assert counts["decoder_input"] == model.decoder_input.numel()
    assert counts["encoder_combiners"] == sum(p.numel() for p in model.encoder_combiners.parameters()) > 0
    assert all(v > 0 for k, v in counts.items() if k != "likelihood")


# -- the standard VAE ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_standard_vae_trains_and_samples(registry, shape):
    torch.manual_seed(0)
    model = registry.create(
        "hierarchy",
        "baselines.standard_vae",
        image_shape=shape,
        num_channels=4,
        latent_chs=2,
        padding=2 if shape[-1] == 28 else 0,
    )
    assert len(model.groups) == 1 and model.groups[0].height == model.padded_shape[0] // 8
    assert type(model.latent_group) is registry.get("latent_group", "baselines.plain_normal").factory
    x = images_for(shape)
    check_run(model, x)
    check_sampling(model, x)
    counts = model.parameter_counts()
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())


def test_standard_vae_scores_only_the_interior_of_padded_mnist():
    model = standard_vae_in(stub_registry(), image_shape=(1, 28, 28), num_channels=4, latent_chs=2, padding=2)
    assert model.padded_shape == (32, 32)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    log_px = model(binary_images(2, (1, 28, 28))).log_px
    torch.testing.assert_close(log_px, torch.full((2,), 784 * math.log(0.5)))


def test_standard_vae_rejects_bad_options():
    with pytest.raises(ValueError, match="num_downsamples=0"):
        standard_vae_in(stub_registry(), num_downsamples=0)
    with pytest.raises(genzoo.WrongKindError):
        standard_vae_in(stub_registry(), latent_group="nvae.bernoulli", num_channels=4)


# -- NVAE's published architectures, from keys alone ----------------------------------------------------
CIFAR10_FLAGS = {
    # The official README's CIFAR-10 command, in genzoo's names (see docs/architectures.md).
    "image_shape": (3, 32, 32),
    "num_channels": 128,  # --num_channels_enc 128 --num_channels_dec 128
    "num_latent_scales": 1,
    "num_groups_per_scale": 30,
    "adaptive_groups": False,
    "min_groups_per_scale": 1,
    "latent_chs": 20,  # --num_latent_per_group 20
    "num_preprocess_blocks": 1,
    "num_preprocess_cells": 2,
    "num_postprocess_blocks": 1,
    "num_postprocess_cells": 2,
    "num_cells_per_group_enc": 2,  # --num_cell_per_cond_enc 2
    "num_cells_per_group_dec": 2,
    "encoder_cell": "nvae.residual_cell",
    "decoder_cell": "nvae.separable_cell",
    "preprocess_cell": "nvae.residual_cell",
    "postprocess_cell": "nvae.separable_cell",
    "gate": "nvae.se",  # --use_se
    "latent_group": {"key": "nvae.residual_normal", "num_flows": 1},  # --res_dist --num_nf 1
    "likelihood": {"key": "nvae.discretized_mix_logistic", "num_mixtures": 10},
}
CIFAR10_PARAMETERS = 130_852_480
"""Counted once from the official ``AutoEncoder`` built with the same flags (docs/architectures.md);
genzoo's model has exactly as many, component by component."""
CIFAR10_SPLIT = {
    "stem": 3_712,
    "preprocess_cells": 1_226_392,
    "encoder_cells": 71_409_600,
    "encoder_combiners": 1_915_392,
    "encoder0": 66_048,
    "latent_groups": 2_767_200 + 299_280 + 1_636_800,  # official enc_sampler + dec_sampler + nf_cells
    "decoder_input": 65_536,
    "decoder_cells": 48_746_912,
    "decoder_combiners": 2_135_040,
    "postprocess_cells": 465_168,
    "head": 115_400,
    "likelihood": 0,
}
MNIST_FLAGS = {
    "image_shape": (1, 28, 28),
    "padding": 2,  # transforms.Pad(2) in the official MNIST pipeline
    "num_channels": 32,
    "num_latent_scales": 2,
    "num_groups_per_scale": 10,
    "adaptive_groups": True,
    "latent_chs": 20,
    "num_preprocess_blocks": 2,
    "num_preprocess_cells": 3,
    "num_postprocess_blocks": 2,
    "num_postprocess_cells": 3,
    "latent_group": {"key": "nvae.residual_normal", "num_flows": 0},  # --num_nf 0
}
MNIST_PARAMETERS = 33_363_134  # the official AutoEncoder with the README's MNIST flags


@pytest.fixture
def global_registry() -> genzoo.Registry:
    """The process-wide registry (built-in plugins discovered as in ``genzoo run``)."""
    real_registry()  # skips while a component module is missing
    return genzoo.get_registry()


def test_the_defaults_are_the_official_cifar10_flags():
    defaults = {
        name: p.default
        for name, p in inspect.signature(NVAEHierarchy).parameters.items()
        if name in CIFAR10_FLAGS and name != "likelihood"
    }
    assert {**defaults, "latent_group": dict(defaults["latent_group"].to_config())} == {
        k: v for k, v in CIFAR10_FLAGS.items() if k != "likelihood"
    }


def test_official_cifar10_architecture_has_the_official_parameter_count(global_registry):
    model = genzoo.create("hierarchy", "nvae.hierarchy", **CIFAR10_FLAGS)
    assert [info.height for info in model.groups] == [16] * 30
    assert sum(p.numel() for p in model.parameters()) == CIFAR10_PARAMETERS
    assert model.parameter_counts() == CIFAR10_SPLIT


def test_official_mnist_architecture_has_the_official_parameter_count(global_registry):
    model = genzoo.create("hierarchy", "nvae.hierarchy", **MNIST_FLAGS)
    assert model.groups_per_scale == [5, 10] and model.padded_shape == (32, 32)
    assert type(model.likelihood).__name__ == "Bernoulli"
    assert sum(p.numel() for p in model.parameters()) == MNIST_PARAMETERS
    check_run(model, binary_images(2, (1, 28, 28)))


@pytest.mark.slow
def test_official_cifar10_architecture_trains_one_step(global_registry):
    torch.manual_seed(0)
    model = genzoo.create("hierarchy", "nvae.hierarchy", **CIFAR10_FLAGS)
    check_run(model, photo_images(2, (3, 32, 32)))


@pytest.mark.parametrize(
    "key, layout",
    [("nvae.hierarchy", {"num_latent_scales": 3, "num_groups_per_scale": 1}), ("baselines.standard_vae", {})],
)
def test_image_size_must_fit_the_downsampling(registry, key, layout):
    with pytest.raises(
        ValueError, match=r"image size 28x28 with padding=0 gives 28x28, which is not a multiple of"
    ):
        registry.create(
            "hierarchy",
            key,
            image_shape=(1, 28, 28),
            num_channels=4,
            latent_chs=2,
            **layout,
        )
