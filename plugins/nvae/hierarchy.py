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
one of them can be swapped alone; the combiners, stem, ``encoder0`` and head are NVAE's own
weight-normalized convolutions and live here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn

from genzoo.interfaces import Cell, GroupInfo, Hierarchy, HierarchyOutput, LatentGroup, OutputLikelihood
from genzoo.registry import Registry
from genzoo.spec import ComponentSpec
from genzoo_plugins.nvae.activations import ELU
from genzoo_plugins.nvae.weight_norm import wn_conv2d

SpecLike = ComponentSpec | str | Mapping[str, Any]

CHANNEL_MULT = 2  # channels double at every "down" cell and halve at every "up" cell (official)
DECODER_EXPANSION = 6  # separable decoder cells (Sec. 3.1.2)
POSTPROCESS_EXPANSION = 3  # separable post-process cells use a smaller one (official arch)
DEFAULT_LATENT_GROUP = ComponentSpec("nvae.residual_normal", MappingProxyType({"num_flows": 1}))
"""Residual normal groups with one pair of autoregressive flows (official CIFAR-10 ``--num_nf 1``)."""


# -- helpers shared with other hierarchies -------------------------------------------------------
def groups_per_scale(num_scales: int, num_groups: int, *, adaptive: bool, min_groups: int = 1) -> list[int]:
    """Groups at each scale, **finest first**: ``num_groups`` at the finest scale and, with
    ``adaptive``, half as many at each coarser scale but never fewer than ``min_groups``
    (NVAE Sec. 3.1, "adaptive group sizes"; official ``utils.groups_per_scale``)."""
    counts, n = [], num_groups
    for _ in range(num_scales):
        counts.append(n)
        if adaptive:
            n = max(min_groups, n // 2)
    return counts


def padded_shape(height: int, width: int, multiple: int, padding: int) -> tuple[int, int]:
    """``(height + 2 padding, width + 2 padding)``, which must be multiples of the total
    downsampling ``multiple``; a ValueError says what to change otherwise."""
    require_int("padding", padding, 0)
    shape = (height + 2 * padding, width + 2 * padding)
    if shape[0] % multiple or shape[1] % multiple:
        raise ValueError(
            f"image size {height}x{width} with padding={padding} gives {shape[0]}x{shape[1]}, which is not "
            f"a multiple of the total downsampling {multiple}; set padding so that it is (NVAE pads 28x28 "
            "MNIST with padding 2 to 32x32) or use fewer downsampling blocks or scales"
        )
    return shape


def pad_center(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero-pad ``x`` (images in ``[0, 1]``) to ``height x width``, centred; an odd remainder goes
    to the bottom/right. NVAE pads 28x28 MNIST by 2 pixels on each side (``transforms.Pad(2)``)."""
    dh, dw = height - x.shape[-2], width - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), value=0.0)


def crop_center(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The ``height x width`` centre of ``x``: the inverse of :func:`pad_center`."""
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


def require_int(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is an integer ``>= minimum``, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r}; expected an integer >= {minimum}")
    return value


def build_likelihood(spec: SpecLike | None, *, image_chs: int, num_bits: int | None) -> OutputLikelihood:
    """The output likelihood for ``image_chs``-channel images.

    Without ``spec``, NVAE's choice: Bernoulli for binary images, a 10-component discretized
    mixture of logistics otherwise (Sec. 4). ``num_bits`` defaults to 1 for one channel
    (binarized MNIST) and 8 otherwise; a ``num_bits`` in ``spec`` wins over the default but must
    agree with an explicit ``num_bits``.
    """
    spec_bits = (
        None if spec is None else ComponentSpec.parse(spec, where="likelihood").options.get("num_bits")
    )
    if num_bits is not None:
        require_int("num_bits", num_bits, 1)
        if spec_bits is not None and spec_bits != num_bits:
            raise ValueError(
                f"num_bits={num_bits!r} disagrees with likelihood num_bits={spec_bits!r}; "
                "expected one of them, or the same value"
            )
    bits = num_bits if num_bits is not None else spec_bits
    if bits is None:
        bits = 1 if image_chs == 1 else 8
    if spec is None:
        if bits == 1:
            spec = ComponentSpec("nvae.bernoulli")
        else:
            spec = ComponentSpec("nvae.discretized_mix_logistic", {"num_mixtures": 10})
    spec = ComponentSpec.parse(spec, where="likelihood")
    return spec.build("likelihood", image_chs=image_chs, num_bits=bits)


def _make_gate(spec: ComponentSpec, chs: int) -> nn.Module:
    return spec.build("gate", chs=chs)


class _CellMaker:
    """Builds cells from specs, each with the shared gate, from the registry the hierarchy is
    being built from; used during construction only, so the model keeps no reference to it."""

    def __init__(self, gate: SpecLike | None) -> None:
        self.gate_layer = None
        if gate is not None:
            gate_spec = ComponentSpec.parse(gate, where="gate")
            gate_spec.entry("gate")  # a wrong key fails here, not inside a cell
            self.gate_layer = functools.partial(_make_gate, gate_spec)

    def __call__(
        self, spec: ComponentSpec, in_chs: int, out_chs: int, resample: str, expansion: int | None = None
    ) -> Cell:
        """A cell; ``expansion`` goes to cells whose registration ``accepts`` it and whose spec
        does not set it."""
        options = dict(spec.options)
        if expansion is not None and "expansion" not in options and "expansion" in spec.entry("cell").accepts:
            options["expansion"] = expansion
        return ComponentSpec(spec.key, options).build(
            "cell", in_chs=in_chs, out_chs=out_chs, resample=resample, gate_layer=self.gate_layer
        )


# -- NVAE's own small modules ------------------------------------------------------------------
class EncoderCombiner(nn.Module):
    """``feature + conv1x1(dec_state)``: the bottom-up feature a posterior reads (official
    ``EncCombinerCell``), so each posterior also depends on the groups above it."""

    def __init__(self, enc_chs: int, dec_chs: int) -> None:
        super().__init__()
        self.conv = wn_conv2d(dec_chs, enc_chs, 1)

    def forward(self, feature: torch.Tensor, dec_state: torch.Tensor) -> torch.Tensor:
        return feature + self.conv(dec_state)


class DecoderCombiner(nn.Module):
    """``conv1x1(concat(state, z))``: how a group's sample enters the top-down path (official
    ``DecCombinerCell``)."""

    def __init__(self, dec_chs: int, latent_chs: int) -> None:
        super().__init__()
        self.conv = wn_conv2d(dec_chs + latent_chs, dec_chs, 1)

    def forward(self, state: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([state, z], dim=1))


# -- the hierarchy -------------------------------------------------------------------------------
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
        self.num_channels = c = require_int("num_channels", num_channels, 1)
        num_scales = require_int("num_latent_scales", num_latent_scales, 1)
        require_int("num_groups_per_scale", num_groups_per_scale, 1)
        require_int("min_groups_per_scale", min_groups_per_scale, 1)
        self.latent_chs = require_int("latent_chs", latent_chs, 1)
        self.num_preprocess_blocks = require_int("num_preprocess_blocks", num_preprocess_blocks, 0)
        require_int("num_preprocess_cells", num_preprocess_cells, 1)
        require_int("num_postprocess_blocks", num_postprocess_blocks, 0)
        require_int("num_postprocess_cells", num_postprocess_cells, 1)
        require_int("num_cells_per_group_enc", num_cells_per_group_enc, 0)
        require_int("num_cells_per_group_dec", num_cells_per_group_dec, 0)
        if num_postprocess_blocks != num_preprocess_blocks:
            raise ValueError(
                f"num_postprocess_blocks={num_postprocess_blocks!r}; expected it to equal "
                f"num_preprocess_blocks={num_preprocess_blocks!r}, since each post-process block "
                "undoes one pre-process downsampling"
            )
        if not isinstance(adaptive_groups, bool):
            raise ValueError(f"adaptive_groups={adaptive_groups!r}; expected true or false")

        # Official: the top scale sits 2 ** (pre-process blocks + scales - 1) below the image.
        self.downsampling = 2 ** (num_preprocess_blocks + num_scales - 1)
        self.padded_shape = padded_shape(height, width, self.downsampling, padding)
        finest_first = groups_per_scale(
            num_scales, num_groups_per_scale, adaptive=adaptive_groups, min_groups=min_groups_per_scale
        )
        self.groups_per_scale = finest_first[::-1]  # coarsest (scale 0) first, as GroupInfo
        self.vanilla = num_scales == 1 and num_groups_per_scale == 1
        self._groups = tuple(self._group_infos())

        cell = _CellMaker(gate)
        encoder_cell = ComponentSpec.parse(encoder_cell, where="encoder_cell")
        decoder_cell = ComponentSpec.parse(decoder_cell, where="decoder_cell")
        preprocess_cell = ComponentSpec.parse(preprocess_cell, where="preprocess_cell")
        postprocess_cell = ComponentSpec.parse(postprocess_cell, where="postprocess_cell")
        latent_spec = ComponentSpec.parse(latent_group, where="latent_group")
        top_chs = self.chs_at_scale(0)

        self.stem = wn_conv2d(image_chs, c, 3)
        pre = []
        for b in range(num_preprocess_blocks):
            chs = c * CHANNEL_MULT**b
            pre += [cell(preprocess_cell, chs, chs, "none") for _ in range(num_preprocess_cells - 1)]
            pre.append(cell(preprocess_cell, chs, CHANNEL_MULT * chs, "down"))
        self.preprocess = nn.Sequential(*pre)

        # encoder_groups[e][g]: the cells of group g at encoder scale e (finest first);
        # encoder_down[e]: the "down" cell after encoder scale e. The vanilla VAE has neither.
        self.encoder_groups = nn.ModuleList()
        self.encoder_down = nn.ModuleList()
        for e, count in enumerate([] if self.vanilla else finest_first):
            chs = self.chs_at_scale(num_scales - 1 - e)
            self.encoder_groups.append(
                nn.ModuleList(
                    nn.Sequential(
                        *(cell(encoder_cell, chs, chs, "none") for _ in range(num_cells_per_group_enc))
                    )
                    for _ in range(count)
                )
            )
            if e < num_scales - 1:
                self.encoder_down.append(cell(encoder_cell, chs, CHANNEL_MULT * chs, "down"))
        # encoder_combiners[i - 1] serves decoder group i; the top group reads encoder0 alone.
        self.encoder_combiners = nn.ModuleList(
            EncoderCombiner(self.chs_at_scale(info.scale), self.chs_at_scale(info.scale))
            for info in ([] if self.vanilla else self._groups[1:])
        )
        self.encoder0 = nn.Sequential(ELU(), wn_conv2d(top_chs, top_chs, 1), ELU())

        self.latent_groups = nn.ModuleList(
            latent_spec.build(
                "latent_group",
                enc_chs=self.chs_at_scale(info.scale),
                dec_chs=self.chs_at_scale(info.scale),
                latent_chs=self.latent_chs,
                top=info.index == 0,
            )
            for info in self._groups
        )

        # decoder_groups[i]: the cells before group i (none before the top group);
        # decoder_up[s]: the "up" cell after decoder scale s.
        self.decoder_groups = nn.ModuleList()
        self.decoder_combiners = nn.ModuleList()
        self.decoder_up = nn.ModuleList()
        if self.vanilla:
            self.decoder_input = None
            self.decoder_stem = wn_conv2d(self.latent_chs, top_chs, 1)
        else:
            top = self._groups[0]
            # The official prior_ftr0: a learned constant input, initialized U[0, 1).
            self.decoder_input = nn.Parameter(torch.rand(top_chs, top.height, top.width))
            self.decoder_stem = None
            for info in self._groups:
                chs = self.chs_at_scale(info.scale)
                n = 0 if info.index == 0 else num_cells_per_group_dec
                self.decoder_groups.append(
                    nn.Sequential(
                        *(cell(decoder_cell, chs, chs, "none", DECODER_EXPANSION) for _ in range(n))
                    )
                )
                self.decoder_combiners.append(DecoderCombiner(chs, self.latent_chs))
                if self._ends_scale(info):
                    self.decoder_up.append(
                        cell(decoder_cell, chs, chs // CHANNEL_MULT, "up", DECODER_EXPANSION)
                    )

        post = []
        for b in range(num_postprocess_blocks):
            chs = self.chs_at_scale(num_scales - 1) // CHANNEL_MULT ** (b + 1)
            post.append(cell(postprocess_cell, CHANNEL_MULT * chs, chs, "up", POSTPROCESS_EXPANSION))
            post += [
                cell(postprocess_cell, chs, chs, "none", POSTPROCESS_EXPANSION)
                for _ in range(num_postprocess_cells - 1)
            ]
        self.postprocess = nn.Sequential(*post)

        self.output_likelihood = build_likelihood(likelihood, image_chs=image_chs, num_bits=num_bits)
        self.num_bits = self.output_likelihood.num_bits
        self.head = nn.Sequential(ELU(), wn_conv2d(c, self.output_likelihood.param_chs, 3))

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


def register(registry: Registry) -> None:
    registry.add(
        "hierarchy",
        "nvae.hierarchy",
        NVAEHierarchy,
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
