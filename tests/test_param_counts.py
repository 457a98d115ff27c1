"""Seed exercise 1 at the cell level: the cells' parameter counts equal closed forms derived here
from the architecture (NVAE Sec. 3.1.1, Fig. 3; the official ``InvertedResidual`` and ``Cell``),
and docs/param_counts.md (written by benchmarks/cells/param_counts.py) shows the modules' counts."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import genzoo
from genzoo_plugins.baselines import conv_cell, none_gate
from genzoo_plugins.nvae import decoder_cell, encoder_cell, se

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (32, 64, 128, 256)


# --- closed forms, layer by layer ------------------------------------------------------------


def conv(in_chs: int, out_chs: int, k: int, *, groups: int = 1, bias: bool, weight_norm: bool) -> int:
    """Weights, the bias, and one log-norm per output channel under weight normalization."""
    return out_chs * (in_chs // groups) * k * k + (out_chs if bias else 0) + (out_chs if weight_norm else 0)


def batch_norm(chs: int) -> int:
    return 2 * chs  # affine weight and bias; running statistics are buffers


def linear(in_features: int, out_features: int) -> int:
    return in_features * out_features + out_features


def se_gate(c: int) -> int:
    hidden = max(c // 16, 4)
    return linear(c, hidden) + linear(hidden, c)


def separable_cell(c: int, expansion: int = 6, k: int = 5) -> int:
    """BN -> 1x1 conv to E C -> BN -> Swish -> k x k depthwise -> BN -> Swish -> 1x1 conv back
    -> BN; plain convs without bias (each feeds a BatchNorm)."""
    hidden = expansion * c
    return (
        batch_norm(c)
        + conv(c, hidden, 1, bias=False, weight_norm=False)
        + batch_norm(hidden)
        + conv(hidden, hidden, k, groups=hidden, bias=False, weight_norm=False)
        + batch_norm(hidden)
        + conv(hidden, c, 1, bias=False, weight_norm=False)
        + batch_norm(c)
    )


def two_conv_cell(c: int, *, weight_norm: bool, k: int = 3) -> int:
    """(BN -> Swish -> k x k conv with bias) twice; the skip is the identity at in = out."""
    return 2 * (batch_norm(c) + conv(c, c, k, bias=True, weight_norm=weight_norm))


GATES = {"nvae.se": se_gate, "baselines.none_gate": lambda c: 0, None: lambda c: 0}
CASES = [
    # (cell key, options, gate key, closed form without the gate)
    ("nvae.separable_cell", {}, "nvae.se", separable_cell),
    ("nvae.separable_cell", {"expansion": 3}, None, lambda c: separable_cell(c, expansion=3)),
    ("nvae.separable_cell", {"expansion": 3}, "nvae.se", lambda c: separable_cell(c, expansion=3)),
    ("baselines.conv_cell", {}, "nvae.se", lambda c: two_conv_cell(c, weight_norm=False)),
    ("baselines.conv_cell", {}, None, lambda c: two_conv_cell(c, weight_norm=False)),
    ("baselines.conv_cell", {}, "baselines.none_gate", lambda c: two_conv_cell(c, weight_norm=False)),
    ("nvae.residual_cell", {}, "nvae.se", lambda c: two_conv_cell(c, weight_norm=True)),
    ("nvae.residual_cell", {}, None, lambda c: two_conv_cell(c, weight_norm=True)),
]


@pytest.fixture(scope="module")
def registry() -> genzoo.Registry:
    reg = genzoo.Registry()
    for module in (se, none_gate, encoder_cell, decoder_cell, conv_cell):
        reg.add_declared(module)
    return reg


def module_count(registry, key: str, chs: int, gate: str | None, **options) -> int:
    gate_layer = None if gate is None else (lambda n: registry.create("gate", gate, chs=n))
    cell = registry.create("cell", key, in_chs=chs, out_chs=chs, gate_layer=gate_layer, **options)
    return sum(p.numel() for p in cell.parameters())


@pytest.mark.parametrize("chs", WIDTHS)
@pytest.mark.parametrize(("key", "options", "gate", "closed_form"), CASES)
def test_module_counts_equal_the_closed_forms(registry, key, options, gate, closed_form, chs):
    assert module_count(registry, key, chs, gate, **options) == closed_form(chs) + GATES[gate](chs)


@pytest.mark.parametrize("chs", WIDTHS)
def test_the_documented_polynomials(chs):
    """The simplified forms docs/param_counts.md states (E = 6, k = 5; k = 3)."""
    s = max(chs // 16, 4)
    assert se_gate(chs) == 2 * chs * s + s + chs
    assert separable_cell(chs) + se_gate(chs) == 12 * chs**2 + 179 * chs + 2 * chs * s + s
    assert separable_cell(chs, expansion=3) == 6 * chs**2 + 91 * chs
    assert two_conv_cell(chs, weight_norm=False) + se_gate(chs) == 18 * chs**2 + 7 * chs + 2 * chs * s + s
    assert two_conv_cell(chs, weight_norm=True) + se_gate(chs) == 18 * chs**2 + 9 * chs + 2 * chs * s + s


def test_separable_cell_saves_a_third_for_wide_cells():
    ratios = [
        (separable_cell(c) + se_gate(c)) / (two_conv_cell(c, weight_norm=False) + se_gate(c)) for c in WIDTHS
    ]
    assert ratios == sorted(ratios, reverse=True)  # the saving grows with C ...
    assert 2 / 3 < ratios[-1] < 0.72  # ... towards 12 C^2 / 18 C^2


def documented_rows() -> dict[int, list[str]]:
    """The count rows of docs/param_counts.md: width -> its cells (after the width)."""
    rows = {}
    for line in (ROOT / "docs" / "param_counts.md").read_text().splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|(.*)\|\s*$", line)
        if match:
            rows[int(match.group(1))] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def test_document_shows_the_closed_forms_counts():
    """If this fails after a change to a cell, rerun ``python -m benchmarks.cells.param_counts``."""
    rows = documented_rows()
    assert sorted(rows) == list(WIDTHS)
    for c in WIDTHS:
        separable = separable_cell(c) + se_gate(c)
        conv_se = two_conv_cell(c, weight_norm=False) + se_gate(c)
        expected = [
            f"{separable:,}",
            f"{conv_se:,}",
            f"{two_conv_cell(c, weight_norm=False):,}",
            f"{two_conv_cell(c, weight_norm=True) + se_gate(c):,}",
            f"{separable / conv_se:.3f}",
        ]
        assert rows[c] == expected, (
            f"docs/param_counts.md is stale at C = {c}: rerun python -m benchmarks.cells.param_counts"
        )


def test_script_writes_the_table(tmp_path):
    """The script (counts only here; timing takes a while) writes the same count rows."""
    script = importlib.import_module("benchmarks.cells.param_counts")
    out = tmp_path / "param_counts.md"
    script.main(["--no-timing", "--output", str(out)])
    written = out.read_text()
    assert "python -m benchmarks.cells.param_counts" in written  # says how to rerun it
    for c in WIDTHS:
        assert f"| {c} | {separable_cell(c) + se_gate(c):,} |" in written
