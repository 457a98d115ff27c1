"""The output likelihoods p(x | z): NVAE's discretized mixture of logistics (colour and grey
images, any bit depth) and the Bernoulli for binarized images.

A likelihood is built from a registry with ``image_chs`` and ``num_bits``; the decoder head
produces ``param_chs`` channels of parameters; ``log_prob(params, x)`` scores images in
``[0, 1]`` on the grid ``k / (2**num_bits - 1)`` (nats per example), ``sample(params, t)``
draws images (lower ``t``: less noise) and ``mean(params)`` gives a deterministic image.

Checked by brute force and against references: the probabilities of every value of a pixel sum
to one (exhaustively, and for 8-bit RGB through its conditionals), ``log_prob`` agrees with a
plain-float reference of the documented parameter layout and each bin's mass with a 50-digit
one, gradients stay finite at the edge values and for extreme parameters, samples lie on the
bit grid and follow ``log_prob``, a lower temperature means less noise, and parameters of the
wrong shape and negative temperatures are refused.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import genzoo
from genzoo.interfaces import OutputLikelihood
from genzoo_plugins.nvae import likelihoods


@pytest.fixture(scope="module")
def registry() -> genzoo.Registry:
    reg = genzoo.Registry()
    reg.add_declared(likelihoods)
    return reg


def dml(registry, image_chs: int, num_bits: int, num_mixtures: int = 10) -> OutputLikelihood:
    lik = registry.create(
        "likelihood",
        "nvae.discretized_mix_logistic",
        image_chs=image_chs,
        num_bits=num_bits,
        num_mixtures=num_mixtures,
    )
    assert isinstance(lik, OutputLikelihood)
    return lik


def every_pixel_value(image_chs: int, num_bits: int) -> torch.Tensor:
    """All ``(2**b)**c`` values of one pixel, ``(N, c, 1, 1)`` in float64, first channel slowest."""
    top = 2**num_bits - 1
    values = list(itertools.product(range(top + 1), repeat=image_chs))
    return (torch.tensor(values, dtype=torch.float64) / top).reshape(-1, image_chs, 1, 1)


def layout(lik) -> dict[str, slice]:
    """Where each parameter sits in the head's channels (the documented order): the M mixture
    logits, then for each channel M means and M log-scales, then (RGB) 3 M couplings."""
    m, c = lik.num_mixtures, lik.image_chs
    out = {"logits": slice(0, m)}
    for ch in range(c):
        out[f"mean{ch}"] = slice(m + 2 * m * ch, m + 2 * m * ch + m)
        out[f"log_scale{ch}"] = slice(m + 2 * m * ch + m, m + 2 * m * (ch + 1))
    if c == 3:
        out["coeffs"] = slice(m + 6 * m, 10 * m)
    return out


def random_params(
    lik, seed: int, pixels: int = 1, *, wide: bool = False, dtype=torch.float64
) -> torch.Tensor:
    """Parameters for ``pixels`` one-pixel examples, ``(pixels, param_chs, 1, 1)``.

    Moderate (default): logits, means and coupling pre-activations ~ N(0, 1), log-scales
    uniform in [-3, 0] (scales 0.05 to 1 on the [-1, 1] pixel range). Wide: logits and
    couplings ~ 2 N(0, 1), means ~ 1.5 N(0, 1) (some outside [-1, 1]), log-scales uniform in
    [-8, 1] (below the -7 clamp up to broad)."""
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(pixels, lik.param_chs, 1, 1, generator=g, dtype=torch.float64)
    low, high = (-8.0, 1.0) if wide else (-3.0, 0.0)
    where = layout(lik)
    for ch in range(lik.image_chs):
        rand = torch.rand(pixels, lik.num_mixtures, 1, 1, generator=g, dtype=torch.float64)
        params[:, where[f"log_scale{ch}"]] = high - (high - low) * rand
    if wide:
        for name, chans in where.items():
            if not name.startswith("log_scale"):
                params[:, chans] *= 1.5 if name.startswith("mean") else 2.0
    return params.to(dtype)


def probabilities(lik, params: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    """``p(x_i)`` in float64 for each value ``x_i`` of one pixel (by default every value it can
    take) under that pixel's ``params``."""
    if x is None:
        x = every_pixel_value(lik.image_chs, lik.num_bits)
    x = x.to(params.dtype)
    return lik.log_prob(params.expand(len(x), -1, -1, -1), x).double().exp()


# --- shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_chs", "mixtures", "param_chs"), [(3, 10, 100), (3, 5, 50), (1, 10, 30), (1, 1, 3)]
)
def test_param_chs(registry, image_chs, mixtures, param_chs):
    """10 M for RGB, as the official code (logit, 3 means, 3 log-scales, 3 couplings per
    mixture); 3 M for one channel (logit, mean, log-scale)."""
    assert dml(registry, image_chs, 8, mixtures).param_chs == param_chs


def test_params_of_the_wrong_shape_are_refused(registry):
    lik = dml(registry, 3, 8, num_mixtures=10)
    assert lik.param_chs == 100
    with pytest.raises(ValueError, match=r"\(B, 100, H, W\)"):
        lik.log_prob(torch.zeros(1, 30, 2, 2), torch.zeros(1, 3, 2, 2))


def test_log_prob_sums_over_pixels_per_example(registry):
    lik = dml(registry, 3, 8, 4)
    params = torch.randn(2, lik.param_chs, 3, 5)
    x = torch.randint(0, 256, (2, 3, 3, 5)) / 255.0
    whole = lik.log_prob(params, x)
    assert whole.shape == (2,)
    by_pixel = sum(
        lik.log_prob(params[:, :, i : i + 1, j : j + 1], x[:, :, i : i + 1, j : j + 1])
        for i in range(3)
        for j in range(5)
    )
    torch.testing.assert_close(whole, by_pixel, rtol=1e-5, atol=1e-4)


# --- the probabilities of all values of a pixel sum to one ----------------------------------


@pytest.mark.parametrize(("image_chs", "num_bits"), [(3, 1), (3, 2), (3, 3), (1, 1), (1, 2), (1, 5), (1, 8)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("wide", [False, True])
def test_probabilities_of_all_values_sum_to_one(registry, image_chs, num_bits, dtype, wide):
    """Exhaustive: every (R, G, B) combination of one pixel, the coupling included, for
    moderate and for wide-ranging parameters."""
    lik = dml(registry, image_chs, num_bits, num_mixtures=5)
    for seed in range(8):
        total = probabilities(lik, random_params(lik, seed, wide=wide, dtype=dtype)).sum()
        assert total.item() == pytest.approx(1.0, abs=1e-5)


def test_probabilities_sum_to_one_for_sharp_logistics(registry):
    """One component whose scale is about a sixth of the bin width (log-scale -3.7 at 3 bits:
    bins have half-width 1/7 on [-1, 1]); the sum should still be 1."""
    lik = dml(registry, 1, 3, num_mixtures=1)
    params = torch.tensor([0.0, 0.0, -3.7], dtype=torch.float64).reshape(1, 3, 1, 1)
    assert probabilities(lik, params).sum().item() == pytest.approx(1.0, abs=1e-5)


def rgb_with_fixed(r: int, g: int | None = None) -> torch.Tensor:
    """8-bit pixels with R = r (and G = g), the remaining channels over all their values."""
    rest = every_pixel_value(2 if g is None else 1, 8)
    fixed = torch.tensor([r] if g is None else [r, g], dtype=torch.float64) / 255
    return torch.cat([fixed.reshape(1, -1, 1, 1).expand(len(rest), -1, -1, -1), rest], dim=1)


def grey_params(lik, params: torch.Tensor, ch: int, shift: torch.Tensor | float = 0.0) -> torch.Tensor:
    """A one-channel mixture's parameters from channel ``ch`` of an RGB one (mean + shift)."""
    where = layout(lik)
    means = params[:, where[f"mean{ch}"]] + shift
    return torch.cat([params[:, where["logits"]], means, params[:, where[f"log_scale{ch}"]]], dim=1)


@pytest.mark.parametrize("r", [0, 97, 255])
def test_rgb_8_bit_conditionals_sum_to_one(registry, r):
    """At 8 bits (too many triples to enumerate): for a fixed R, the sum over all (G, B) is
    the R marginal, a grey mixture with the same logits; with one component and a fixed (R, G),
    the sum over B is p(R) p(G | R), G's logistic shifted by tanh(coupling) * R."""
    lik = dml(registry, 3, 8, num_mixtures=3)
    grey = dml(registry, 1, 8, num_mixtures=3)
    params = random_params(lik, seed=r, wide=True)
    marginal = probabilities(grey, grey_params(lik, params, 0), torch.full((1, 1, 1, 1), r / 255))
    torch.testing.assert_close(
        probabilities(lik, params, rgb_with_fixed(r)).sum(), marginal[0], rtol=1e-5, atol=0
    )

    lik1, grey1 = dml(registry, 3, 8, num_mixtures=1), dml(registry, 1, 8, num_mixtures=1)
    params = random_params(lik1, seed=r + 1, wide=True)
    params[:, layout(lik1)["log_scale1"]] = -3.0  # so that p(G | R) is far from 0
    g = 128
    x_r = 2 * r / 255 - 1
    p_r = probabilities(grey1, grey_params(lik1, params, 0), torch.full((1, 1, 1, 1), r / 255))
    g_shift = torch.tanh(params[:, layout(lik1)["coeffs"]][:, :1]) * x_r
    p_g = probabilities(grey1, grey_params(lik1, params, 1, g_shift), torch.full((1, 1, 1, 1), g / 255))
    total = probabilities(lik1, params, rgb_with_fixed(r, g)).sum()
    torch.testing.assert_close(total, p_r[0] * p_g[0], rtol=1e-5, atol=0)


# --- against an independent reference ------------------------------------------------------


def reference_probability(params: list[float], pixel: list[int], num_bits: int, m: int) -> float:
    """p(pixel) from the documented layout, in plain floats: mixture logits; per channel M
    means and M log-scales (clamped at -7); then M couplings each for G<-R, B<-R, B<-G (tanh).
    Channel values map to [-1, 1]; bins have half-width 1 / (2**b - 1); edge bins take the tails."""
    top = 2**num_bits - 1
    c = len(pixel)
    x = [2.0 * k / top - 1.0 for k in pixel]
    half = 1.0 / top

    def sigmoid(t: float) -> float:
        return 1.0 / (1.0 + math.exp(-t)) if t >= 0 else math.exp(t) / (1.0 + math.exp(t))

    logits = params[:m]
    weights = [math.exp(v - max(logits)) for v in logits]
    weights = [w / sum(weights) for w in weights]
    total = 0.0
    for i in range(m):
        prob = 1.0
        for ch in range(c):
            mean = params[m + 2 * m * ch + i]
            scale = math.exp(max(params[m + 2 * m * ch + m + i], -7.0))
            if c == 3 and ch == 1:
                mean += math.tanh(params[m + 6 * m + i]) * x[0]
            if c == 3 and ch == 2:
                mean += (
                    math.tanh(params[m + 6 * m + m + i]) * x[0]
                    + math.tanh(params[m + 6 * m + 2 * m + i]) * x[1]
                )
            upper = 1.0 if pixel[ch] == top else sigmoid((x[ch] + half - mean) / scale)
            lower = 0.0 if pixel[ch] == 0 else sigmoid((x[ch] - half - mean) / scale)
            prob *= upper - lower
        total += weights[i] * prob
    return total


@pytest.mark.parametrize(("image_chs", "num_bits"), [(3, 8), (3, 2), (1, 8), (1, 4)])
def test_log_prob_matches_a_reference_computation(registry, image_chs, num_bits):
    m = 3
    lik = dml(registry, image_chs, num_bits, num_mixtures=m)
    g = torch.Generator().manual_seed(11)
    top = 2**num_bits - 1
    pixels = torch.randint(0, top + 1, (40, image_chs), generator=g)
    pixels[:4] = torch.tensor(
        [[0] * image_chs, [top] * image_chs, [0, top, 0][:image_chs], [top, 0, 5 % top][:image_chs]]
    )
    params = torch.randn(40, lik.param_chs, generator=g, dtype=torch.float64)
    got = lik.log_prob(params[:, :, None, None], (pixels.double() / top)[:, :, None, None]).exp()
    expected = torch.tensor(
        [reference_probability(p.tolist(), k.tolist(), num_bits, m) for p, k in zip(params, pixels)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-9)


def reference_log_mass(k: int, num_bits: int, mean: float, log_scale: float) -> float:
    """``log P(bin k)`` of one discretized logistic, in 50-digit arithmetic."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    top = 2**num_bits - 1
    x, half, s = mpmath.mpf(2 * k) / top - 1, mpmath.mpf(1) / top, mpmath.exp(max(log_scale, -7.0))

    def cdf(v):
        return 1 / (1 + mpmath.exp(-(v - mean) / s))

    upper = 1 if k == top else cdf(x + half)
    lower = 0 if k == 0 else cdf(x - half)
    return float(mpmath.log(upper - lower))


@pytest.mark.parametrize(
    ("num_bits", "mean", "log_scale"),
    [(8, 0.1, -7.0), (3, 0.0, -3.7), (5, 0.9, -5.0), (8, -0.3, -1.0), (8, 0.0, 20.0), (2, 3.0, 0.5)],
)
def test_bin_masses_match_a_high_precision_reference(registry, num_bits, mean, log_scale):
    """Sharp logistics (scale below the bin width), a broad one (scale e^20) and a mean far
    outside [-1, 1]: every bin's log-mass is exact, masses far below 1e-5 included."""
    lik = dml(registry, 1, num_bits, num_mixtures=1)
    params = torch.tensor([0.0, mean, log_scale], dtype=torch.float64).reshape(1, 3, 1, 1)
    top = 2**num_bits - 1
    ks = sorted({0, 1, top // 3, top // 2, top // 2 + 1, top - 1, top})
    got = lik.log_prob(
        params.expand(len(ks), -1, -1, -1), torch.tensor(ks).double().reshape(-1, 1, 1, 1) / top
    )
    expected = torch.tensor(
        [reference_log_mass(k, num_bits, mean, log_scale) for k in ks], dtype=torch.float64
    )
    finite = expected > -600  # beyond that the mass underflows float64 in any method
    torch.testing.assert_close(got[finite], expected[finite], rtol=1e-9, atol=1e-9)


# --- gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("image_chs", [1, 3])
@pytest.mark.parametrize("scale", ["moderate", "extreme"])
def test_gradients_finite_at_the_edge_values(registry, image_chs, scale, dtype):
    """Pixels at 0 and 1 (the tail bins) and in between, with moderate parameters and with
    extreme ones: means far outside [-1, 1], log-scales far below the clamp and large, huge
    logits and coupling pre-activations."""
    lik = dml(registry, image_chs, 8, num_mixtures=4)
    g = torch.Generator().manual_seed(3)
    params = torch.randn(6, lik.param_chs, 2, 2, generator=g).to(dtype)
    if scale == "extreme":
        factors = torch.tensor([1e3, 50.0, 1e4], dtype=dtype)
        params = params * factors[torch.randint(0, 3, params.shape, generator=g)]
    params.requires_grad_()
    x = (
        torch.tensor([0.0, 1.0, 128 / 255], dtype=dtype)
        .repeat(2)[:, None, None, None]
        .expand(6, image_chs, 2, 2)
        .contiguous()
    )
    x[0, :, 0, 0] = 1.0  # mixed edges within one pixel
    log_p = lik.log_prob(params, x)
    assert torch.isfinite(log_p).all()
    log_p.sum().backward()
    assert torch.isfinite(params.grad).all()
    if scale == "moderate":
        assert (params.grad != 0).any(dim=1).all()


def test_bernoulli_gradients_finite_for_extreme_logits(registry):
    lik = registry.create("likelihood", "nvae.bernoulli", image_chs=1)
    params = (
        torch.tensor([-1e4, -50.0, 0.0, 50.0, 1e4]).reshape(1, 1, 1, 5).repeat(2, 1, 1, 1).requires_grad_()
    )
    x = torch.tensor([[0.0], [1.0]]).reshape(2, 1, 1, 1).expand(2, 1, 1, 5)
    log_p = lik.log_prob(params, x)
    log_p.sum().backward()
    assert torch.isfinite(log_p).all() and torch.isfinite(params.grad).all()


# --- Bernoulli -----------------------------------------------------------------------------


@pytest.mark.parametrize("image_chs", [1, 2])
def test_bernoulli_matches_torch_distributions(registry, image_chs):
    lik = registry.create("likelihood", "nvae.bernoulli", image_chs=image_chs)
    assert lik.param_chs == image_chs and lik.num_bits == 1
    g = torch.Generator().manual_seed(5)
    params = 3 * torch.randn(4, image_chs, 6, 6, generator=g, dtype=torch.float64)
    x = torch.randint(0, 2, (4, image_chs, 6, 6), generator=g).double()
    expected = torch.distributions.Bernoulli(logits=params).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(lik.log_prob(params, x), expected, rtol=1e-12, atol=1e-12)
    # the probabilities of all values of a pixel (p(0) + p(1) for one channel) sum to one
    total = probabilities(lik, params[:1, :, :1, :1]).sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(lik.mean(params), torch.sigmoid(params))


def test_bernoulli_refuses_more_than_one_bit(registry):
    with pytest.raises(ValueError, match="num_bits=8"):
        registry.create("likelihood", "nvae.bernoulli", image_chs=1, num_bits=8)


def test_bernoulli_samples_are_binary_with_the_right_frequency(registry):
    torch.manual_seed(6)
    lik = registry.create("likelihood", "nvae.bernoulli", image_chs=1)
    logits = torch.tensor([-2.0, 0.0, 1.0]).reshape(1, 1, 1, 3).expand(20_000, 1, 1, 3)
    samples = lik.sample(logits, 1.0)
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(
        samples.mean(0).flatten(), torch.sigmoid(logits[0].flatten()), rtol=0, atol=0.015
    )


# --- sampling: on the grid, from the model, less noise at lower temperature -------------------


@pytest.mark.parametrize(
    ("image_chs", "num_bits"), [(3, 8), (3, 5), (3, 2), (3, 1), (1, 8), (1, 5), (1, 3), (1, 2), (1, 1)]
)
def test_samples_lie_on_the_bit_grid(registry, image_chs, num_bits):
    torch.manual_seed(7)
    lik = dml(registry, image_chs, num_bits, num_mixtures=3)
    params = 2 * torch.randn(4, lik.param_chs, 5, 5)
    top = 2**num_bits - 1
    for draw in (lik.sample(params, 1.0), lik.sample(params, 0.5), lik.mean(params)):
        assert draw.shape == (4, image_chs, 5, 5)
        assert draw.min() >= 0 and draw.max() <= 1
        assert torch.equal(draw, torch.round(draw * top) / top)  # exactly k / top, as data


def sample_frequencies(lik, params: torch.Tensor, n: int) -> torch.Tensor:
    top = 2**lik.num_bits - 1
    draws = torch.round(lik.sample(params.expand(n, -1, -1, -1), 1.0) * top).long().reshape(n, lik.image_chs)
    code = sum(draws[:, ch] * (top + 1) ** (lik.image_chs - 1 - ch) for ch in range(lik.image_chs))
    return torch.bincount(code, minlength=(top + 1) ** lik.image_chs).double() / n


def test_samples_follow_log_prob_for_one_channel(registry):
    torch.manual_seed(8)
    lik = dml(registry, 1, 2, num_mixtures=2)
    params = random_params(lik, seed=4)
    n = 100_000
    probs = probabilities(lik, params)
    se = (probs * (1 - probs) / n).sqrt()
    assert ((sample_frequencies(lik, params, n) - probs).abs() < 5 * se + 1e-4).all()


@pytest.mark.parametrize("num_bits", [1, 2])
def test_samples_follow_log_prob_with_the_rgb_coupling(registry, num_bits):
    """At low bit depth, where coupling to the unquantized draws (the official sampler)
    visibly departs from the model."""
    torch.manual_seed(9)
    lik = dml(registry, 3, num_bits, num_mixtures=2)
    params = random_params(lik, seed=5)
    params[:, layout(lik)["coeffs"]] = 3.0  # strong coupling: tanh(3) = 0.995
    n = 100_000
    probs = probabilities(lik, params)
    se = (probs * (1 - probs) / n).sqrt()
    assert ((sample_frequencies(lik, params, n) - probs).abs() < 5 * se + 1e-4).all()


@pytest.mark.parametrize("image_chs", [1, 3])
def test_lower_temperature_gives_samples_closer_to_the_mean(registry, image_chs):
    """One dominant component, so that only the logistic noise is at play: the spread around
    ``mean()`` shrinks with the temperature and vanishes at 0 (the official sampler divides
    the noise by the temperature instead; genzoo does not)."""
    torch.manual_seed(10)
    lik = dml(registry, image_chs, 8, num_mixtures=3)
    params = 0.5 * torch.randn(8, lik.param_chs, 8, 8)
    params[:, 0] = 30.0  # the first component's logit dominates
    for ch in range(image_chs):
        params[:, layout(lik)[f"log_scale{ch}"]] = -2.5  # scale 0.08 on [-1, 1]
    mean = lik.mean(params)
    spread = [(lik.sample(params, t) - mean).abs().mean().item() for t in (1.0, 0.5, 0.25)]
    assert spread[0] > spread[1] > spread[2] > 0
    assert spread[1] == pytest.approx(spread[0] / 2, rel=0.2)  # the noise scales with t
    assert torch.equal(lik.sample(params, 0.0), mean)


def test_temperature_near_zero_tends_to_the_most_likely_component(registry):
    torch.manual_seed(12)
    lik = dml(registry, 1, 8, num_mixtures=10)
    params = torch.randn(4, lik.param_chs, 8, 8)
    torch.testing.assert_close(lik.sample(params, 1e-6), lik.mean(params), rtol=0, atol=1.5 / 255)


def test_bernoulli_lower_temperature_gives_samples_closer_to_the_mean(registry):
    torch.manual_seed(13)
    lik = registry.create("likelihood", "nvae.bernoulli", image_chs=1)
    params = torch.randn(64, 1, 16, 16)
    mean = lik.mean(params)
    spread = [(lik.sample(params, t) - mean).abs().mean().item() for t in (1.0, 0.5, 0.1)]
    assert spread[0] > spread[1] > spread[2]
    # at a low temperature the sample is the mode: 1 where the probability exceeds 1/2
    assert torch.equal(lik.sample(params, 1e-6), (params > 0).float())
    assert torch.equal(lik.sample(params, 0.0), (params > 0).float())


@pytest.mark.parametrize("key", ["nvae.discretized_mix_logistic", "nvae.bernoulli"])
def test_negative_temperature_is_refused(registry, key):
    lik = registry.create("likelihood", key, image_chs=1, num_bits=1)
    with pytest.raises(ValueError, match="temperature"):
        lik.sample(torch.zeros(1, lik.param_chs, 2, 2), -1.0)


@pytest.mark.parametrize("key", ["nvae.discretized_mix_logistic", "nvae.bernoulli"])
def test_samples_do_not_depend_on_the_memory_format(registry, key):
    """The same seed gives the same image for channels_last and contiguous parameters."""
    options = {"num_bits": 8} if key != "nvae.bernoulli" else {}
    lik = registry.create("likelihood", key, image_chs=3, **options)
    params = torch.randn(2, lik.param_chs, 6, 5)
    torch.manual_seed(3)
    plain = lik.sample(params, temperature=1.0)
    torch.manual_seed(3)
    cl = lik.sample(params.contiguous(memory_format=torch.channels_last), temperature=1.0)
    assert torch.equal(plain, cl)
