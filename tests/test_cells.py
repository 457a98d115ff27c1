"""The cells and gates, checked number by number against hand computations: NVAE's residual
(encoder) and separable (decoder) cells, the SE gate, the skip paths and weight normalization,
and the baselines' standard conv cell and identity gate.

Every cell is built the way a hierarchy builds it, from a registry:
``registry.create("cell", key, in_chs=..., out_chs=..., resample=..., gate_layer=...)``, where
``gate_layer`` is a callable ``chs -> gate`` (or ``None`` for no gate at all). The hand
computations use only plain tensor operations, ``torch.nn.functional`` and the cells' stored
parameters (weight-normalized weights recomputed from ``log g`` and ``v``), so they restate the
architecture of Vahdat & Kautz 2020 (Sec. 3.1.1, Fig. 3) independently of the modules.
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
from genzoo_plugins.baselines.conv_cell import ConvResidualCell
from genzoo_plugins.baselines.none_gate import NoGate
from genzoo_plugins.nvae import decoder_cell, encoder_cell, se
from genzoo_plugins.nvae.decoder_cell import SeparableCell
from genzoo_plugins.nvae.encoder_cell import ResidualCell
from genzoo_plugins.nvae.se import SqueezeExcitation
from genzoo_plugins.nvae.skip import FactorizedReduce, UpsampleSkip, make_skip

CELL_KEYS = ("nvae.residual_cell", "nvae.separable_cell", "baselines.conv_cell")
GATE_KEYS = ("nvae.se", "baselines.none_gate", None)
# (in_chs, out_chs): equal, doubled (as NVAE going down), halved (as NVAE going up)
CHANNELS = ((4, 4), (4, 8), (8, 4))


@pytest.fixture(scope="module")
def registry() -> genzoo.Registry:
    """A registry holding only the components of this file's modules."""
    reg = genzoo.Registry()
    for module in (se, encoder_cell, decoder_cell, conv_cell, none_gate):
        reg.add_declared(module)
    return reg


def make_cell(registry, key, in_chs, out_chs, *, resample="none", gate="nvae.se", **options):
    gate_layer = None if gate is None else (lambda chs: registry.create("gate", gate, chs=chs))
    return registry.create(
        "cell", key, in_chs=in_chs, out_chs=out_chs, resample=resample, gate_layer=gate_layer, **options
    )


def inputs(chs: int, batch: int = 3, height: int = 8, width: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, chs, height, width, generator=torch.Generator().manual_seed(seed))


def weighted_sum(out: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient reaches layers before a BatchNorm (``out.sum()`` would not: a
    training-mode BatchNorm's outputs sum to a constant over the batch)."""
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    return (out * weights).sum()


# --- registration ----------------------------------------------------------------------------


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
    cell = make_cell(registry, key, 8, 8, gate="nvae.se")
    assert type(cell) is cls and isinstance(cell, Cell)
    assert isinstance(cell.gate, SqueezeExcitation) and cell.gate.chs == 8
    assert isinstance(make_cell(registry, key, 8, 8, gate=None).gate, nn.Identity)


def test_create_gates(registry):
    assert type(registry.create("gate", "nvae.se", chs=8)) is SqueezeExcitation
    gate = registry.create("gate", "baselines.none_gate", chs=8)
    assert type(gate) is NoGate and isinstance(gate, ChannelGate)
    assert list(gate.parameters()) == []
    x = torch.randn(2, 8, 3, 3)
    assert gate(x) is x
    with pytest.raises(genzoo.WrongKindError, match="nvae.residual_cell"):
        registry.create("gate", "nvae.residual_cell", chs=8)


# --- shapes and gradients, for every cell x resample x gate ------------------------------------


@pytest.mark.parametrize(
    ("key", "resample", "gate", "chs"),
    list(itertools.product(CELL_KEYS, RESAMPLE_MODES, GATE_KEYS, [(2, 2), (3, 6), (3, 1)])),
)
def test_shapes_and_gradients(registry, key, resample, gate, chs):
    """Training mode: the output shape, and finite gradients for the input and every parameter.
    Eval mode: every parameter gets a non-zero gradient. (Not checked in training mode: there a
    bias just before a BatchNorm, such as conv1's in the two-conv cells, gets an exactly zero
    gradient, since BN removes per-channel constants; only rounding makes it look non-zero.)"""
    torch.manual_seed(0)
    in_chs, out_chs = chs
    cell = make_cell(registry, key, in_chs, out_chs, resample=resample, gate=gate)
    assert isinstance(cell, Cell)
    if isinstance(cell.gate, SqueezeExcitation):
        with torch.no_grad():  # no dead ReLU units in SE's hidden layer, whose grads would be 0
            cell.gate.fc1.bias.fill_(1.0)
    x = inputs(in_chs, height=4, width=6).requires_grad_()
    out = cell(x)
    size = {"none": (4, 6), "down": (2, 3), "up": (8, 12)}[resample]
    assert out.shape == (3, out_chs, *size)
    assert cell.output_size(4, 6) == size
    weighted_sum(out).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in cell.named_parameters():
        assert p.grad is not None, f"{key} {resample} {gate}: no gradient for {name}"
        assert torch.isfinite(p.grad).all(), name
    cell.zero_grad()
    cell.eval()
    weighted_sum(cell(x)).backward()
    for name, p in cell.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, (
            f"{key} {resample} {gate}: zero gradient for {name}"
        )


# --- hand computations -----------------------------------------------------------------------


def wn_weight(conv: nn.Conv2d) -> torch.Tensor:
    """NVAE's normalized weight from the stored log-norm and direction, written out:
    ``W = exp(log g) * v / (||v|| + 1e-5)``, one norm per output channel."""
    log_g = conv.parametrizations.weight.original0
    v = conv.parametrizations.weight.original1
    norm = v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return torch.exp(log_g) * v / (norm + 1e-5)


def conv_weight(conv: nn.Conv2d) -> torch.Tensor:
    """A conv's weight: recomputed by hand if weight-normalized, else as stored."""
    return wn_weight(conv) if parametrize.is_parametrized(conv, "weight") else conv.weight


def conv1x1_by_hand(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution: a matrix product over channels at the pixels its stride reads."""
    assert conv.kernel_size == (1, 1) and conv.padding == (0, 0)
    sy, sx = conv.stride
    out = torch.einsum("oi,bihw->bohw", conv_weight(conv)[:, :, 0, 0], x[:, :, ::sy, ::sx])
    return out if conv.bias is None else out + conv.bias[None, :, None, None]


def bilinear_x2_by_hand(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling with aligned corners: output row i of 2n sits at input row
    i (n - 1) / (2n - 1) and takes its two neighbours with weights 1 - distance (so do columns)."""

    def weights(n: int) -> torch.Tensor:
        position = torch.arange(2 * n, dtype=x.dtype) * (n - 1) / (2 * n - 1)
        return (1 - (position[:, None] - torch.arange(n, dtype=x.dtype)[None, :]).abs()).clamp(min=0)

    return weights(x.shape[2]) @ x @ weights(x.shape[3]).T


def factorized_reduce_by_hand(fr: FactorizedReduce, x: torch.Tensor) -> torch.Tensor:
    """Swish, then four stride-2 1x1 convs on x shifted by (0, 0), (1, 1), (0, 1), (1, 0)
    (rows, columns), concatenated: every input pixel reaches the output once."""
    a = x * torch.sigmoid(x)
    shifts = [(0, 0), (1, 1), (0, 1), (1, 0)]
    return torch.cat(
        [conv1x1_by_hand(conv, a[:, :, dy:, dx:]) for conv, (dy, dx) in zip(fr.convs, shifts)], 1
    )


def skip_by_hand(cell: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The skip path, recomputed from the skip module's own parameters."""
    skip = cell.skip
    if isinstance(skip, nn.Identity):
        return x
    if isinstance(skip, FactorizedReduce):
        return factorized_reduce_by_hand(skip, x)
    if isinstance(skip, UpsampleSkip):
        return conv1x1_by_hand(skip.conv, bilinear_x2_by_hand(x))
    # a 1x1 conv: NVAE's projection when only the channel count changes, or the conv cell's skip
    # (stride 2 going down, after nearest x2 going up)
    if cell.resample == "up":
        x = F.interpolate(x, scale_factor=2, mode="nearest")
    return conv1x1_by_hand(skip, x)


def batch_norm_by_hand(layer: nn.BatchNorm2d, h: torch.Tensor) -> torch.Tensor:
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
    h = F.silu(batch_norm_by_hand(cell.bn1, x))
    h = F.conv2d(h, conv_weight(cell.conv1), cell.conv1.bias, stride=stride, padding=1)
    h = F.silu(batch_norm_by_hand(cell.bn2, h))
    h = F.conv2d(h, conv_weight(cell.conv2), cell.conv2.bias, padding=1)
    return se_by_hand(cell.gate, h)


def separable_branch_by_hand(cell: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """BN -> 1x1 expand -> BN -> Swish -> 5x5 depthwise -> BN -> Swish -> 1x1 -> BN -> gate."""
    if cell.resample == "up":
        x = F.interpolate(x, scale_factor=2, mode="nearest")
    stride = 2 if cell.resample == "down" else 1
    hidden = cell.expand.out_channels
    h = F.conv2d(batch_norm_by_hand(cell.bn0, x), cell.expand.weight)
    h = F.silu(batch_norm_by_hand(cell.bn1, h))
    h = F.conv2d(h, cell.depthwise.weight, stride=stride, padding=2, groups=hidden)
    h = F.silu(batch_norm_by_hand(cell.bn2, h))
    h = batch_norm_by_hand(cell.bn3, F.conv2d(h, cell.project.weight))
    return se_by_hand(cell.gate, h)


BRANCHES = {
    # key: (branch by hand, the factor on the branch)
    "nvae.residual_cell": (conv_branch_by_hand, 0.1),
    "nvae.separable_cell": (separable_branch_by_hand, 0.1),
    "baselines.conv_cell": (conv_branch_by_hand, 1.0),  # a standard residual sum
}


# --- the residual form: output = skip(x) + scale * branch(x) ------------------------------------


@pytest.mark.parametrize(
    ("key", "resample", "gate", "chs"),
    list(itertools.product(CELL_KEYS, RESAMPLE_MODES, GATE_KEYS, CHANNELS)),
)
def test_output_is_skip_plus_scaled_branch(registry, key, resample, gate, chs):
    """NVAE cells add 0.1 x the branch (Sec. 3.1); the standard cell adds the branch as is.
    Training-mode BN: nearest upsampling leaves the batch statistics unchanged, so a cell may
    upsample late (as the cells do) and give the output of upsampling first (as by hand)."""
    torch.manual_seed(2)
    in_chs, out_chs = chs
    cell = make_cell(registry, key, in_chs, out_chs, resample=resample, gate=gate)
    with torch.no_grad():  # non-trivial BN affine parameters, so that they are checked too
        for m in cell.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x = inputs(in_chs)
    branch, factor = BRANCHES[key]
    with torch.no_grad():
        expected = skip_by_hand(cell, x) + factor * branch(cell, x)
        torch.testing.assert_close(cell(x), expected, rtol=1e-5, atol=1e-5)


def zero_branch_end(cell: nn.Module) -> None:
    """Make the branch output exactly 0: the separable cell ends in a BatchNorm (zero its affine
    parameters); the conv cells end in a conv (zero its weight and bias; for a weight-normalized
    conv, a zero direction v gives W = g * 0 / (0 + 1e-5) = 0)."""
    with torch.no_grad():
        if isinstance(cell, SeparableCell):
            cell.bn3.weight.zero_()
            cell.bn3.bias.zero_()
            return
        if parametrize.is_parametrized(cell.conv2, "weight"):
            cell.conv2.parametrizations.weight.original1.zero_()
        else:
            cell.conv2.weight.zero_()
        cell.conv2.bias.zero_()


@pytest.mark.parametrize(
    ("key", "resample", "gate", "chs"),
    list(itertools.product(CELL_KEYS, RESAMPLE_MODES, GATE_KEYS, CHANNELS)),
)
def test_zero_branch_leaves_the_skip(registry, key, resample, gate, chs):
    """The skip is the identity (bit for bit) when neither the size nor the channel count
    changes, and a projection checked by hand otherwise."""
    in_chs, out_chs = chs
    cell = make_cell(registry, key, in_chs, out_chs, resample=resample, gate=gate)
    zero_branch_end(cell)
    x = inputs(in_chs)
    with torch.no_grad():
        out = cell(x)
        # (not bit for bit: a cell may run its skip in another memory format, e.g. channels_last)
        torch.testing.assert_close(out, skip_by_hand(cell, x), rtol=1.3e-6, atol=1e-6)
    if resample == "none" and in_chs == out_chs:
        assert isinstance(cell.skip, nn.Identity) and torch.equal(out, x)
    else:
        assert not isinstance(cell.skip, nn.Identity)


def test_gate_none_and_the_none_gate_are_the_same_cell(registry):
    """``gate_layer=None`` and ``baselines.none_gate`` build interchangeable cells."""
    for key, resample, (in_chs, out_chs) in itertools.product(CELL_KEYS, RESAMPLE_MODES, CHANNELS):
        torch.manual_seed(0)
        without = make_cell(registry, key, in_chs, out_chs, resample=resample, gate=None)
        torch.manual_seed(0)
        identity = make_cell(registry, key, in_chs, out_chs, resample=resample, gate="baselines.none_gate")
        assert isinstance(identity.gate, ChannelGate)
        identity.load_state_dict(without.state_dict())
        x = inputs(in_chs)
        torch.testing.assert_close(identity(x), without(x), rtol=0, atol=0)


@pytest.mark.parametrize("key", CELL_KEYS)
def test_state_dict_is_the_checkpoint(registry, key):
    torch.manual_seed(0)
    cell = make_cell(registry, key, 4, 8, resample="down")
    x = inputs(4)
    cell(x)  # moves the BN running statistics
    torch.manual_seed(1)
    copy = make_cell(registry, key, 4, 8, resample="down")
    copy.load_state_dict(cell.state_dict())
    cell.eval()
    copy.eval()
    torch.testing.assert_close(copy(x), cell(x), rtol=0, atol=0)


# --- squeeze and excitation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("chs", "hidden"),
    [(2, 4), (3, 4), (16, 4), (32, 4), (64, 4), (72, 4), (80, 5), (128, 8), (256, 16)],
)
def test_se_hidden_width_is_max_c_over_16_and_4(registry, chs, hidden):
    gate = registry.create("gate", "nvae.se", chs=chs)
    assert (gate.fc1.in_features, gate.fc1.out_features) == (chs, hidden)
    assert (gate.fc2.in_features, gate.fc2.out_features) == (hidden, chs)
    assert gate.fc1.bias is not None and gate.fc2.bias is not None
    # 16 and 4 are options
    assert SqueezeExcitation(chs, reduction=4, min_hidden=1).fc1.out_features == max(chs // 4, 1)


@pytest.mark.parametrize("chs", [5, 8, 64, 100])
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
        torch.testing.assert_close(gate(x), expected, rtol=1.3e-6, atol=1e-6)


# --- skip paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_chs", "out_chs", "widths"),
    [(4, 8, [2, 2, 2, 2]), (3, 8, [2, 2, 2, 2]), (5, 10, [2, 2, 2, 4]), (3, 10, [2, 2, 2, 4]),
     (3, 16, [4] * 4), (3, 2, [1, 1])],
)  # fmt: skip
def test_factorized_reduce_matches_its_four_shifted_convs(in_chs, out_chs, widths):
    """``out_chs // 4`` channels per shift and the remainder on the last; with fewer than 4
    output channels, one channel each for the first ``out_chs`` shifts."""
    torch.manual_seed(4)
    fr = FactorizedReduce(in_chs, out_chs)
    assert [c.out_channels for c in fr.convs] == widths
    for conv in fr.convs:
        assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and conv.bias is not None
        assert parametrize.is_parametrized(conv, "weight")
    x = torch.randn(2, in_chs, 6, 4)
    with torch.no_grad():
        out = fr(x)
        assert out.shape == (2, out_chs, 3, 2)
        torch.testing.assert_close(out, factorized_reduce_by_hand(fr, x), rtol=1.3e-6, atol=1e-6)


def test_factorized_reduce_reads_every_input_pixel():
    fr = FactorizedReduce(1, 4)
    x = torch.randn(1, 1, 4, 4, requires_grad=True)
    fr(x).sum().backward()
    assert (x.grad != 0).all()


def test_upsample_skip_is_bilinear_with_aligned_corners_then_a_1x1_conv_without_bias():
    torch.manual_seed(0)
    skip = UpsampleSkip(2, 3)
    assert skip.conv.kernel_size == (1, 1) and skip.conv.bias is None
    assert parametrize.is_parametrized(skip.conv, "weight")
    x = torch.randn(1, 2, 2, 2)
    # Aligned corners: the 4 output rows sit at input positions 0, 1/3, 2/3, 1.
    a = torch.tensor([[1.0, 0.0], [2 / 3, 1 / 3], [1 / 3, 2 / 3], [0.0, 1.0]])
    with torch.no_grad():
        expected = torch.einsum("oc,bchw->bohw", wn_weight(skip.conv)[:, :, 0, 0], a @ x @ a.T)
        torch.testing.assert_close(skip(x), expected)

    # A linear ramp: row i of the 8 output rows samples input row 3 i / 7, and bilinear
    # interpolation of a linear ramp is that ramp.
    skip = UpsampleSkip(4, 2)
    x = torch.arange(16.0).reshape(1, 1, 4, 4).expand(1, 4, 4, 4).contiguous()
    grid = torch.linspace(0, 3, 8)
    expected_up = (4 * grid[:, None] + grid[None, :]).expand(4, 8, 8)
    with torch.no_grad():
        expected = torch.einsum("oi,ihw->ohw", wn_weight(skip.conv)[:, :, 0, 0], expected_up)
        torch.testing.assert_close(skip(x)[0], expected, rtol=1.3e-6, atol=1e-5)


def test_make_skip_kinds():
    assert isinstance(make_skip(4, 4, "none"), nn.Identity)
    projection = make_skip(4, 6, "none")
    assert isinstance(projection, nn.Conv2d) and projection.kernel_size == (1, 1)
    assert isinstance(make_skip(4, 8, "down"), FactorizedReduce)
    assert isinstance(make_skip(8, 4, "up"), UpsampleSkip)


# --- the cells' layers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expansion", "in_chs", "out_chs", "resample"),
    [(6, 4, 4, "none"), (6, 8, 8, "none"), (3, 8, 8, "none"), (6, 8, 4, "none"), (3, 4, 8, "down"),
     (6, 8, 4, "up")],
)  # fmt: skip
def test_separable_cell_layers_match_the_official_inverted_residual(
    registry, expansion, in_chs, out_chs, resample
):
    """1x1 expand to E x channels (E = 6 by default, 3 in the post-process blocks), 5x5
    depthwise (stride 2 going down), 1x1 project: plain convs without bias, each after a BN."""
    options = {} if expansion == 6 else {"expansion": expansion}  # 6 is the default
    cell = make_cell(registry, "nvae.separable_cell", in_chs, out_chs, resample=resample, **options)
    hidden = expansion * in_chs
    expand, dw, project = cell.expand, cell.depthwise, cell.project
    assert (expand.in_channels, expand.out_channels, expand.kernel_size) == (in_chs, hidden, (1, 1))
    assert dw.in_channels == dw.out_channels == dw.groups == hidden
    assert dw.kernel_size == (5, 5) and dw.padding == (2, 2)
    assert dw.stride == ((2, 2) if resample == "down" else (1, 1))
    assert dw.weight.shape == (hidden, 1, 5, 5)
    assert (project.in_channels, project.out_channels, project.kernel_size) == (hidden, out_chs, (1, 1))
    for conv in (expand, dw, project):
        assert conv.bias is None and not parametrize.is_parametrized(conv)
    bns = [m for m in cell.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns == [cell.bn0, cell.bn1, cell.bn2, cell.bn3]
    assert [bn.num_features for bn in bns] == [in_chs, hidden, hidden, out_chs]
    skip_type = {
        "none": nn.Identity if in_chs == out_chs else nn.Conv2d,
        "down": FactorizedReduce,
        "up": UpsampleSkip,
    }
    assert isinstance(cell.skip, skip_type[resample])


def test_depthwise_conv_mixes_no_channels(registry):
    cell = make_cell(registry, "nvae.separable_cell", 8, 8)
    x = torch.randn(1, cell.depthwise.in_channels, 6, 6)
    with torch.no_grad():
        full = cell.depthwise(x)
        x2 = x.clone()
        x2[:, 0] += 1.0
        changed = (cell.depthwise(x2) - full).abs().sum(dim=(0, 2, 3))
    assert changed[0] > 0 and (changed[1:] == 0).all()


def test_residual_cell_convs_are_weight_normalized_with_bias(registry):
    cell = make_cell(registry, "nvae.residual_cell", 4, 8, resample="down")
    for conv in (cell.conv1, cell.conv2):
        assert parametrize.is_parametrized(conv, "weight") and conv.bias is not None
        assert conv.kernel_size == (3, 3)
    assert cell.conv1.stride == (2, 2) and cell.conv2.stride == (1, 1)


def test_nvae_batchnorm_eps_and_momentum(registry):
    for key in ("nvae.residual_cell", "nvae.separable_cell"):
        bns = [m for m in make_cell(registry, key, 8, 8).modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns and all(m.eps == 1e-5 and m.momentum == 0.05 for m in bns), key


def test_conv_cell_has_a_1x1_skip_and_takes_no_expansion(registry):
    cell = make_cell(registry, "baselines.conv_cell", 4, 8, resample="down")
    assert cell.skip.kernel_size == (1, 1) and cell.skip.stride == (2, 2)
    # It does not declare an expansion, so a hierarchy's decoder slot never passes it one (it
    # used to take one only to ignore it); asked for one directly, it refuses.
    assert "expansion" not in registry.get("cell", "baselines.conv_cell").accepts
    assert "expansion" in registry.get("cell", "nvae.separable_cell").accepts
    with pytest.raises(genzoo.RegistryError, match="expansion"):
        make_cell(registry, "baselines.conv_cell", 4, 8, resample="down", expansion=6)


# --- weight normalization ------------------------------------------------------------------


def weight_normalized_convs(module: nn.Module) -> list[nn.Conv2d]:
    return [
        m for m in module.modules() if isinstance(m, nn.Conv2d) and parametrize.is_parametrized(m, "weight")
    ]


def test_weight_norm_sits_where_nvae_puts_it(registry):
    residual = make_cell(registry, "nvae.residual_cell", 8, 16, resample="down")
    assert {id(c) for c in weight_normalized_convs(residual)} == {
        id(c) for c in (residual.conv1, residual.conv2, *residual.skip.convs)
    }
    separable = make_cell(registry, "nvae.separable_cell", 8, 4, resample="up")
    assert weight_normalized_convs(separable) == [separable.skip.conv]
    projecting = make_cell(registry, "nvae.separable_cell", 8, 16)
    assert weight_normalized_convs(projecting) == [projecting.skip]
    for resample in RESAMPLE_MODES:
        assert (
            weight_normalized_convs(make_cell(registry, "baselines.conv_cell", 8, 16, resample=resample))
            == []
        )


def test_weight_rows_have_norm_exp_log_g(registry):
    torch.manual_seed(5)
    cell = make_cell(registry, "nvae.residual_cell", 8, 16, resample="down")
    for conv in weight_normalized_convs(cell):
        log_g = conv.parametrizations.weight.original0
        v = conv.parametrizations.weight.original1
        with torch.no_grad():
            log_g.normal_(0.0, 0.5)  # away from the initial value
        torch.testing.assert_close(conv.weight, wn_weight(conv))
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
    cell = make_cell(registry, "nvae.residual_cell", 8, 4, resample="up")
    for conv in weight_normalized_convs(cell):
        v = conv.parametrizations.weight.original1
        v_norm = v.flatten(1).norm(dim=1)
        with torch.no_grad():
            ratio = conv.weight.flatten(1).norm(dim=1) / v_norm
            torch.testing.assert_close(ratio, (v_norm + 1e-2) / (v_norm + 1e-5), rtol=1e-5, atol=0)
            torch.testing.assert_close(conv.weight, v, rtol=0.05, atol=1e-3)


# --- bad options ----------------------------------------------------------------------------


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


def test_weight_normalized_convs_sharing_a_class_keep_their_own_weights_under_caching():
    # Convs share one parametrized class (for torch.compile) while the trainer computes weights
    # once per step with parametrize.cached(): each must still get its own weight.
    from torch.nn.utils import parametrize

    from genzoo_plugins.nvae.weight_norm import wn_conv2d

    a, b = wn_conv2d(3, 4, 3), wn_conv2d(4, 6, 1)
    assert type(a) is type(b)
    plain = (a.weight.detach().clone(), b.weight.detach().clone())
    with parametrize.cached():
        assert a.weight.shape == (4, 3, 3, 3) and b.weight.shape == (6, 4, 1, 1)
        assert a.weight is a.weight  # computed once while cached
        torch.testing.assert_close(a.weight, plain[0])
        torch.testing.assert_close(b.weight, plain[1])
