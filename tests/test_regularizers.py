"""Regularizers: NVAE's spectral regularization and BN weight penalty, and the "none" baseline.

Spectral estimates are checked against ``torch.linalg.matrix_norm(W, ord=2)`` (an SVD), gradients
against the closed form ``d(u^T W v)/dW = u v^T``.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from einops import rearrange
from torch import nn

import genzoo
from genzoo.interfaces import Regularizer, TrainProgress
from genzoo_plugins.baselines import no_regularizer
from genzoo_plugins.baselines.no_regularizer import NoRegularizer
from genzoo_plugins.nvae import bn_penalty, spectral
from genzoo_plugins.nvae.bn_penalty import BatchNormPenalty
from genzoo_plugins.nvae.spectral import SpectralRegularizer
from genzoo_plugins.nvae.weight_norm import wn_conv2d


def matrix(weight: torch.Tensor) -> torch.Tensor:
    return rearrange(weight.detach(), "o ... -> o (...)")


def true_sigma(weight: torch.Tensor) -> float:
    return torch.linalg.matrix_norm(matrix(weight), ord=2).item()


def small_model() -> nn.Sequential:
    """Three 3x3 convs of one shape (batched together), a 1x1 conv, a depthwise conv, a Linear."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(4, 8, 3),
        nn.Conv2d(4, 8, 3),
        nn.Sequential(nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8)),
        nn.Conv2d(8, 16, 1),
        nn.Conv2d(16, 16, 5, groups=16),
        nn.Linear(16, 4),
    )


def convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


# -- spectral regularization ------------------------------------------------------------------
def test_spectral_estimates_match_svd_after_first_call():
    model = small_model()
    reg = SpectralRegularizer()
    penalty = reg.penalty(model)
    estimates = reg.last_estimates()
    assert list(estimates) == list(convs(model))  # every conv, in named_modules order, no Linear
    for name, conv in convs(model).items():
        assert estimates[name] == pytest.approx(true_sigma(conv.weight), rel=1e-2)
    assert penalty.item() == pytest.approx(sum(true_sigma(c.weight) for c in convs(model).values()), rel=1e-2)
    # one (u, v) batch per weight shape: 8x36 (three convs), 16x8, 16x25 (depthwise)
    state = reg.state_dict()
    assert sorted(state) == ["u/16x25", "u/16x8", "u/8x36", "v/16x25", "v/16x8", "v/8x36"]
    assert state["u/8x36"].shape == (3, 8) and state["v/8x36"].shape == (3, 36)


def test_include_linear_adds_linear_weights():
    model = small_model()
    with_linear = SpectralRegularizer(include_linear=True)
    without = SpectralRegularizer()
    extra = with_linear.penalty(model) - without.penalty(model)
    assert extra.item() == pytest.approx(true_sigma(model[5].weight), rel=1e-2)
    assert "5" in with_linear.last_estimates()


def test_power_iteration_vectors_persist_across_calls():
    """Thirty calls of one iteration each continue where the last stopped: the same as one call
    of thirty iterations, and far better than one iteration from scratch."""
    model = small_model()
    stepwise = SpectralRegularizer(first_iterations=1, power_iterations=1)
    first = stepwise.penalty(model).item()
    for _ in range(29):
        last = stepwise.penalty(model).item()
    at_once = SpectralRegularizer(first_iterations=30).penalty(model).item()
    exact = sum(true_sigma(c.weight) for c in convs(model).values())
    assert last == pytest.approx(at_once, rel=1e-5)
    assert first < last <= exact * (1 + 1e-5)  # power iteration estimates grow towards sigma_max
    assert abs(last - exact) < 0.1 * abs(first - exact)


def test_estimates_track_changing_weights():
    model = small_model()
    reg = SpectralRegularizer()
    reg.penalty(model)
    with torch.no_grad():
        for conv in convs(model).values():
            conv.weight.mul_(1.0 + 0.05 * torch.randn_like(conv.weight))
    reg.penalty(model)  # four iterations from the previous vectors
    for name, conv in convs(model).items():
        assert reg.last_estimates()[name] == pytest.approx(true_sigma(conv.weight), rel=1e-2)


def test_state_dict_round_trip_resumes_exactly():
    model = small_model()
    reg = SpectralRegularizer(first_iterations=2, power_iterations=1)
    reg.penalty(model)
    buffer = io.BytesIO()
    torch.save(reg.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    resumed = SpectralRegularizer(first_iterations=2, power_iterations=1)
    resumed.load_state_dict(state)
    for key, value in reg.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value)
    fresh = SpectralRegularizer(first_iterations=2, power_iterations=1)

    expected = reg.penalty(model)
    assert torch.equal(resumed.penalty(model), expected)
    assert not torch.equal(fresh.penalty(model), expected)  # it starts over with first_iterations


def test_state_of_another_model_is_rejected():
    reg = SpectralRegularizer()
    reg.penalty(small_model())
    other = SpectralRegularizer()
    other.load_state_dict(reg.state_dict())
    with pytest.raises(ValueError, match="8x36"):
        other.penalty(nn.Sequential(nn.Conv2d(4, 8, 3)))  # one 8x36 weight, the state has three
    with pytest.raises(ValueError, match="'w/8x36'"):
        other.load_state_dict({"w/8x36": torch.zeros(1, 8)})
    with pytest.raises(ValueError, match="shapes"):
        other.load_state_dict({"u/8x36": torch.zeros(1, 8)})


def test_state_loaded_as_another_dtype_follows_the_weights():
    model = small_model().double()
    reg = SpectralRegularizer()
    reg.load_state_dict({k: v.float() for k, v in SpectralRegularizer().state_dict().items()})
    penalty = reg.penalty(model)
    assert penalty.dtype == torch.float64
    assert all(v.dtype == torch.float64 for v in reg.state_dict().values())


def test_vectors_follow_the_model_to_another_device():
    """The "meta" device stands in for an accelerator: vectors saved on the CPU move to the
    weights' device at the next call, and new vectors are created there."""
    model = small_model()
    reg = SpectralRegularizer()
    reg.penalty(model)
    resumed = SpectralRegularizer()
    resumed.load_state_dict(reg.state_dict())
    model.to("meta")
    assert resumed.penalty(model).device.type == "meta"
    assert SpectralRegularizer().penalty(model).device.type == "meta"
    assert {v.device.type for v in resumed.state_dict().values()} == {"meta"}


@pytest.mark.parametrize("kind", ["sum", "squared_excess"])
def test_gradient_is_u_v_transposed(kind):
    model = small_model()
    reg = SpectralRegularizer(penalty=kind)
    reg.penalty(model)  # converge u, v
    penalty = reg.penalty(model)
    penalty.backward()
    state = reg.state_dict()
    for i, name in enumerate(["0", "1", "2.0"]):
        conv = convs(model)[name]
        u, v = state["u/8x36"][i], state["v/8x36"][i]
        sigma = u @ matrix(conv.weight) @ v
        scale = 1.0 if kind == "sum" else 2.0 * (sigma - 1.0)
        expected = scale * torch.outer(u, v)
        assert torch.allclose(matrix(conv.weight.grad), expected, atol=1e-6)
    if kind == "squared_excess":
        sigmas = [true_sigma(c.weight) for c in convs(model).values()]
        assert penalty.item() == pytest.approx(sum((s - 1) ** 2 for s in sigmas), rel=1e-3)


def test_weight_normalized_convs_are_penalized_through_log_g():
    torch.manual_seed(1)
    model = nn.Sequential(wn_conv2d(4, 6, 3), nn.SiLU(), wn_conv2d(6, 6, 1))
    with torch.no_grad():  # move off the initial log g so the normalized weight differs from v
        model[0].parametrizations.weight.original0.add_(0.3)
    reg = SpectralRegularizer()
    penalty = reg.penalty(model)
    expected = true_sigma(model[0].weight) + true_sigma(model[2].weight)
    assert penalty.item() == pytest.approx(expected, rel=1e-2)

    penalty.backward()
    log_g = model[0].parametrizations.weight.original0
    # W = exp(log g) * v / ||v||, so dW/dlog_g[o] = W[o] and d sigma/dlog_g[o] = sum_k (u v^T * W)[o, k]
    state = reg.state_dict()
    u, v = state["u/6x36"][0], state["v/6x36"][0]
    expected_grad = (torch.outer(u, v) * matrix(model[0].weight)).sum(1)
    assert torch.allclose(log_g.grad.flatten(), expected_grad, atol=1e-6)


def test_penalty_ignores_autocast():
    model = small_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        penalty = SpectralRegularizer().penalty(model)
    assert penalty.dtype == torch.float32
    assert penalty.item() == pytest.approx(sum(true_sigma(c.weight) for c in convs(model).values()), rel=1e-2)


def test_model_without_convs_gives_zero():
    penalty = SpectralRegularizer().penalty(nn.Sequential(nn.Linear(3, 3)))
    assert penalty.item() == 0.0 and penalty.shape == ()


@pytest.mark.parametrize(
    "options, match",
    [
        ({"penalty": "max"}, "penalty='max'"),
        ({"power_iterations": 0}, "power_iterations=0"),
        ({"first_iterations": 2.5}, "first_iterations=2.5"),
        ({"coeff": -1.0}, "coeff=-1.0"),
    ],
)
def test_bad_options_are_named(options, match):
    with pytest.raises(ValueError, match=match):
        SpectralRegularizer(**options)


# -- coefficient schedule ---------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SpectralRegularizer, BatchNormPenalty])
def test_coefficient_anneals_in_log_space(cls):
    reg = cls(coeff=1e-2, anneal=True, coeff_init=10.0)
    at = lambda t: reg.coefficient(TrainProgress(step=0, total_steps=100, kl_coeff=t))  # noqa: E731
    assert at(0.0) == pytest.approx(10.0)
    assert at(1.0) == pytest.approx(1e-2)
    assert at(0.5) == pytest.approx(math.sqrt(10.0 * 1e-2))
    model = small_model()
    assert reg.loss(model, TrainProgress(0, 100, 0.5)).item() == pytest.approx(
        at(0.5) * reg.penalty(model).item(), rel=1e-4
    )


@pytest.mark.parametrize("cls", [SpectralRegularizer, BatchNormPenalty])
def test_default_coefficient_is_nvae_cifar10(cls):
    reg = cls()
    assert reg.coeff == 1e-2 and not reg.anneal and reg.coeff_init == 10.0
    assert reg.coefficient(TrainProgress(step=0, total_steps=10, kl_coeff=0.0)) == 1e-2


# -- BN weight penalty and the "none" regularizer ----------------------------------------------
def test_bn_penalty_is_sum_of_max_abs_gamma():
    model = nn.Sequential(
        nn.BatchNorm2d(4),
        nn.Sequential(nn.BatchNorm1d(3)),
        nn.BatchNorm2d(5, affine=False),
        nn.Conv2d(4, 4, 1),
    )
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([0.5, -2.0, 1.0, 1.5]))
        model[1][0].weight.copy_(torch.tensor([-0.25, 0.1, 0.2]))
    penalty = BatchNormPenalty().penalty(model)
    assert penalty.item() == pytest.approx(2.0 + 0.25)
    penalty.backward()
    assert model[0].weight.grad.tolist() == [0.0, -1.0, 0.0, 0.0]  # d|x|/dx at the maximum only
    assert model[1][0].weight.grad.tolist() == [-1.0, 0.0, 0.0]
    assert BatchNormPenalty().penalty(nn.Conv2d(1, 1, 1)).item() == 0.0


def test_no_regularizer_gives_zero():
    model = small_model()
    reg = NoRegularizer()
    penalty = reg.penalty(model)
    assert penalty.item() == 0.0 and penalty.shape == () and not penalty.requires_grad
    assert penalty.device == next(model.parameters()).device
    assert reg.loss(model, TrainProgress(5, 10)).item() == 0.0
    assert reg.coeff == 0.0 and reg.state_dict() == {}


# -- registration -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "module, key, cls",
    [
        (spectral, "nvae.spectral_regularizer", SpectralRegularizer),
        (bn_penalty, "nvae.bn_weight_penalty", BatchNormPenalty),
        (no_regularizer, "baselines.none", NoRegularizer),
    ],
)
def test_registered_under_its_key(module, key, cls):
    registry = genzoo.Registry()
    registry.add_declared(module)
    assert registry.keys("regularizer") == [key]
    reg = registry.create("regularizer", key, coeff=0.1)
    assert isinstance(reg, cls) and isinstance(reg, Regularizer) and reg.coeff == 0.1
