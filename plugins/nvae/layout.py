"""How NVAE lays out its scales and groups, and builds the cell of each slot (Sec. 3.1 and
the official ``model.py``): channel counts per scale, adaptive group sizes, and the expansion
each separable slot gets."""

from __future__ import annotations

import functools

from torch import nn

from genzoo.interfaces import Cell
from genzoo.layers.composition import SpecLike
from genzoo.plugin.component_spec import ComponentSpec

CHANNEL_MULT = 2  # channels double at every "down" cell and halve at every "up" cell (official)
DECODER_EXPANSION = 6  # separable decoder cells (Sec. 3.1.2)
POSTPROCESS_EXPANSION = 3  # separable post-process cells use a smaller one (official arch)


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


def _make_gate(spec: ComponentSpec, chs: int) -> nn.Module:
    return spec.build("gate", chs=chs)


class CellMaker:
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
