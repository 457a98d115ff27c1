"""The bottleneck cell: the contract of a genzoo cell with the cell's own options (checked by
``genzoo.testing``), the computation the paper describes, and a drop-in for NVAE's cells."""

from __future__ import annotations

import genzoo
import genzoo.testing
import pytest
import torch
import torch.nn.functional as F

from genzoo_vdvae.bottleneck_cell import BottleneckCell


@pytest.fixture(scope="module")
def host() -> genzoo.PluginHost:
    """The built-in plugins plus this one, loaded by module name (no installation needed)."""
    host = genzoo.PluginHost()
    host.load_builtin()
    host.load_module("genzoo_vdvae", source="python", name="vdvae")
    return host


def make(host, **options) -> BottleneckCell:
    return host.registry.create("cell", "vdvae.bottleneck_cell", **options)


@pytest.mark.parametrize("options", [{"bottleneck_ratio": 2.0}, {"last_init_scale": 0.0}])
def test_meets_the_cell_contract_with_its_own_options(host, options):
    # Every resample mode, channel changes, gradients, channels_last, state_dict: genzoo's
    # contract for cells, run by the kit (tests/test_conformance.py runs it on the defaults).
    genzoo.testing.check_cell("vdvae.bottleneck_cell", host.registry, **options)


def test_branch_is_gelu_before_each_of_four_convs_at_a_quarter_width(host):
    cell = make(host, in_chs=16, out_chs=16).eval()
    assert cell.mid_chs == 4
    assert [c.kernel_size for c in (cell.conv1, cell.conv2, cell.conv3, cell.conv4)] == [
        (1, 1), (3, 3), (3, 3), (1, 1),
    ]  # fmt: skip
    x = torch.randn(2, 16, 6, 6)
    h = x
    for conv in (cell.conv1, cell.conv2, cell.conv3, cell.conv4):
        h = conv(F.gelu(h))
    torch.testing.assert_close(cell(x), x + h)  # identity skip, plain residual sum


def test_down_pools_after_the_block_and_up_upsamples_before_it(host):
    torch.manual_seed(0)
    down = make(host, in_chs=8, out_chs=16, resample="down")
    same = make(host, in_chs=8, out_chs=16, resample="none")
    same.load_state_dict(down.state_dict())
    x = torch.randn(2, 8, 8, 8)
    torch.testing.assert_close(down(x), F.avg_pool2d(same(x), 2))

    up = make(host, in_chs=16, out_chs=8, resample="up")
    same = make(host, in_chs=16, out_chs=8, resample="none")
    same.load_state_dict(up.state_dict())
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(up(x), same(F.interpolate(x, scale_factor=2, mode="nearest")))


def test_skip_is_a_1x1_conv_only_when_channels_change(host):
    assert isinstance(make(host, in_chs=8, out_chs=8, resample="down").skip, torch.nn.Identity)
    skip = make(host, in_chs=8, out_chs=16).skip
    assert isinstance(skip, torch.nn.Conv2d) and skip.kernel_size == (1, 1)


def test_zero_last_init_starts_as_the_identity(host):
    cell = make(host, in_chs=8, out_chs=8, last_init_scale=0.0)
    x = torch.randn(1, 8, 5, 5)
    torch.testing.assert_close(cell(x), x + cell.conv4.bias.view(1, -1, 1, 1))


def test_gate_scales_the_branch(host):
    gate = host.registry.get("gate", "nvae.se").factory
    cell = make(host, in_chs=16, out_chs=16, gate_layer=lambda chs: gate(chs=chs))
    assert isinstance(cell.gate, genzoo.ChannelGate)
    assert cell(torch.randn(2, 16, 4, 4)).shape == (2, 16, 4, 4)


def test_gradients_match_finite_differences(host):
    cell = make(host, in_chs=4, out_chs=6, resample="up").double()
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cell, (x,))


@pytest.mark.parametrize("bad", [{"bottleneck_ratio": 0}, {"resample": "sideways"}, {"in_chs": 0}])
def test_bad_options_are_refused_with_their_name(host, bad):
    options = {"in_chs": 8, "out_chs": 8, **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        make(host, **options)


def test_replaces_every_cell_of_an_nvae_hierarchy(host):
    torch.manual_seed(0)
    cells = {
        f"{part}_cell": "vdvae.bottleneck_cell"
        for part in ("encoder", "decoder", "preprocess", "postprocess")
    }
    model = host.registry.create(
        "hierarchy",
        "nvae.hierarchy",
        image_shape=(3, 16, 16),
        num_channels=8,
        num_latent_scales=2,
        num_groups_per_scale=1,
        latent_chs=4,
        **cells,
    )
    assert any(isinstance(m, BottleneckCell) for m in model.modules())
    out = model(torch.rand(2, 3, 16, 16))
    assert out.elbo.shape == (2,) and torch.isfinite(out.elbo).all()
    (-out.elbo.mean()).backward()
