"""Schedules of NVAE's training recipe (Vahdat & Kautz 2020, Sec. 4 and App. A).

- Learning rate: linear warm-up from 0, then cosine annealing to a minimum. The official code
  warms up per step (``lr * step / warmup``) and anneals per epoch with
  ``CosineAnnealingLR``; here the cosine is evaluated per step, the continuous form of the same
  curve, so that a run is defined by its step count alone.
- KL warm-up: the KL term's coefficient stays at a small constant for a short portion of
  training, then rises linearly to 1 (the official ``utils.kl_coeff``).
- KL balancing (Sec. 3.2 / App. A): while the KL coefficient is below 1, each group's KL is
  reweighted in proportion to its average size (plus 0.01) divided by a fixed per-group factor
  ``alpha``, so that no group is switched off early (the official ``utils.kl_balancer`` and
  ``utils.kl_balancer_coeff``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from genzoo.interfaces.hierarchy import GroupInfo

KL_BALANCE_EPS = 0.01  # added to each group's mean |KL| so that a collapsed group keeps a weight


class WarmupCosine:
    """The learning-rate multiplier of step ``s`` (0-based): ``s / warmup_steps`` during warm-up,
    then a cosine from 1 down to ``lr_min / lr`` at ``total_steps``.

    A callable object (not a closure) so that ``LambdaLR.state_dict()`` stores its fields and a
    checkpoint holding it loads with ``torch.load(weights_only=True)``. Its values are a
    validated :class:`~genzoo.engine.config.TrainConfig`'s (``lr``, ``lr_min``,
    ``lr_warmup_steps``, ``steps``: ``lr > 0``, ``0 <= lr_min <= lr``,
    ``0 <= warmup_steps < total_steps``), which checked them when it was built.
    """

    def __init__(self, *, lr: float, lr_min: float, warmup_steps: int, total_steps: int) -> None:
        self.lr = float(lr)
        self.lr_min = float(lr_min)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step: int) -> float:
        return self.learning_rate(step) / self.lr

    def learning_rate(self, step: int) -> float:
        """The learning rate used by step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.lr * step / self.warmup_steps
        progress = min((step - self.warmup_steps) / (self.total_steps - self.warmup_steps), 1.0)
        return self.lr_min + (self.lr - self.lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


def kl_coefficient(
    step: int,
    total_steps: int,
    *,
    anneal_portion: float = 0.3,
    const_portion: float = 1e-4,
    const_coeff: float = 1e-4,
) -> float:
    """NVAE's KL warm-up coefficient at ``step``.

    ``max(min((step - const_portion * T) / (anneal_portion * T), 1), const_coeff)`` with
    ``T = total_steps``: ``const_coeff`` during the first ``const_portion`` of training, then a
    linear ramp reaching 1 after a further ``anneal_portion``. ``anneal_portion = 0`` turns
    warm-up off (always 1).
    """
    if anneal_portion <= 0:
        return 1.0
    ramp = (step - const_portion * total_steps) / (anneal_portion * total_steps)
    return max(min(ramp, 1.0), const_coeff)


def kl_balance_alpha(groups: Sequence[GroupInfo], fun: str = "square") -> torch.Tensor:
    """The fixed per-group factors ``alpha`` of KL balancing, shape ``(G,)``, smallest 1.

    With ``s`` the group's scale (0 the coarsest) and ``n`` the groups sharing it:
    ``equal``: 1; ``linear``: ``2**s``; ``sqrt``: ``sqrt(2**s)``; ``square``: ``4**s / n``
    (proportional to the latent variables of one group when each finer scale doubles height and
    width, as in NVAE). Dividing by alpha in :func:`balanced_kl` makes larger groups weigh less.
    """
    if not groups:
        raise ValueError("groups is empty; KL balancing needs at least one latent group")
    if fun == "equal":
        values = [1.0 for _ in groups]
    elif fun == "linear":
        values = [2.0**g.scale for g in groups]
    elif fun == "sqrt":
        values = [math.sqrt(2.0**g.scale) for g in groups]
    elif fun == "square":
        values = [4.0**g.scale / g.groups_in_scale for g in groups]
    else:
        raise ValueError(f"fun={fun!r}; expected one of 'equal', 'linear', 'sqrt', 'square'")
    alpha = torch.tensor(values, dtype=torch.float64)
    return (alpha / alpha.min()).float()


def balanced_kl(
    kl_per_group: torch.Tensor,
    kl_coeff: float,
    alpha: torch.Tensor,
    *,
    balance: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The KL term of the training loss per example, and the group weights used.

    :param kl_per_group: ``(B, G)`` KL of each group per example, in nats.
    :param kl_coeff: the warm-up coefficient (:func:`kl_coefficient`).
    :param alpha: ``(G,)`` from :func:`kl_balance_alpha`.
    :param balance: balance while ``kl_coeff < 1``; after warm-up (or with ``balance=False``)
        every group weighs 1.
    :returns: ``kl_coeff * sum_g w_g KL_g`` per example ``(B,)``, and ``w`` ``(G,)``. The
        weights are ``w_g ∝ (mean_b |KL_g| + 0.01) / alpha_g`` normalized to mean 1, and are
        constants for the gradient (detached), as in the official code.
    """
    if kl_per_group.dim() != 2:
        raise ValueError(f"kl_per_group has shape {tuple(kl_per_group.shape)}; expected (batch, groups)")
    if balance and kl_coeff < 1.0:
        alpha = alpha.to(kl_per_group)
        size = kl_per_group.detach().abs().mean(0) + KL_BALANCE_EPS
        weights = size / alpha * size.sum()
        weights = weights / weights.mean()
    else:
        weights = torch.ones(kl_per_group.shape[1], dtype=kl_per_group.dtype, device=kl_per_group.device)
    return kl_coeff * (kl_per_group * weights).sum(1), weights
