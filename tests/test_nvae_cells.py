"""NVAE's cells and gates checked number by number against hand computations.

Every cell is built the way a hierarchy builds it, from a registry:
``registry.create("cell", key, in_chs=..., out_chs=..., resample=..., gate_layer=...)``, where
``gate_layer`` is a callable ``chs -> gate`` (or ``None`` for no gate at all). The hand
computations below use only ``torch.nn.functional`` and the cells' own weights, so they restate
the architecture of Vahdat & Kautz 2020 (Sec. 3.1.1, Fig. 3) independently of the modules.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

import genzoo
from genzoo.interfaces import RESAMPLE_MODES, Cell, ChannelGate
from genzoo_plugins.baselines import conv_cell, none_gate
from genzoo_plugins.nvae import decoder_cell, encoder_cell, se
from genzoo_plugins.nvae.se import SqueezeExcitation
from genzoo_plugins.nvae.skip import FactorizedReduce, UpsampleSkip

CELL_KEYS = ("nvae.residual_cell", "nvae.separable_cell", "baselines.conv_cell")
GATE_KEYS = ("nvae.se", "baselines.none_gate", None)
IN_CHS = 8
OUT_CHS = {"none": 8, "down": 16, "up": 4}  # NVAE doubles channels going down, halves going up
SIZE = 8


@pytest.fixture(scope="module")
def registry() -> genzoo.Registry:
    reg = genzoo.Registry()
    for module in (se, encoder_cell, decoder_cell, conv_cell, none_gate):
        module.register(reg)
    return reg


def make_cell(registry, key, *, in_chs=IN_CHS, out_chs=None, resample="none", gate="nvae.se", **options):
    out_chs = OUT_CHS[resample] if out_chs is None else out_chs
    gate_layer = None if gate is None else (lambda chs: registry.create("gate", gate, chs=chs))
    return registry.create(
        "cell", key, in_chs=in_chs, out_chs=out_chs, resample=resample, gate_layer=gate_layer, **options
    )


def inputs(chs: int = IN_CHS, batch: int = 3, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, chs, size, size, generator=torch.Generator().manual_seed(seed))


def weighted_sum(out: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient reaches layers before a BatchNorm (``out.sum()`` would not: a
    training-mode BatchNorm's outputs sum to a constant over the batch)."""
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    return (out * weights).sum()


# --- shapes and gradients, for every cell x resample x gate -----------------------------------


@pytest.mark.parametrize(
    ("key", "resample", "gate"), list(itertools.product(CELL_KEYS, RESAMPLE_MODES, GATE_KEYS))
)
def test_shape_and_every_parameter_gets_a_gradient(registry, key, resample, gate):
    cell = make_cell(registry, key, resample=resample, gate=gate)
    assert isinstance(cell, Cell)
    if isinstance(cell.gate, SqueezeExcitation):
        with torch.no_grad():  # no dead ReLU units in SE's hidden layer, whose grads would be 0
            cell.gate.fc1.bias.fill_(1.0)
    x = inputs().requires_grad_()
    out = cell(x)
    side = {"none": SIZE, "down": SIZE // 2, "up": 2 * SIZE}[resample]
    assert out.shape == (3, OUT_CHS[resample], side, side)
    assert cell.output_size(SIZE, SIZE) == (side, side)
    weighted_sum(out).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in cell.named_parameters():
        assert p.grad is not None, f"{key} {resample} {gate}: no gradient for {name}"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{key} {resample} {gate}: zero gradient for {name}"


def test_gate_none_and_the_none_gate_are_the_same_cell(registry):
    """``gate_layer=None`` and ``baselines.none_gate`` build interchangeable cells."""
    for key, resample in itertools.product(CELL_KEYS, RESAMPLE_MODES):
        torch.manual_seed(0)
        without = make_cell(registry, key, resample=resample, gate=None)
        torch.manual_seed(0)
        identity = make_cell(registry, key, resample=resample, gate="baselines.none_gate")
        assert isinstance(identity.gate, ChannelGate)
        identity.load_state_dict(without.state_dict())
        x = inputs()
        torch.testing.assert_close(identity(x), without(x), rtol=0, atol=0)


# --- the residual form: output = skip(x) + scale * branch(x) ------------------------------------


def skip_by_hand(cell: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The skip path, recomputed from the skip module's own weights."""
    skip = cell.skip
    if isinstance(skip, nn.Identity):
        return x
    if isinstance(skip, FactorizedReduce):
        return factorized_reduce_by_hand(skip, x)
    if isinstance(skip, UpsampleSkip):
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return F.conv2d(up, skip.conv.weight, skip.conv.bias)
    # the conv cell: a 1x1 conv (stride 2 going down), after nearest x2 going up
    if cell.resample == "up":
        x = F.interpolate(x, scale_factor=2, mode="nearest")
    return F.conv2d(x, skip.weight, skip.bias, stride=skip.stride)


def bn(layer: nn.BatchNorm2d, h: torch.Tensor) -> torch.Tensor:
    """Training-mode batch normalization from the batch's biased variance."""
    mean = h.mean(dim=(0, 2, 3), keepdim=True)
    var = h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    scale = layer.weight[None, :, None, None] / torch.sqrt(var + layer.eps)
    return (h - mean) * scale + layer.bias[None, :, None, None]


def se_by_hand(gate: nn.Module, h: torch.Tensor) -> torch.Tensor:
    if not isinstance(gate, SqueezeExcitation):
        return h
    squeezed = h.mean(dim=(2, 3))
    hidden = torch.relu(squeezed @ gate.fc1.weight.T + gate.fc1.bias)
    return h * torch.sigmoid(hidden @ gate.fc2.weight.T + gate.fc2.bias)[:, :, None, None]


def conv_branch_by_hand(cell: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(BN -> Swish -> 3x3 conv) twice, then the gate; upsampling comes first (Fig. 3)."""
    if cell.resample == "up":
        x = F.interpolate(x, scale_factor=2, mode="nearest")
    stride = 2 if cell.resample == "down" else 1
    h = F.conv2d(F.silu(bn(cell.bn1, x)), cell.conv1.weight, cell.conv1.bias, stride=stride, padding=1)
    h = F.conv2d(F.silu(bn(cell.bn2, h)), cell.conv2.weight, cell.conv2.bias, padding=1)
    return se_by_hand(cell.gate, h)


def separable_branch_by_hand(cell: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """BN -> 1x1 expand -> BN -> Swish -> 5x5 depthwise -> BN -> Swish -> 1x1 -> BN -> gate."""
    if cell.resample == "up":
        x = F.interpolate(x, scale_factor=2, mode="nearest")
    stride = 2 if cell.resample == "down" else 1
    hidden = cell.expand.out_channels
    h = F.conv2d(bn(cell.bn0, x), cell.expand.weight)
    h = F.silu(bn(cell.bn1, h))
    h = F.conv2d(h, cell.depthwise.weight, stride=stride, padding=2, groups=hidden)
    h = F.silu(bn(cell.bn2, h))
    h = bn(cell.bn3, F.conv2d(h, cell.project.weight))
    return se_by_hand(cell.gate, h)


BRANCHES = {
    # key: (branch by hand, the factor on the branch)
    "nvae.residual_cell": (conv_branch_by_hand, 0.1),
    "nvae.separable_cell": (separable_branch_by_hand, 0.1),
    "baselines.conv_cell": (conv_branch_by_hand, 1.0),  # a standard residual sum
}


@pytest.mark.parametrize(
    ("key", "resample", "gate"), list(itertools.product(CELL_KEYS, RESAMPLE_MODES, GATE_KEYS))
)
def test_output_is_skip_plus_scaled_branch_by_hand(registry, key, resample, gate):
    torch.manual_seed(2)
    cell = make_cell(registry, key, resample=resample, gate=gate)
    with torch.no_grad():  # non-trivial BN affine parameters, so that they are checked too
        for m in cell.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x = inputs()
    branch, factor = BRANCHES[key]
    with torch.no_grad():
        expected = skip_by_hand(cell, x) + factor * branch(cell, x)
        torch.testing.assert_close(cell(x), expected, rtol=1e-4, atol=1e-5)


def zero_branch_end(cell: nn.Module) -> None:
    """Make the branch output exactly 0: the separable cell ends in a BatchNorm (zero its affine
    parameters); the conv cells end in a conv (zero its weight and bias; for a weight-normalized
    conv, a zero direction v gives W = g * 0 / (0 + 1e-5) = 0)."""
    with torch.no_grad():
        if hasattr(cell, "bn3"):
            cell.bn3.weight.zero_()
            cell.bn3.bias.zero_()
            return
        if parametrize.is_parametrized(cell.conv2, "weight"):
            cell.conv2.parametrizations.weight.original1.zero_()
        else:
            cell.conv2.weight.zero_()
        cell.conv2.bias.zero_()


@pytest.mark.parametrize(
    ("key", "resample", "gate"), list(itertools.product(CELL_KEYS, RESAMPLE_MODES, GATE_KEYS))
)
def test_zero_branch_leaves_the_skip(registry, key, resample, gate):
    cell = make_cell(registry, key, resample=resample, gate=gate)
    zero_branch_end(cell)
    x = inputs()
    with torch.no_grad():
        # (not bit for bit: a cell may run its skip in another memory format, e.g. channels_last)
        torch.testing.assert_close(cell(x), skip_by_hand(cell, x), rtol=1e-5, atol=1e-6)


def test_identity_skip_without_resampling(registry):
    for key in CELL_KEYS:
        cell = make_cell(registry, key)
        assert isinstance(cell.skip, nn.Identity), key
        zero_branch_end(cell)
        x = inputs()
        with torch.no_grad():
            assert torch.equal(cell(x), x), key


def test_channel_change_without_resampling_projects_the_skip(registry):
    for key in CELL_KEYS:
        cell = make_cell(registry, key, in_chs=4, out_chs=6)
        x = inputs(chs=4)
        assert cell(x).shape == (3, 6, SIZE, SIZE)
        assert not isinstance(cell.skip, nn.Identity)
        with torch.no_grad():
            torch.testing.assert_close(cell.skip(x), skip_by_hand(cell, x), rtol=1e-5, atol=1e-6)


# --- squeeze and excitation ----------------------------------------------------------------


@pytest.mark.parametrize(("chs", "hidden"), [(3, 4), (16, 4), (64, 4), (72, 4), (80, 5), (128, 8), (256, 16)])
def test_se_hidden_width_is_max_c_over_16_and_4(registry, chs, hidden):
    gate = registry.create("gate", "nvae.se", chs=chs)
    assert (gate.fc1.in_features, gate.fc1.out_features) == (chs, hidden)
    assert (gate.fc2.in_features, gate.fc2.out_features) == (hidden, chs)
    assert gate.fc1.bias is not None and gate.fc2.bias is not None


@pytest.mark.parametrize("chs", [5, 64, 100])
def test_se_matches_pool_linear_relu_linear_sigmoid_scale(registry, chs):
    """The gate recomputed in plain Python floats, one channel at a time."""
    torch.manual_seed(3)
    gate = registry.create("gate", "nvae.se", chs=chs)
    x = torch.randn(2, chs, 5, 7)
    hidden = max(chs // 16, 4)
    w1, b1 = gate.fc1.weight.tolist(), gate.fc1.bias.tolist()
    w2, b2 = gate.fc2.weight.tolist(), gate.fc2.bias.tolist()
    assert (len(w1), len(w1[0]), len(w2), len(w2[0])) == (hidden, chs, chs, hidden)
    scales = []
    for example in x.tolist():
        pooled = [sum(sum(row) for row in channel) / 35.0 for channel in example]
        a = [max(0.0, sum(w * p for w, p in zip(w1[j], pooled)) + b1[j]) for j in range(hidden)]
        scales.append(
            [1.0 / (1.0 + math.exp(-(sum(w * h for w, h in zip(w2[c], a)) + b2[c]))) for c in range(chs)]
        )
    expected = x * torch.tensor(scales)[:, :, None, None]
    with torch.no_grad():
        torch.testing.assert_close(gate(x), expected, rtol=1e-5, atol=1e-6)


def test_none_gate_is_the_identity_without_parameters(registry):
    gate = registry.create("gate", "baselines.none_gate", chs=7)
    x = torch.randn(2, 7, 3, 3)
    assert torch.equal(gate(x), x)
    assert not list(gate.parameters())


# --- skip paths ----------------------------------------------------------------------------


def factorized_reduce_by_hand(fr: FactorizedReduce, x: torch.Tensor) -> torch.Tensor:
    """Swish, then four stride-2 1x1 convs on x shifted by (0, 0), (1, 1), (0, 1), (1, 0)
    (rows, columns), concatenated: every input pixel reaches the output once."""
    a = x * torch.sigmoid(x)
    parts = []
    for conv, (dy, dx) in zip(fr.convs, [(0, 0), (1, 1), (0, 1), (1, 0)]):
        shifted = a[:, :, dy:, dx:]
        picked = shifted[:, :, ::2, ::2]  # what a 1x1 stride-2 conv reads
        w = conv.weight.flatten(1)  # (out, in)
        parts.append(torch.einsum("oi,bihw->bohw", w, picked) + conv.bias[None, :, None, None])
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize(
    ("in_chs", "out_chs", "widths"), [(4, 8, [2, 2, 2, 2]), (5, 10, [2, 2, 2, 4]), (3, 16, [4] * 4)]
)
def test_factorized_reduce_matches_its_four_shifted_convs(in_chs, out_chs, widths):
    torch.manual_seed(4)
    fr = FactorizedReduce(in_chs, out_chs)
    assert [c.out_channels for c in fr.convs] == widths
    for conv in fr.convs:
        assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and conv.bias is not None
        assert parametrize.is_parametrized(conv, "weight")
    x = torch.randn(2, in_chs, 6, 6)
    with torch.no_grad():
        out = fr(x)
        assert out.shape == (2, out_chs, 3, 3)
        torch.testing.assert_close(out, factorized_reduce_by_hand(fr, x), rtol=1e-5, atol=1e-6)


def test_factorized_reduce_reads_every_input_pixel():
    fr = FactorizedReduce(1, 4)
    x = torch.randn(1, 1, 4, 4, requires_grad=True)
    fr(x).sum().backward()
    assert (x.grad != 0).all()


def test_upsample_skip_is_bilinear_aligned_then_a_1x1_conv_without_bias():
    skip = UpsampleSkip(4, 2)
    assert skip.conv.bias is None and parametrize.is_parametrized(skip.conv, "weight")
    x = torch.arange(16.0).reshape(1, 1, 4, 4).expand(1, 4, 4, 4).contiguous()
    with torch.no_grad():
        out = skip(x)
    # align_corners=True maps the corners onto the corners: row i of the output samples input row
    # 3 i / 7, and bilinear interpolation of a linear ramp is that ramp.
    grid = torch.linspace(0, 3, 8)
    expected_up = (4 * grid[:, None] + grid[None, :]).expand(4, 8, 8)
    w = skip.conv.weight.flatten(1)
    torch.testing.assert_close(out[0], torch.einsum("oi,ihw->ohw", w, expected_up), rtol=1e-5, atol=1e-5)


# --- the separable cell's layers -------------------------------------------------------------


@pytest.mark.parametrize(("expansion", "in_chs", "out_chs"), [(6, 8, 8), (3, 8, 8), (6, 8, 4)])
def test_separable_cell_depthwise_5x5_with_expansion(registry, expansion, in_chs, out_chs):
    options = {} if expansion == 6 else {"expansion": expansion}  # 6 is the default
    cell = make_cell(registry, "nvae.separable_cell", in_chs=in_chs, out_chs=out_chs, **options)
    hidden = expansion * in_chs
    assert (cell.expand.in_channels, cell.expand.out_channels, cell.expand.kernel_size) == (
        in_chs,
        hidden,
        (1, 1),
    )
    dw = cell.depthwise
    assert dw.in_channels == dw.out_channels == dw.groups == hidden
    assert dw.kernel_size == (5, 5) and dw.padding == (2, 2)
    assert dw.weight.shape == (hidden, 1, 5, 5)
    assert (cell.project.in_channels, cell.project.out_channels) == (hidden, out_chs)
    # official InvertedResidual: plain convs without bias, each followed by a BatchNorm
    for conv in (cell.expand, cell.depthwise, cell.project):
        assert conv.bias is None and not parametrize.is_parametrized(conv)
    assert [m.num_features for m in (cell.bn0, cell.bn1, cell.bn2, cell.bn3)] == [
        in_chs,
        hidden,
        hidden,
        out_chs,
    ]


def test_depthwise_conv_mixes_no_channels(registry):
    cell = make_cell(registry, "nvae.separable_cell")
    x = torch.randn(1, cell.depthwise.in_channels, 6, 6)
    with torch.no_grad():
        full = cell.depthwise(x)
        x2 = x.clone()
        x2[:, 0] += 1.0
        changed = (cell.depthwise(x2) - full).abs().sum(dim=(0, 2, 3))
    assert changed[0] > 0 and (changed[1:] == 0).all()


def test_nvae_batchnorm_eps_and_momentum(registry):
    for key in ("nvae.residual_cell", "nvae.separable_cell"):
        bns = [m for m in make_cell(registry, key).modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns and all(m.eps == 1e-5 and m.momentum == 0.05 for m in bns), key


# --- weight normalization ------------------------------------------------------------------


def weight_normalized_convs(module: nn.Module) -> list[nn.Conv2d]:
    return [
        m for m in module.modules() if isinstance(m, nn.Conv2d) and parametrize.is_parametrized(m, "weight")
    ]


def test_weight_norm_sits_where_nvae_puts_it(registry):
    residual = make_cell(registry, "nvae.residual_cell", resample="down")
    assert {id(c) for c in weight_normalized_convs(residual)} == {
        id(c) for c in (residual.conv1, residual.conv2, *residual.skip.convs)
    }
    separable = make_cell(registry, "nvae.separable_cell", resample="up")
    assert weight_normalized_convs(separable) == [separable.skip.conv]
    for resample in RESAMPLE_MODES:
        assert weight_normalized_convs(make_cell(registry, "baselines.conv_cell", resample=resample)) == []


def test_weight_rows_have_norm_exp_log_g(registry):
    torch.manual_seed(5)
    cell = make_cell(registry, "nvae.residual_cell", resample="down")
    for conv in weight_normalized_convs(cell):
        log_g = conv.parametrizations.weight.original0
        v = conv.parametrizations.weight.original1
        with torch.no_grad():
            log_g.normal_(0.0, 0.5)  # away from the initial value
        v_norm = v.flatten(1).norm(dim=1)
        row_norm = conv.weight.flatten(1).norm(dim=1)
        expected = log_g.flatten().exp() * v_norm / (v_norm + 1e-5)  # the 1e-5 in the denominator
        torch.testing.assert_close(row_norm, expected, rtol=1e-5, atol=0)
        torch.testing.assert_close(row_norm, log_g.flatten().exp(), rtol=1e-3, atol=0)
        # the direction is v's
        cos = F.cosine_similarity(conv.weight.flatten(1), v.flatten(1), dim=1)
        torch.testing.assert_close(cos, torch.ones_like(cos))


def test_initial_weight_is_close_to_the_unnormalized_one(registry):
    """At construction log g = log(||v|| + 1e-2), so W = v (||v|| + 1e-2) / (||v|| + 1e-5)."""
    cell = make_cell(registry, "nvae.residual_cell", resample="up")
    for conv in weight_normalized_convs(cell):
        v = conv.parametrizations.weight.original1
        v_norm = v.flatten(1).norm(dim=1)
        with torch.no_grad():
            ratio = conv.weight.flatten(1).norm(dim=1) / v_norm
            torch.testing.assert_close(ratio, (v_norm + 1e-2) / (v_norm + 1e-5), rtol=1e-5, atol=0)
            torch.testing.assert_close(conv.weight, v, rtol=0.05, atol=1e-3)


def test_weight_norm_gradients_reach_log_g_and_v(registry):
    cell = make_cell(registry, "nvae.residual_cell")
    weighted_sum(cell(inputs())).backward()
    for conv in (cell.conv1, cell.conv2):
        for p in (conv.parametrizations.weight.original0, conv.parametrizations.weight.original1):
            assert p.grad is not None and p.grad.abs().sum() > 0
