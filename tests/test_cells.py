"""The cells and gates: NVAE's residual (encoder) and separable (decoder) cells, the SE gate, the
skip paths, and the baselines' standard conv cell and identity gate.

Each cell is built the way a hierarchy builds it, through a registry:
``registry.create("cell", key, in_chs=..., out_chs=..., resample=..., gate_layer=...)``.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

import genzoo
from genzoo_plugins.baselines import conv_cell, none_gate
from genzoo_plugins.baselines.conv_cell import ConvResidualCell
from genzoo_plugins.baselines.none_gate import NoGate
from genzoo_plugins.nvae import decoder_cell, encoder_cell, se
from genzoo_plugins.nvae.decoder_cell import SeparableCell
from genzoo_plugins.nvae.encoder_cell import ResidualCell
from genzoo_plugins.nvae.se import SqueezeExcitation
from genzoo_plugins.nvae.skip import FactorizedReduce, UpsampleSkip, make_skip

CELL_KEYS = ("nvae.residual_cell", "nvae.separable_cell", "baselines.conv_cell")
GATE_KEYS = ("nvae.se", "baselines.none_gate", None)
NVAE_CELLS = (ResidualCell, SeparableCell)


@pytest.fixture(scope="module")
def registry() -> genzoo.Registry:
    """A registry holding only the components of this file's modules."""
    reg = genzoo.Registry()
    for module in (se, encoder_cell, decoder_cell, conv_cell, none_gate):
        module.register(reg)
    return reg


def build(registry, key, in_chs, out_chs, resample="none", gate=None, **options):
    gate_layer = None if gate is None else (lambda chs: registry.create("gate", gate, chs=chs))
    return registry.create(
        "cell", key, in_chs=in_chs, out_chs=out_chs, resample=resample, gate_layer=gate_layer, **options
    )


def random_loss(out: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient reaches every layer: a plain sum would not, since the sum of a
    batch-normalized tensor does not depend on its input."""
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    return (out * weights).sum()


# -- registration ---------------------------------------------------------------------------


def test_modules_register_their_keys(registry):
    assert set(registry.keys("cell")) == set(CELL_KEYS)
    assert set(registry.keys("gate")) == {"nvae.se", "baselines.none_gate"}
    assert all(entry.description for entry in registry.list())


@pytest.mark.parametrize(
    ("key", "cls"),
    [("nvae.residual_cell", ResidualCell), ("nvae.separable_cell", SeparableCell),
     ("baselines.conv_cell", ConvResidualCell)],
)  # fmt: skip
def test_create_returns_the_cell_with_its_gate(registry, key, cls):
    cell = build(registry, key, 8, 8, gate="nvae.se")
    assert type(cell) is cls and isinstance(cell, genzoo.Cell)
    assert isinstance(cell.gate, SqueezeExcitation) and cell.gate.chs == 8
    assert isinstance(build(registry, key, 8, 8).gate, nn.Identity)


def test_create_gates(registry):
    assert type(registry.create("gate", "nvae.se", chs=8)) is SqueezeExcitation
    gate = registry.create("gate", "baselines.none_gate", chs=8)
    assert type(gate) is NoGate and isinstance(gate, genzoo.ChannelGate)
    assert list(gate.parameters()) == []
    x = torch.randn(2, 8, 3, 3)
    assert gate(x) is x
    with pytest.raises(genzoo.WrongKindError, match="nvae.residual_cell"):
        registry.create("gate", "nvae.residual_cell", chs=8)


# -- shapes and gradients for every cell x resample x gate ---------------------------------


@pytest.mark.parametrize(
    ("key", "resample", "gate", "chs"),
    list(itertools.product(CELL_KEYS, genzoo.interfaces.RESAMPLE_MODES, GATE_KEYS, [(2, 2), (3, 6), (3, 1)])),
)
def test_shapes_and_gradients(registry, key, resample, gate, chs):
    torch.manual_seed(0)
    in_chs, out_chs = chs
    cell = build(registry, key, in_chs, out_chs, resample=resample, gate=gate)
    x = torch.randn(2, in_chs, 4, 6)
    out = cell(x)
    size = {"none": (4, 6), "down": (2, 3), "up": (8, 12)}[resample]
    assert out.shape == (2, out_chs, *size)
    assert cell.output_size(4, 6) == size
    random_loss(out).backward()
    for name, p in cell.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("resample", genzoo.interfaces.RESAMPLE_MODES)
@pytest.mark.parametrize("key", CELL_KEYS)
def test_every_parameter_gets_a_gradient(registry, key, resample):
    """In eval mode; in training mode a bias just before a BatchNorm (the official code has a
    few) gets exactly zero gradient, since BN removes per-channel constants."""
    torch.manual_seed(0)
    cell = build(registry, key, 3, 6, resample=resample, gate="nvae.se").eval()
    random_loss(cell(torch.randn(2, 3, 4, 4))).backward()
    for name, p in cell.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# -- the residual form ----------------------------------------------------------------------


def zero_branch_end(cell: nn.Module) -> None:
    """Make the branch output zero: zero the affine of its last BN, or its last conv."""
    with torch.no_grad():
        if isinstance(cell, SeparableCell):
            cell.bn3.weight.zero_()
            cell.bn3.bias.zero_()
        elif parametrize.is_parametrized(cell.conv2):  # W = g v / (||v|| + eps): v = 0 gives W = 0
            cell.conv2.parametrizations.weight.original1.zero_()
            cell.conv2.bias.zero_()
        else:
            cell.conv2.weight.zero_()
            cell.conv2.bias.zero_()


@pytest.mark.parametrize("resample", genzoo.interfaces.RESAMPLE_MODES)
@pytest.mark.parametrize("key", CELL_KEYS)
def test_zero_branch_leaves_the_skip(registry, key, resample):
    torch.manual_seed(0)
    cell = build(registry, key, 4, 8, resample=resample, gate="nvae.se")
    zero_branch_end(cell)
    x = torch.randn(2, 4, 4, 4)
    expected = cell.skip(x)
    if key == "baselines.conv_cell" and resample == "up":
        expected = cell.skip(F.interpolate(x, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(cell(x), expected)


def residual_branch(cell: ResidualCell | ConvResidualCell, x: torch.Tensor) -> torch.Tensor:
    """The branch of the two-conv cells written out step by step (upsampling first)."""
    if cell.resample == "up":
        x = F.interpolate(x, scale_factor=2, mode="nearest")
    h = cell.conv1(F.silu(cell.bn1(x)))
    return cell.gate(cell.conv2(F.silu(cell.bn2(h))))


def separable_branch(cell: SeparableCell, x: torch.Tensor) -> torch.Tensor:
    if cell.resample == "up":
        x = F.interpolate(x, scale_factor=2, mode="nearest")
    h = F.silu(cell.bn1(cell.expand(cell.bn0(x))))
    h = F.silu(cell.bn2(cell.depthwise(h)))
    return cell.gate(cell.bn3(cell.project(h)))


@pytest.mark.parametrize("resample", genzoo.interfaces.RESAMPLE_MODES)
@pytest.mark.parametrize(
    ("key", "branch", "scale"),
    [("nvae.residual_cell", residual_branch, 0.1), ("nvae.separable_cell", separable_branch, 0.1),
     ("baselines.conv_cell", residual_branch, 1.0)],
)  # fmt: skip
def test_output_is_skip_plus_scaled_branch(registry, key, branch, scale, resample):
    """NVAE cells add 0.1 x the branch (Sec. 3.1); the standard cell adds the branch as is.
    Training-mode BN: nearest upsampling leaves the batch statistics unchanged, so computing
    it late (as the cells do) gives the same output as upsampling first."""
    torch.manual_seed(0)
    cell = build(registry, key, 4, 8, resample=resample, gate="nvae.se")
    x = torch.randn(3, 4, 4, 4)
    skip_in = (
        F.interpolate(x, scale_factor=2, mode="nearest")
        if key == "baselines.conv_cell" and resample == "up"
        else x
    )
    expected = cell.skip(skip_in) + scale * branch(cell, x)
    torch.testing.assert_close(cell(x), expected, rtol=1e-5, atol=1e-5)


# -- official details -----------------------------------------------------------------------


def test_separable_cell_layers_match_the_official_inverted_residual(registry):
    cell = build(registry, "nvae.separable_cell", 4, 4)
    hidden = 6 * 4
    assert cell.expand.out_channels == hidden and cell.project.in_channels == hidden
    assert cell.depthwise.groups == hidden == cell.depthwise.in_channels == cell.depthwise.out_channels
    assert cell.depthwise.weight.shape == (hidden, 1, 5, 5)
    for conv in (cell.expand, cell.depthwise, cell.project):  # each is followed by a BN
        assert conv.bias is None and not parametrize.is_parametrized(conv)
    bns = [m for m in cell.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [bn.num_features for bn in bns] == [4, hidden, hidden, 4]
    assert all(bn.eps == 1e-5 and bn.momentum == 0.05 for bn in bns)


def test_post_process_expansion_and_down_stride(registry):
    cell = build(registry, "nvae.separable_cell", 4, 8, resample="down", expansion=3)
    assert cell.depthwise.groups == 12 and cell.depthwise.stride == (2, 2)
    assert isinstance(cell.skip, FactorizedReduce)
    assert isinstance(build(registry, "nvae.separable_cell", 8, 4, resample="up").skip, UpsampleSkip)


def test_residual_cell_convs_are_weight_normalized_with_bias(registry):
    cell = build(registry, "nvae.residual_cell", 4, 8, resample="down")
    for conv in (cell.conv1, cell.conv2):
        assert parametrize.is_parametrized(conv, "weight") and conv.bias is not None
        assert conv.kernel_size == (3, 3)
    assert cell.conv1.stride == (2, 2) and cell.conv2.stride == (1, 1)
    assert all(bn.eps == 1e-5 and bn.momentum == 0.05 for bn in (cell.bn1, cell.bn2))


def test_conv_cell_is_plain_and_ignores_expansion(registry):
    cell = build(registry, "baselines.conv_cell", 4, 8, resample="down", expansion=6)
    assert not any(parametrize.is_parametrized(m) for m in cell.modules())
    assert cell.skip.kernel_size == (1, 1) and cell.skip.stride == (2, 2)
    plain = build(registry, "baselines.conv_cell", 4, 8, resample="down")
    assert sum(p.numel() for p in cell.parameters()) == sum(p.numel() for p in plain.parameters())


@pytest.mark.parametrize("key", CELL_KEYS)
def test_state_dict_is_the_checkpoint(registry, key):
    torch.manual_seed(0)
    cell = build(registry, key, 4, 8, resample="down", gate="nvae.se")
    x = torch.randn(2, 4, 4, 4)
    cell(x)  # moves the BN running statistics
    torch.manual_seed(1)
    copy = build(registry, key, 4, 8, resample="down", gate="nvae.se")
    copy.load_state_dict(cell.state_dict())
    cell.eval()
    copy.eval()
    torch.testing.assert_close(copy(x), cell(x), rtol=0, atol=0)


# -- squeeze-and-excitation ----------------------------------------------------------------


@pytest.mark.parametrize(("chs", "hidden"), [(2, 4), (32, 4), (64, 4), (80, 5), (256, 16)])
def test_se_hidden_width(chs, hidden):
    gate = SqueezeExcitation(chs)
    assert gate.fc1.out_features == hidden and gate.fc2.in_features == hidden
    assert SqueezeExcitation(chs, reduction=4, min_hidden=1).fc1.out_features == max(chs // 4, 1)


def test_se_matches_a_hand_computation():
    torch.manual_seed(0)
    gate = SqueezeExcitation(8)
    x = torch.randn(3, 8, 5, 4)
    pooled = x.sum(dim=(2, 3)) / 20
    hidden = torch.clamp(pooled @ gate.fc1.weight.T + gate.fc1.bias, min=0)
    scale = 1 / (1 + torch.exp(-(hidden @ gate.fc2.weight.T + gate.fc2.bias)))
    expected = x * scale.view(3, 8, 1, 1)
    torch.testing.assert_close(gate(x), expected)


# -- skip paths -----------------------------------------------------------------------------


def wn_weight(conv: nn.Conv2d) -> torch.Tensor:
    """NVAE's normalized weight from the stored log-norm and direction, written out."""
    log_g = conv.parametrizations.weight.original0
    v = conv.parametrizations.weight.original1
    norm = v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return torch.exp(log_g) * v / (norm + 1e-5)


@pytest.mark.parametrize(("out_chs", "widths"), [(10, [2, 2, 2, 4]), (8, [2, 2, 2, 2]), (2, [1, 1])])
def test_factorized_reduce_matches_its_four_convs(out_chs, widths):
    torch.manual_seed(0)
    skip = FactorizedReduce(3, out_chs)
    assert [conv.out_channels for conv in skip.convs] == widths
    x = torch.randn(2, 3, 6, 4)
    s = x * torch.sigmoid(x)
    parts = []
    for conv, (dy, dx) in zip(skip.convs, [(0, 0), (1, 1), (0, 1), (1, 0)]):
        w = wn_weight(conv)[:, :, 0, 0]
        picked = s[:, :, dy::2, dx::2]  # the pixels a stride-2 1x1 conv reads after the shift
        parts.append(torch.einsum("oc,bchw->bohw", w, picked) + conv.bias.view(1, -1, 1, 1))
    torch.testing.assert_close(skip(x), torch.cat(parts, dim=1))


def test_upsample_skip_is_bilinear_with_aligned_corners_then_1x1():
    torch.manual_seed(0)
    skip = UpsampleSkip(2, 3)
    assert skip.conv.bias is None
    x = torch.randn(1, 2, 2, 2)
    # Aligned corners: the 4 output rows sit at input positions 0, 1/3, 2/3, 1.
    a = torch.tensor([[1.0, 0.0], [2 / 3, 1 / 3], [1 / 3, 2 / 3], [0.0, 1.0]])
    upsampled = a @ x @ a.T
    expected = torch.einsum("oc,bchw->bohw", wn_weight(skip.conv)[:, :, 0, 0], upsampled)
    torch.testing.assert_close(skip(x), expected)


def test_make_skip_kinds():
    assert isinstance(make_skip(4, 4, "none"), nn.Identity)
    projection = make_skip(4, 6, "none")
    assert isinstance(projection, nn.Conv2d) and projection.kernel_size == (1, 1)
    assert isinstance(make_skip(4, 8, "down"), FactorizedReduce)
    assert isinstance(make_skip(8, 4, "up"), UpsampleSkip)


# -- bad options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ResidualCell(4, 4, resample="sideways"), "resample='sideways'"),
        (lambda: ResidualCell(4, 4, kernel_size=4), "kernel_size=4"),
        (lambda: SeparableCell(4, 4, expansion=0), "expansion=0"),
        (lambda: SeparableCell(0, 4), "in_chs=0"),
        (lambda: ConvResidualCell(4, 4, kernel_size=2), "kernel_size=2"),
        (lambda: SqueezeExcitation(8, reduction=0), "reduction=0"),
        (lambda: SqueezeExcitation(8, min_hidden=0), "min_hidden=0"),
        (lambda: NoGate(0), "chs=0"),
        (lambda: make_skip(4, 4, "sideways"), "resample='sideways'"),
        (lambda: FactorizedReduce(4, 0), "out_chs=0"),
    ],
)
def test_bad_options_name_the_option(make, match):
    with pytest.raises(ValueError, match=match):
        make()
