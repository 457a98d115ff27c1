"""Latent groups (NVAE's residual normal, the baselines' plain normal) and the diagonal normal
under them, checked against ``torch.distributions`` and hand computations.

A latent group is built from a registry with the keywords every group takes
(``enc_chs``, ``dec_chs``, ``latent_chs``, ``top``) plus its own (``num_flows``); its
``forward(enc_feature, dec_state)`` returns a :class:`genzoo.interfaces.LatentOutput` with the
sample ``z``, the KL per example (and per channel) and the log-densities of ``z``;
``sample(dec_state, temperature=t)`` draws from the prior with its sigma times ``t`` (``t >= 0``,
a negative one is refused, as are bad ``num_flows`` / ``flow_expansion`` options). The posterior
flows' autoregressive masks are checked through their Jacobians.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch.distributions import Normal, kl_divergence
from torch.func import jacrev

import genzoo
from genzoo.interfaces import LatentGroup, LatentOutput
from genzoo.layers.distributions import DiagonalNormal
from genzoo_plugins.baselines import plain_normal
from genzoo_plugins.nvae import residual_normal
from genzoo_plugins.nvae.flows import AutoregressiveShift, PairedAutoregressiveFlow

ENC, DEC, LAT, SIDE, BATCH = 6, 5, 3, 4, 2
GROUP_KEYS = ("nvae.residual_normal", "baselines.plain_normal")


@pytest.fixture(scope="module")
def registry() -> genzoo.Registry:
    reg = genzoo.Registry()
    reg.add_declared(residual_normal)
    reg.add_declared(plain_normal)
    return reg


def make_group(registry, key, *, top=False, **options) -> LatentGroup:
    group = registry.create("latent_group", key, enc_chs=ENC, dec_chs=DEC, latent_chs=LAT, top=top, **options)
    assert isinstance(group, LatentGroup)
    return group


def features(seed: int = 0, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(BATCH, ENC, SIDE, SIDE, generator=g, dtype=dtype)
    dec = torch.randn(BATCH, DEC, SIDE, SIDE, generator=g, dtype=dtype)
    return enc, dec


def per_example(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


# --- the diagonal normal ---------------------------------------------------------------------


def random_normals(seed: int) -> tuple[DiagonalNormal, DiagonalNormal, Normal, Normal]:
    g = torch.Generator().manual_seed(seed)
    shape = (4, 3, 5, 5)
    mu1, mu2 = (3 * torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2))
    s1, s2 = (torch.exp(torch.randn(shape, generator=g, dtype=torch.float64)) for _ in range(2))
    return DiagonalNormal(mu1, s1), DiagonalNormal(mu2, s2), Normal(mu1, s1), Normal(mu2, s2)


@pytest.mark.parametrize("seed", [0, 1])
def test_diagonal_normal_kl_and_log_prob_match_torch_distributions(seed):
    q, p, tq, tp = random_normals(seed)
    torch.testing.assert_close(q.kl(p), kl_divergence(tq, tp), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p.kl(q), kl_divergence(tp, tq), rtol=1e-12, atol=1e-12)
    z = tq.sample()
    torch.testing.assert_close(q.log_prob(z), tq.log_prob(z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(q.mean, tq.mean)


def test_diagonal_normal_kl_to_itself_is_exactly_zero():
    q, *_ = random_normals(2)
    assert torch.equal(q.kl(DiagonalNormal(q.mu.clone(), q.sigma.clone())), torch.zeros_like(q.mu))


@pytest.mark.parametrize("temperature", [1.0, 0.6, 0.2])
def test_diagonal_normal_temperature_multiplies_sigma(temperature):
    torch.manual_seed(0)
    mu = torch.full((200_000,), 2.0)
    q = DiagonalNormal(mu, torch.full_like(mu, 1.5))
    standardized = (q.sample(temperature) - mu) / 1.5
    assert abs(standardized.mean().item()) < 0.01
    assert standardized.std().item() == pytest.approx(temperature, rel=0.02)


def test_diagonal_normal_temperature_zero_is_the_mean():
    q, *_ = random_normals(3)
    assert torch.equal(q.sample(0.0), q.mu)


# --- the groups' distributions, recomputed from their weights --------------------------------


def soft_clamp(x: torch.Tensor) -> torch.Tensor:
    return 5.0 * torch.tanh(x / 5.0)


def nvae_normal_by_hand(mu: torch.Tensor, log_sigma: torch.Tensor) -> Normal:
    """NVAE's ``Normal``: soft-clamped mu and log-sigma, sigma = exp(log_sigma) + 1e-2."""
    return Normal(soft_clamp(mu), torch.exp(soft_clamp(log_sigma)) + 1e-2)


def distributions_by_hand(
    group: LatentGroup, enc: torch.Tensor, dec: torch.Tensor | None
) -> tuple[Normal, Normal]:
    """(posterior, prior) of a group without flows, from its convs' weights."""
    e = group.encoder_params
    q_params = F.conv2d(enc, e.weight, e.bias, padding=1)  # 3x3 conv of the encoder feature
    if group.top:
        p_params = torch.zeros_like(q_params)
    else:
        d = group.prior_params
        p_params = F.conv2d(F.elu(dec), d.weight, d.bias)  # 1x1 conv of ELU(decoder state)
    p_mu, p_raw = p_params.chunk(2, dim=1)
    q_mu, q_raw = q_params.chunk(2, dim=1)
    if isinstance(group, residual_normal.ResidualNormal):
        # Residual: q = N(mu_p + d_mu, "sigma_p * d_sigma"), the sum taken in the unclamped
        # parameters (official Normal(mu_p + mu_q, log_sig_p + log_sig_q)).
        return nvae_normal_by_hand(p_mu + q_mu, p_raw + q_raw), nvae_normal_by_hand(p_mu, p_raw)
    prior = (
        Normal(torch.zeros_like(p_mu), torch.ones_like(p_mu))
        if group.top
        else Normal(p_mu, F.softplus(p_raw) + 1e-4)
    )
    return Normal(q_mu, F.softplus(q_raw) + 1e-4), prior


@pytest.mark.parametrize("top", [False, True])
@pytest.mark.parametrize("key", GROUP_KEYS)
def test_kl_and_log_densities_match_torch_distributions(registry, key, top):
    torch.manual_seed(1)
    group = make_group(registry, key, top=top).double()
    enc, dec = features(dtype=torch.float64)
    out = group(enc, None if top else dec)
    assert isinstance(out, LatentOutput)
    assert out.z.shape == (BATCH, LAT, SIDE, SIDE)
    assert out.kl.shape == out.log_q.shape == out.log_p.shape == (BATCH,)
    assert out.kl_per_channel.shape == (BATCH, LAT)
    with torch.no_grad():
        posterior, prior = distributions_by_hand(group, enc, dec)
        torch.testing.assert_close(
            out.kl, per_example(kl_divergence(posterior, prior)), rtol=1e-10, atol=1e-10
        )
        torch.testing.assert_close(
            out.kl_per_channel, kl_divergence(posterior, prior).sum(dim=(2, 3)), rtol=1e-10, atol=1e-10
        )
        torch.testing.assert_close(out.log_q, per_example(posterior.log_prob(out.z)), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out.log_p, per_example(prior.log_prob(out.z)), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out.q_mean, posterior.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.kl_per_channel.sum(1), out.kl, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("key", GROUP_KEYS)
def test_z_is_a_reparameterized_posterior_sample(registry, key):
    """(z - mu_q) / sigma_q is standard normal, and gradients flow through z to the encoder."""
    torch.manual_seed(2)
    group = make_group(registry, key)
    enc = torch.randn(64, ENC, 8, 8)
    dec = torch.randn(64, DEC, 8, 8)
    out = group(enc, dec)
    with torch.no_grad():
        posterior, _ = distributions_by_hand(group, enc, dec)
        eps = (out.z - posterior.mean) / posterior.stddev
    assert abs(eps.mean().item()) < 0.03
    assert eps.std().item() == pytest.approx(1.0, rel=0.03)
    out.z.sum().backward()
    assert group.encoder_params.bias.grad.abs().sum() > 0


def test_nvae_top_prior_sigma_is_1_01_and_plain_top_prior_sigma_is_1(registry):
    """NVAE's top prior is N(0, (e^0 + 1e-2)^2) = N(0, 1.01^2); the plain group's is N(0, 1)."""
    enc, _ = features(dtype=torch.float64)
    for key, sigma in (("nvae.residual_normal", 1.01), ("baselines.plain_normal", 1.0)):
        group = make_group(registry, key, top=True).double()
        out = group(enc, None)
        expected = Normal(torch.zeros_like(out.z), torch.full_like(out.z, sigma))
        torch.testing.assert_close(out.log_p, per_example(expected.log_prob(out.z)), rtol=1e-12, atol=1e-12)


def zero_residual(group: residual_normal.ResidualNormal) -> None:
    """The encoder conv outputs exactly 0: a zero direction v gives W = g * 0 / (0 + 1e-5) = 0."""
    with torch.no_grad():
        group.encoder_params.parametrizations.weight.original1.zero_()
        group.encoder_params.bias.zero_()


@pytest.mark.parametrize("top", [False, True])
def test_residual_normal_with_zero_residual_has_kl_exactly_zero(registry, top):
    torch.manual_seed(3)
    group = make_group(registry, "nvae.residual_normal", top=top)
    zero_residual(group)
    enc, dec = features()
    out = group(enc, None if top else dec)
    assert torch.equal(out.kl, torch.zeros(BATCH))
    assert torch.equal(out.kl_per_channel, torch.zeros(BATCH, LAT))
    assert torch.equal(out.log_q, out.log_p)  # q is p, so both densities are one number


def test_plain_normal_is_not_residual(registry):
    """Zeroing the plain group's encoder conv gives q = N(0, softplus(0) + 1e-4), not the prior."""
    group = make_group(registry, "baselines.plain_normal")
    with torch.no_grad():
        group.encoder_params.weight.zero_()
        group.encoder_params.bias.zero_()
    enc, dec = features()
    out = group(enc, dec)
    assert (out.kl > 0.1).all()
    torch.testing.assert_close(out.q_mean, torch.zeros_like(out.q_mean))


# --- sampling at a temperature ---------------------------------------------------------------


@pytest.mark.parametrize("key", GROUP_KEYS)
@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.3])
def test_temperature_scales_the_prior_std(registry, key, temperature):
    torch.manual_seed(4)
    group = make_group(registry, key)
    dec = torch.randn(64, DEC, 8, 8)
    with torch.no_grad():
        z = group.sample(dec, temperature=temperature)
        _, prior = distributions_by_hand(group, torch.zeros(64, ENC, 8, 8), dec)
    standardized = (z - prior.mean) / prior.stddev
    assert z.shape == (64, LAT, 8, 8)
    assert abs(standardized.mean().item()) < 0.02
    assert standardized.std().item() == pytest.approx(temperature, rel=0.03)


@pytest.mark.parametrize("key", GROUP_KEYS)
def test_temperature_zero_gives_the_prior_mean(registry, key):
    """At temperature 0 a non-top group returns its prior's mean, with no noise."""
    torch.manual_seed(4)
    group = make_group(registry, key).double()
    _, dec = features(dtype=torch.float64)
    with torch.no_grad():
        z = group.sample(dec, temperature=0.0)
        _, prior = distributions_by_hand(group, torch.zeros(BATCH, ENC, SIDE, SIDE, dtype=torch.float64), dec)
    torch.testing.assert_close(z, prior.mean, rtol=1e-12, atol=1e-12)
    assert torch.equal(group.sample(dec, temperature=0.0), z)
    assert (z != 0).any()  # not the top group's zero mean


@pytest.mark.parametrize(("key", "sigma"), [("nvae.residual_normal", 1.01), ("baselines.plain_normal", 1.0)])
def test_top_group_samples_at_temperature(registry, key, sigma):
    torch.manual_seed(5)
    group = make_group(registry, key, top=True)
    with torch.no_grad():
        for temperature in (1.0, 0.5):
            z = group.sample(None, temperature=temperature, size=(256, 16, 16))
            assert z.shape == (256, LAT, 16, 16)
            assert abs(z.mean().item()) < 0.01
            assert z.std().item() == pytest.approx(temperature * sigma, rel=0.01)
        assert torch.equal(group.sample(None, temperature=0.0, size=(2, 4, 4)), torch.zeros(2, LAT, 4, 4))


@pytest.mark.parametrize("top", [False, True])
@pytest.mark.parametrize("key", GROUP_KEYS)
def test_negative_temperature_is_refused(registry, key, top):
    group = make_group(registry, key, top=top)
    _, dec = features()
    with pytest.raises(ValueError, match="temperature"):
        group.sample(None if top else dec, temperature=-0.5, size=(BATCH, SIDE, SIDE))


# --- posterior flows -------------------------------------------------------------------------


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Weights far from the near-identity initialization, so that every dependency is visible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("original0"):  # log g: unit-norm filters
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def autoregressive_order(mirror: bool) -> torch.Tensor:
    """Positions of the elements of a flattened ``(c, h, w)`` latent in the flow's order: raster
    over pixels (reversed when mirrored), then over channels at one pixel."""
    index = torch.arange(LAT * SIDE * SIDE).reshape(LAT, SIDE, SIDE)
    if mirror:
        index = torch.flip(index, dims=(1, 2))
    return rearrange(index, "c h w -> (h w c)")


def jacobian(fn, z: torch.Tensor) -> torch.Tensor:
    """``d fn(z) / d z`` for one example ``(c, h, w)``, as a ``(D, D)`` matrix."""
    flat = z.flatten()
    return jacrev(lambda v: fn(v.reshape(1, *z.shape)).flatten())(flat)


@pytest.mark.parametrize("mirror", [False, True])
def test_flow_cell_jacobian_is_unit_lower_triangular_in_its_order(mirror):
    cell = AutoregressiveShift(LAT, expansion=2, mirror=mirror).double()
    randomize(cell, seed=int(mirror))
    z = torch.randn(LAT, SIDE, SIDE, dtype=torch.float64)
    order = autoregressive_order(mirror)
    jac = jacobian(cell, z)[order][:, order]
    d = LAT * SIDE * SIDE
    assert torch.equal(torch.triu(jac, diagonal=1), torch.zeros(d, d)), "an output reads a later element"
    assert torch.equal(torch.diagonal(jac), torch.ones(d))
    # the test has teeth: most earlier elements in reach do influence later ones
    assert (torch.tril(jac, diagonal=-1) != 0).sum() > d
    assert torch.linalg.slogdet(jac).logabsdet.abs().item() < 1e-12


def test_flow_cell_is_not_triangular_in_the_other_order():
    cell = AutoregressiveShift(LAT, expansion=2, mirror=True).double()
    randomize(cell, seed=2)
    order = autoregressive_order(mirror=False)
    jac = jacobian(cell, torch.randn(LAT, SIDE, SIDE, dtype=torch.float64))[order][:, order]
    assert (torch.triu(jac, diagonal=1) != 0).any()


def test_paired_flow_preserves_volume():
    flow = PairedAutoregressiveFlow(LAT, ENC, expansion=2).double()
    randomize(flow, seed=3)
    z = torch.randn(LAT, SIDE, SIDE, dtype=torch.float64)
    feature = torch.randn(1, ENC, SIDE, SIDE, dtype=torch.float64)
    jac = jacobian(lambda v: flow(v, feature)[0], z)
    assert torch.linalg.slogdet(jac).logabsdet.abs().item() < 1e-9
    _, log_det = flow(z[None], feature)
    assert torch.equal(log_det, torch.zeros(1, LAT, SIDE, SIDE, dtype=torch.float64))


def invert_shift(cell: AutoregressiveShift, y: torch.Tensor) -> torch.Tensor:
    """Solve ``y = z - mu(z)`` for z by fixed-point iteration: with an autoregressive mu each
    sweep fixes at least one more element, so D sweeps are exact."""
    z = y.clone()
    for _ in range(y[0].numel()):
        z = y + cell.shift(z)
    return z


def test_group_with_flows_kl_is_log_q_minus_log_p(registry):
    torch.manual_seed(6)
    group = make_group(registry, "nvae.residual_normal", num_flows=1).double()
    assert len(group.flows) == 1
    randomize(group.flows, seed=4)
    enc, dec = features(dtype=torch.float64)
    out = group(enc, dec)
    torch.testing.assert_close(out.kl, out.log_q - out.log_p, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.kl_per_channel.sum(1), out.kl, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        posterior, prior = distributions_by_hand(group, enc, dec)
        # log p is the prior's density of the flowed z ...
        torch.testing.assert_close(out.log_p, per_example(prior.log_prob(out.z)), rtol=1e-10, atol=1e-10)
        # ... and log q the posterior's density of the z before the flow (log|det| = 0)
        flow = group.flows[0]
        z0 = invert_shift(flow.cell1, invert_shift(flow.cell2, out.z))
        torch.testing.assert_close(flow(z0, enc)[0], out.z, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out.log_q, per_example(posterior.log_prob(z0)), rtol=1e-8, atol=1e-8)
        assert not torch.allclose(z0, out.z)  # the flow did move z
    # with flows the KL is a single-sample estimate: it changes from call to call
    assert not torch.equal(group(enc, dec).kl, out.kl)


@pytest.mark.parametrize(
    ("option", "value"),
    [("num_flows", -1), ("num_flows", True), ("flow_expansion", 0), ("flow_expansion", 1.5)],
)
def test_bad_flow_options_are_refused(registry, option, value):
    with pytest.raises(ValueError, match=option):
        make_group(registry, "nvae.residual_normal", **{option: value})


@pytest.mark.parametrize(
    ("key", "options"),
    [
        ("nvae.residual_normal", {"num_flows": 2}),
        ("nvae.residual_normal", {}),
        ("baselines.plain_normal", {}),
    ],
)
def test_gradients_are_finite_and_reach_every_parameter(registry, key, options):
    torch.manual_seed(7)
    group = make_group(registry, key, **options)
    enc, dec = features()
    enc.requires_grad_()
    out = group(enc, dec)
    (out.kl.sum() + (out.z * torch.randn_like(out.z)).sum()).backward()
    assert torch.isfinite(enc.grad).all()
    for name, p in group.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_gradients_stay_finite_for_extreme_parameters(registry):
    """The soft clamp bounds log-sigma, so huge encoder outputs give finite KL and gradients."""
    group = make_group(registry, "nvae.residual_normal")
    enc, dec = features()
    out = group(1e4 * enc, 1e4 * dec)
    out.kl.sum().backward()
    assert torch.isfinite(out.kl).all()
    assert all(torch.isfinite(p.grad).all() for p in group.parameters())


def test_noise_does_not_depend_on_the_memory_format():
    """The same seed gives the same sample for a channels_last and a contiguous tensor
    (``torch.randn_like`` would follow the strides and scramble the noise)."""
    mu = torch.randn(2, 3, 4, 5)
    sigma = torch.rand(2, 3, 4, 5) + 0.5
    torch.manual_seed(7)
    plain = DiagonalNormal(mu, sigma).sample()
    torch.manual_seed(7)
    cl = DiagonalNormal(
        mu.contiguous(memory_format=torch.channels_last), sigma.contiguous(memory_format=torch.channels_last)
    ).sample()
    assert torch.equal(plain, cl)
