"""NVAE's schedules against hand-computed values and a direct computation of KL balancing."""

from __future__ import annotations

import math

import pytest
import torch

from genzoo import GroupInfo
from genzoo.engine import WarmupCosine, balanced_kl, kl_balance_alpha, kl_coefficient


def test_learning_rate_warms_up_linearly_then_follows_a_cosine_to_the_minimum():
    schedule = WarmupCosine(lr=1e-2, lr_min=1e-4, warmup_steps=10, total_steps=110)
    assert schedule.learning_rate(0) == 0.0
    assert schedule.learning_rate(5) == pytest.approx(5e-3)
    assert schedule.learning_rate(10) == pytest.approx(1e-2)
    # halfway through the cosine: the mean of lr and lr_min
    assert schedule.learning_rate(60) == pytest.approx((1e-2 + 1e-4) / 2)
    assert schedule.learning_rate(35) == pytest.approx(
        1e-4 + (1e-2 - 1e-4) * 0.5 * (1 + math.cos(math.pi / 4))
    )
    assert schedule.learning_rate(110) == pytest.approx(1e-4)
    assert schedule.learning_rate(500) == pytest.approx(1e-4)
    assert schedule(60) == pytest.approx(schedule.learning_rate(60) / 1e-2)


def test_without_warm_up_the_cosine_starts_at_the_full_rate():
    schedule = WarmupCosine(lr=2.0, lr_min=0.0, warmup_steps=0, total_steps=4)
    assert [schedule.learning_rate(s) for s in range(5)] == pytest.approx(
        [2.0, 1.7071068, 1.0, 0.2928932, 0.0]
    )


def test_kl_coefficient_matches_nvae_formula_at_hand_picked_steps():
    # T = 1000: constant 1e-4 until step 100 (10%), then a ramp over 300 steps (30%).
    def beta(step):
        return kl_coefficient(step, 1000, anneal_portion=0.3, const_portion=0.1, const_coeff=1e-4)

    assert beta(0) == 1e-4
    assert beta(100) == 1e-4  # max(0, 1e-4)
    assert beta(175) == pytest.approx(0.25)
    assert beta(250) == pytest.approx(0.5)
    assert beta(400) == 1.0
    assert beta(999) == 1.0
    assert kl_coefficient(3, 10, anneal_portion=0.0) == 1.0


def _groups(groups_per_scale: list[int]) -> list[GroupInfo]:
    out, index = [], 0
    for scale, n in enumerate(groups_per_scale):
        for _ in range(n):
            out.append(
                GroupInfo(
                    index=index,
                    scale=scale,
                    groups_in_scale=n,
                    latent_chs=20,
                    height=4 * 2**scale,
                    width=4 * 2**scale,
                )
            )
            index += 1
    return out


def test_square_alpha_is_four_to_the_scale_over_groups_in_scale():
    # NVAE's CIFAR-10 layout with adaptive groups: 5 groups at the top scale, 10 below.
    alpha = kl_balance_alpha(_groups([5, 10]), "square")
    expected = torch.tensor([1 / 5] * 5 + [4 / 10] * 10)
    torch.testing.assert_close(alpha, expected / expected.min())
    assert alpha.min() == 1.0


@pytest.mark.parametrize(
    ("fun", "per_scale"), [("equal", [1, 1, 1]), ("linear", [1, 2, 4]), ("sqrt", [1, 2**0.5, 2])]
)
def test_other_alpha_functions(fun, per_scale):
    alpha = kl_balance_alpha(_groups([2, 2, 2]), fun)
    torch.testing.assert_close(alpha, torch.tensor(per_scale).repeat_interleave(2).float())


def test_unknown_alpha_function_is_named():
    with pytest.raises(ValueError, match="fun='cube'"):
        kl_balance_alpha(_groups([1]), "cube")


def test_balanced_kl_matches_a_direct_computation():
    torch.manual_seed(0)
    kl = torch.rand(6, 3) * torch.tensor([1.0, 10.0, 100.0])
    alpha = torch.tensor([1.0, 2.0, 8.0])
    beta = 0.3
    total, weights = balanced_kl(kl, beta, alpha)

    # Direct: w_g = (mean_b |KL_bg| + 0.01) / alpha_g * S, normalized to mean 1 over groups.
    size = [kl[:, g].abs().mean().item() + 0.01 for g in range(3)]
    raw = [size[g] / alpha[g].item() * sum(size) for g in range(3)]
    w = [r / (sum(raw) / 3) for r in raw]
    direct = [beta * sum(w[g] * kl[b, g].item() for g in range(3)) for b in range(6)]
    torch.testing.assert_close(weights, torch.tensor(w))
    torch.testing.assert_close(total, torch.tensor(direct))


def test_balancing_stops_once_warm_up_is_over_and_weights_are_constants_for_the_gradient():
    kl = torch.tensor([[1.0, 50.0], [3.0, 70.0]], requires_grad=True)
    alpha = torch.tensor([1.0, 4.0])
    total, weights = balanced_kl(kl, 1.0, alpha)
    torch.testing.assert_close(total, kl.detach().sum(1))
    assert weights.tolist() == [1.0, 1.0]
    total, weights = balanced_kl(kl, 0.5, alpha)
    total.sum().backward()
    # d total / d KL_bg = beta * w_g: the weights do not depend on KL in the gradient
    torch.testing.assert_close(kl.grad, 0.5 * weights.expand(2, 2))
