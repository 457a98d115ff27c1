"""NVAE's multi-scale hierarchy (Vahdat & Kautz 2020, Sec. 3 and Fig. 2; official ``model.py``).

Bottom-up: a 3x3 stem on ``2x - 1``, pre-process blocks (each ends in a "down" cell doubling the
channels), then an encoder tower over ``num_latent_scales`` scales (finest first) whose feature
after each group feeds one latent group, and ``encoder0`` (ELU, 1x1 conv, ELU) for the top group.
Top-down: a learned input at the coarsest scale, then per group (coarsest first) decoder cells,
the group's posterior (from an encoder combiner of the matching bottom-up feature and the decoder
state) and prior (from the decoder state), and a decoder combiner of the state and ``z``; between
scales an "up" cell halves the channels. Post-process blocks (each starting with an "up" cell)
and an ELU + 3x3 conv head give the likelihood parameters.

Every cell, the gate, the latent group and the likelihood are built from registry keys, so any
one of them can be swapped alone; the combiners (:mod:`.combiners`), stem, ``encoder0`` and
head are NVAE's own weight-normalized convolutions; the layout of scales and slots is
:mod:`.layout`'s. Each part is built in its own method, as the official ``init_*`` methods do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import MappingProxyType

import torch
from einops import repeat
from torch import nn
from torch.distributions import Normal

from genzoo.errors import ConfigError
from genzoo.interfaces import (
    GroupInfo,
    Hierarchy,
    HierarchyOutput,
    LatentGroup,
    LatentOutput,
    OutputLikelihood,
)
from genzoo.interfaces.hierarchy import LatentStep
from genzoo.io.validation import check_bool, check_int
from genzoo.layers.activations import ELU
from genzoo.layers.composition import SpecLike, build_likelihood, crop_center, pad_center, padded_shape
from genzoo.plugin.component_spec import ComponentSpec
from genzoo.plugin.registry import component
from genzoo_plugins.nvae.combiners import DecoderCombiner, EncoderCombiner
from genzoo_plugins.nvae.layout import (
    CHANNEL_MULT,
    DECODER_EXPANSION,
    POSTPROCESS_EXPANSION,
    CellMaker,
    groups_per_scale,
)
from genzoo_plugins.nvae.weight_norm import wn_conv2d

DEFAULT_LATENT_GROUP = ComponentSpec("nvae.residual_normal", MappingProxyType({"num_flows": 1}))
"""Residual normal groups with one pair of autoregressive flows (official CIFAR-10 ``--num_nf 1``)."""
LIKELIHOODS = {
    "binary_default": ComponentSpec("nvae.bernoulli"),
    "multibit_default": ComponentSpec(
        "nvae.discretized_mix_logistic", MappingProxyType({"num_mixtures": 10})
    ),
}
"""NVAE's output distributions (Sec. 4): Bernoulli for binarized images, a 10-component
discretized mixture of logistics otherwise."""


# -- the hierarchy -------------------------------------------------------------------------------
@component(
    "hierarchy",
    "nvae.hierarchy",
    description="NVAE: latent groups over several scales, residual cells, learned top input",
    accepts=["num_bits"],
    example=dict(
        num_channels=8,
        num_latent_scales=2,
        num_groups_per_scale=2,
        latent_chs=4,
        num_preprocess_cells=1,
        num_postprocess_cells=1,
        num_cells_per_group_enc=1,
        num_cells_per_group_dec=1,
    ),
)
class NVAEHierarchy(Hierarchy):
    """NVAE: a deep hierarchical VAE with latent groups over several scales.

    The defaults are the official CIFAR-10 command of the NVAE README (``num_channels_enc/dec
    128``, 1 latent scale of 30 groups of 20 channels, 1 pre/post-process block of 2 cells, 2
    cells per group in encoder and decoder, one flow per group, 10 logistic mixtures); see
    ``docs/architectures.md``.

    :param image_shape: ``(C, H, W)`` of the scored images.
    :param padding: zero pixels added on every side before the stem (NVAE: 2 for 28x28 MNIST);
        ``H + 2 padding`` must be a multiple of ``2 ** (num_preprocess_blocks +
        num_latent_scales - 1)``, and only the ``H x W`` interior is scored.
    :param num_channels: channels after the stem (``num_channels_enc == num_channels_dec``).
    :param num_latent_scales: spatial scales carrying latent groups.
    :param num_groups_per_scale: groups at the finest latent scale (at every scale unless
        ``adaptive_groups``, which halves them per coarser scale, not below
        ``min_groups_per_scale``).
    :param latent_chs: channels of every group's ``z`` (``num_latent_per_group``).
    :param num_preprocess_blocks, num_preprocess_cells: pre-process blocks and cells per block;
        the last cell of a block is a "down" cell.
    :param num_postprocess_blocks, num_postprocess_cells: likewise, each block starting with an
        "up" cell; must equal ``num_preprocess_blocks`` so the output has the input's size.
    :param num_cells_per_group_enc, num_cells_per_group_dec: cells per group in the towers.
    :param encoder_cell, decoder_cell, preprocess_cell, postprocess_cell: cell specs (a key or
        ``{key: ..., options}``); between-scale "down"/"up" cells use the encoder/decoder cell.
        Cells that take an ``expansion`` keyword get 6 (decoder) or 3 (post-process) unless
        their spec sets it.
    :param gate: channel gate spec given to every cell, or ``None`` for none.
    :param latent_group: latent group spec; ``enc_chs``, ``dec_chs``, ``latent_chs`` and
        ``top`` are set by the hierarchy.
    :param likelihood: output likelihood spec; default Bernoulli when ``num_bits == 1``,
        else a 10-mixture discretized logistic.
    :param num_bits: bit depth of the images; default 1 for one channel, 8 otherwise.

    Component keys are looked up in the registry the hierarchy is created from
    (:func:`genzoo.current_registry`; the process-wide one when it is constructed directly).

    With one scale of one group the model is the official "vanilla VAE": no tower cells and no
    combiners (``num_cells_per_group_*`` are unused); ``z`` enters the post-process blocks
    through a 1x1 conv.
    """

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        num_channels: int = 128,
        num_latent_scales: int = 1,
        num_groups_per_scale: int = 30,
        adaptive_groups: bool = False,
        min_groups_per_scale: int = 1,
        latent_chs: int = 20,
        num_preprocess_blocks: int = 1,
        num_preprocess_cells: int = 2,
        num_postprocess_blocks: int = 1,
        num_postprocess_cells: int = 2,
        num_cells_per_group_enc: int = 2,
        num_cells_per_group_dec: int = 2,
        encoder_cell: SpecLike = "nvae.residual_cell",
        decoder_cell: SpecLike = "nvae.separable_cell",
        preprocess_cell: SpecLike = "nvae.residual_cell",
        postprocess_cell: SpecLike = "nvae.separable_cell",
        gate: SpecLike | None = "nvae.se",
        latent_group: SpecLike = DEFAULT_LATENT_GROUP,
        likelihood: SpecLike | None = None,
        num_bits: int | None = None,
        padding: int = 0,
    ) -> None:
        super().__init__(image_shape=image_shape)
        image_chs, height, width = self.image_shape
        self.num_channels = check_int("num_channels", num_channels, 1)
        num_scales = check_int("num_latent_scales", num_latent_scales, 1)
        check_int("num_groups_per_scale", num_groups_per_scale, 1)
        check_int("min_groups_per_scale", min_groups_per_scale, 1)
        self.latent_chs = check_int("latent_chs", latent_chs, 1)
        self.num_preprocess_blocks = check_int("num_preprocess_blocks", num_preprocess_blocks, 0)
        check_int("num_preprocess_cells", num_preprocess_cells, 1)
        check_int("num_postprocess_blocks", num_postprocess_blocks, 0)
        check_int("num_postprocess_cells", num_postprocess_cells, 1)
        check_int("num_cells_per_group_enc", num_cells_per_group_enc, 0)
        check_int("num_cells_per_group_dec", num_cells_per_group_dec, 0)
        if num_postprocess_blocks != num_preprocess_blocks:
            raise ConfigError(
                f"num_postprocess_blocks={num_postprocess_blocks!r}; expected it to equal "
                f"num_preprocess_blocks={num_preprocess_blocks!r}, since each post-process block "
                "undoes one pre-process downsampling"
            )
        check_bool("adaptive_groups", adaptive_groups)

        # Official: the top scale sits 2 ** (pre-process blocks + scales - 1) below the image.
        self.downsampling = 2 ** (num_preprocess_blocks + num_scales - 1)
        self.padded_shape = padded_shape(height, width, self.downsampling, padding)
        finest_first = groups_per_scale(
            num_scales, num_groups_per_scale, adaptive=adaptive_groups, min_groups=min_groups_per_scale
        )
        self.groups_per_scale = finest_first[::-1]  # coarsest (scale 0) first, as GroupInfo
        self.vanilla = num_scales == 1 and num_groups_per_scale == 1
        self._groups = tuple(self._group_infos())

        cells = CellMaker(gate)
        specs = {
            name: ComponentSpec.parse(value, where=name)
            for name, value in (
                ("encoder_cell", encoder_cell),
                ("decoder_cell", decoder_cell),
                ("preprocess_cell", preprocess_cell),
                ("postprocess_cell", postprocess_cell),
                ("latent_group", latent_group),
            )
        }
        # The parts in the official model's order (its init_* methods), which is also the order
        # their weights are drawn in: the same seed gives the same initial model.
        self._build_preprocess(cells, specs["preprocess_cell"], image_chs, num_preprocess_cells)
        self._build_encoder(cells, specs["encoder_cell"], finest_first, num_cells_per_group_enc)
        self._build_latent_groups(specs["latent_group"])
        self._build_decoder(cells, specs["decoder_cell"], num_cells_per_group_dec)
        self._build_postprocess(
            cells, specs["postprocess_cell"], num_postprocess_blocks, num_postprocess_cells
        )
        self.output_likelihood = build_likelihood(
            likelihood, image_chs=image_chs, num_bits=num_bits, **LIKELIHOODS
        )
        self.num_bits = self.output_likelihood.num_bits
        self.head = nn.Sequential(ELU(), wn_conv2d(self.num_channels, self.output_likelihood.param_chs, 3))

    # -- the parts, built in order --------------------------------------------------------------
    def _build_preprocess(
        self, cells: CellMaker, spec: ComponentSpec, image_chs: int, num_cells: int
    ) -> None:
        """The 3x3 stem on the image, then pre-process blocks, each ending in a "down" cell that
        doubles the channels (official ``init_pre_process``)."""
        c = self.num_channels
        self.stem = wn_conv2d(image_chs, c, 3)
        pre = []
        for b in range(self.num_preprocess_blocks):
            chs = c * CHANNEL_MULT**b
            pre += [cells(spec, chs, chs, "none") for _ in range(num_cells - 1)]
            pre.append(cells(spec, chs, CHANNEL_MULT * chs, "down"))
        self.preprocess = nn.Sequential(*pre)

    def _build_encoder(
        self, cells: CellMaker, spec: ComponentSpec, finest_first: list[int], num_cells: int
    ) -> None:
        """The bottom-up tower, finest scale first, its combiners and ``encoder0`` (official
        ``init_encoder_tower`` and ``init_encoder0``)."""
        num_scales = len(finest_first)
        # encoder_groups[e][g]: the cells of group g at encoder scale e (finest first);
        # encoder_down[e]: the "down" cell after encoder scale e. The vanilla VAE has neither.
        self.encoder_groups = nn.ModuleList()
        self.encoder_down = nn.ModuleList()
        for e, count in enumerate([] if self.vanilla else finest_first):
            chs = self.chs_at_scale(num_scales - 1 - e)
            self.encoder_groups.append(
                nn.ModuleList(
                    nn.Sequential(*(cells(spec, chs, chs, "none") for _ in range(num_cells)))
                    for _ in range(count)
                )
            )
            if e < num_scales - 1:
                self.encoder_down.append(cells(spec, chs, CHANNEL_MULT * chs, "down"))
        # encoder_combiners[i - 1] serves decoder group i; the top group reads encoder0 alone.
        self.encoder_combiners = nn.ModuleList(
            EncoderCombiner(self.chs_at_scale(info.scale), self.chs_at_scale(info.scale))
            for info in ([] if self.vanilla else self._groups[1:])
        )
        top_chs = self.chs_at_scale(0)
        self.encoder0 = nn.Sequential(ELU(), wn_conv2d(top_chs, top_chs, 1), ELU())

    def _build_latent_groups(self, spec: ComponentSpec) -> None:
        """One latent group per :class:`GroupInfo`, coarsest first; the first is the top group."""
        self.latent_groups = nn.ModuleList(
            spec.build(
                "latent_group",
                enc_chs=self.chs_at_scale(info.scale),
                dec_chs=self.chs_at_scale(info.scale),
                latent_chs=self.latent_chs,
                top=info.index == 0,
            )
            for info in self._groups
        )

    def _build_decoder(self, cells: CellMaker, spec: ComponentSpec, num_cells: int) -> None:
        """The top-down path: a learned input, cells and a combiner per group, an "up" cell
        between scales (official ``init_decoder_tower``); the vanilla VAE has a 1x1 stem from
        ``z`` instead."""
        # decoder_groups[i]: the cells before group i (none before the top group);
        # decoder_up[s]: the "up" cell after decoder scale s.
        self.decoder_groups = nn.ModuleList()
        self.decoder_combiners = nn.ModuleList()
        self.decoder_up = nn.ModuleList()
        top_chs = self.chs_at_scale(0)
        if self.vanilla:
            self.decoder_input = None
            self.decoder_stem = wn_conv2d(self.latent_chs, top_chs, 1)
            return
        top = self._groups[0]
        # The official prior_ftr0: a learned constant input, initialized U[0, 1).
        self.decoder_input = nn.Parameter(torch.rand(top_chs, top.height, top.width))
        self.decoder_stem = None
        for info in self._groups:
            chs = self.chs_at_scale(info.scale)
            n = 0 if info.index == 0 else num_cells
            self.decoder_groups.append(
                nn.Sequential(*(cells(spec, chs, chs, "none", DECODER_EXPANSION) for _ in range(n)))
            )
            self.decoder_combiners.append(DecoderCombiner(chs, self.latent_chs))
            if self._ends_scale(info):
                self.decoder_up.append(cells(spec, chs, chs // CHANNEL_MULT, "up", DECODER_EXPANSION))

    def _build_postprocess(
        self, cells: CellMaker, spec: ComponentSpec, num_blocks: int, num_cells: int
    ) -> None:
        """Post-process blocks, each starting with an "up" cell that halves the channels
        (official ``init_post_process``); separable cells there use expansion 3."""
        post = []
        for b in range(num_blocks):
            chs = self.chs_at_scale(len(self.groups_per_scale) - 1) // CHANNEL_MULT ** (b + 1)
            post.append(cells(spec, CHANNEL_MULT * chs, chs, "up", POSTPROCESS_EXPANSION))
            post += [cells(spec, chs, chs, "none", POSTPROCESS_EXPANSION) for _ in range(num_cells - 1)]
        self.postprocess = nn.Sequential(*post)

    # -- layout -----------------------------------------------------------------------------------
    def chs_at_scale(self, scale: int) -> int:
        """Channels of encoder and decoder at latent scale ``scale`` (0 = coarsest): doubled at
        each of the ``num_preprocess_blocks + num_latent_scales - 1 - scale`` downsamplings."""
        depth = self.num_preprocess_blocks + len(self.groups_per_scale) - 1 - scale
        return self.num_channels * CHANNEL_MULT**depth

    def _group_infos(self) -> Iterator[GroupInfo]:
        index = 0
        top_h, top_w = (s // self.downsampling for s in self.padded_shape)
        for scale, count in enumerate(self.groups_per_scale):
            for _ in range(count):
                yield GroupInfo(index, scale, count, self.latent_chs, top_h * 2**scale, top_w * 2**scale)
                index += 1

    def _ends_scale(self, info: GroupInfo) -> bool:
        """Whether ``info`` is the last group of a scale with a finer scale below it."""
        last_scale = len(self.groups_per_scale) - 1
        return info.scale < last_scale and info.index == sum(self.groups_per_scale[: info.scale + 1]) - 1

    # -- the Hierarchy contract -------------------------------------------------------------------
    @property
    def groups(self) -> list[GroupInfo]:
        return list(self._groups)

    @property
    def likelihood(self) -> OutputLikelihood:
        return self.output_likelihood

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The top group's feature, and the bottom-up features of groups 1.. (top first)."""
        s = self.preprocess(self.stem(2.0 * pad_center(x, *self.padded_shape) - 1.0))
        features = []
        for e, groups in enumerate(self.encoder_groups):
            for cells in groups:
                s = cells(s)
                features.append(s)
            if e < len(self.encoder_down):
                s = self.encoder_down[e](s)
        # The tower runs finest first and the decoder coarsest first; the last feature (the
        # coarsest) goes through encoder0 to the top group instead of a combiner.
        features = features[:-1][::-1]
        return self.encoder0(s), features

    def _decode(
        self, top_z: torch.Tensor, next_z: Callable[[int, torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """The likelihood parameters of the ``H x W`` interior; ``next_z(i, state)`` draws group
        ``i``'s sample (``i >= 1``) given the decoder state just before it."""
        if self.vanilla:
            s = self.decoder_stem(top_z)
        else:
            s = repeat(self.decoder_input, "c h w -> b c h w", b=top_z.shape[0])
            up = iter(self.decoder_up)
            for info, cells, combiner in zip(self._groups, self.decoder_groups, self.decoder_combiners):
                s = cells(s)
                s = combiner(s, top_z if info.index == 0 else next_z(info.index, s))
                if self._ends_scale(info):
                    s = next(up)(s)
        params = self.head(self.postprocess(s))
        return crop_center(params, *self.image_shape[1:])

    def forward(self, x: torch.Tensor) -> HierarchyOutput:
        top_feature, features = self._encode(x)
        groups: list[LatentGroup] = list(self.latent_groups)
        latents = [groups[0](top_feature, None)]

        def posterior_sample(i: int, state: torch.Tensor) -> torch.Tensor:
            feature = self.encoder_combiners[i - 1](features[i - 1], state)
            latents.append(groups[i](feature, state))
            return latents[-1].z

        params = self._decode(latents[0].z, posterior_sample)
        return HierarchyOutput(
            log_px=self.output_likelihood.log_prob(params, x), latents=latents, params=params
        )

    def sample_params(self, num_samples: int, temperature: float = 1.0) -> torch.Tensor:
        groups: list[LatentGroup] = list(self.latent_groups)
        top = self._groups[0]
        z = groups[0].sample(None, temperature=temperature, size=(num_samples, top.height, top.width))
        return self._decode(z, lambda i, state: groups[i].sample(state, temperature=temperature))

    def traverse(
        self,
        draw: Callable[[LatentStep], torch.Tensor],
        *,
        x: torch.Tensor | None = None,
        num_samples: int | None = None,
    ) -> torch.Tensor:
        """The top-down pass of :meth:`forward` and :meth:`sample_params` with each group's
        ``z`` chosen by ``draw`` (see :meth:`genzoo.Hierarchy.traverse`); a posterior reads the
        encoder path exactly as ``forward`` does (``encoder0`` for the top group, a combiner of
        the bottom-up feature and the decoder state for the others)."""
        batch = self._batch_size(x, num_samples)
        groups: list[LatentGroup] = list(self.latent_groups)
        top_feature, features = self._encode(x) if x is not None else (None, [])

        def step(i: int, state: torch.Tensor | None) -> torch.Tensor:
            info, group = self._groups[i], groups[i]
            posterior: Callable[[], LatentOutput] | None = None
            if top_feature is not None:

                def posterior() -> LatentOutput:
                    if i == 0:
                        return group(top_feature, None)
                    return group(self.encoder_combiners[i - 1](features[i - 1], state), state)

            def prior() -> Normal:
                return group.prior_distribution(state, size=(batch, info.height, info.width))

            return draw(LatentStep(info, state, batch, prior=prior, posterior=posterior))

        return self._decode(step(0, None), step)

    # -- efficiency columns -------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component kind (the ``params_*`` columns); they sum to the total."""
        parts: dict[str, list[nn.Module | nn.Parameter | None]] = {
            "stem": [self.stem],
            "preprocess_cells": [self.preprocess],
            "encoder_cells": [self.encoder_groups, self.encoder_down],
            "encoder_combiners": [self.encoder_combiners],
            "encoder0": [self.encoder0],
            "latent_groups": [self.latent_groups],
            "decoder_input": [self.decoder_input, self.decoder_stem],
            "decoder_cells": [self.decoder_groups, self.decoder_up],
            "decoder_combiners": [self.decoder_combiners],
            "postprocess_cells": [self.postprocess],
            "head": [self.head],
            "likelihood": [self.output_likelihood],
        }
        counts = {}
        for name, items in parts.items():
            params: list[nn.Parameter] = []
            for item in items:
                if isinstance(item, nn.Parameter):
                    params.append(item)
                elif item is not None:
                    params.extend(item.parameters())
            counts[name] = sum(p.numel() for p in params)
        return counts
