"""NVAE's training objective, each term beside the equation it computes (Vahdat & Kautz 2020,
Sec. 3.2 and App. A; the official ``train.py``).

For a batch of images ``x`` the trainer minimizes

.. math::

    \\mathcal{L} = \\frac{1}{B} \\sum_{b} \\Big[ -\\log p(x_b \\mid z)
                 + \\beta \\sum_{g} w_g \\, \\mathrm{KL}_g(x_b) \\Big]
                 + \\sum_{r} \\lambda_r R_r(\\theta)

- ``-log p(x|z)``: the reconstruction term, the output likelihood of the image under the
  decoder given the posterior samples (:attr:`genzoo.HierarchyOutput.log_px`);
- ``KL_g``: the KL divergence of latent group ``g``, ``log q(z_g | x, z_<g) - log p(z_g | z_<g)``
  (:attr:`genzoo.HierarchyOutput.kl`), in nats per image;
- ``beta``: the KL warm-up coefficient (:func:`genzoo.engine.kl_coefficient`), from ``kl_const_coeff``
  up to 1 over the first ``kl_anneal_portion`` of training;
- ``w_g``: the KL balancing weights while ``beta < 1`` (App. A, :func:`genzoo.engine.balanced_kl`), 1 after;
- ``lambda_r R_r``: each regularizer's weighted penalty (spectral regularization, the BN weight
  penalty, ...), as :meth:`genzoo.Regularizer.loss` returns it with its own schedule.

The negative ELBO reported (``nelbo``, and ``bpd`` from it) is the same sum with ``beta = 1``,
``w = 1`` and no regularizers: what the model's likelihood bound is, whatever the schedule.
Everything is summed in fp32 whatever the autocast dtype, since nats per image are large.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from genzoo.engine.schedules import balanced_kl
from genzoo.interfaces.hierarchy import HierarchyOutput
from genzoo.interfaces.regularizer import Regularizer, TrainProgress


@dataclass(frozen=True)
class StepObjective:
    """The loss of one training step and its parts (per-example parts already averaged)."""

    loss: torch.Tensor
    """The scalar minimized: the batch mean of ``-log p(x|z) + beta * sum_g w_g KL_g``, plus
    every regularizer's term."""
    kl_per_group: torch.Tensor
    """``(B, G)`` KL of each group per image, in fp32."""
    log_px: torch.Tensor
    """``(B,)`` log-likelihood of each image, in fp32."""
    regularizer_losses: tuple[torch.Tensor, ...]
    """Each regularizer's weighted term, in the order given."""

    def scalars(self) -> dict[str, torch.Tensor]:
        """Detached scalars for logging: ``loss``, ``nelbo`` (the bound itself), ``recon``
        (``-log p(x|z)``) and ``kl`` (summed over groups), batch means."""
        kl, log_px = self.kl_per_group.detach(), self.log_px.detach()
        return {
            "loss": self.loss.detach().float(),
            "nelbo": (kl.sum(1) - log_px).mean(),
            "recon": -log_px.mean(),
            "kl": kl.sum(1).mean(),
        }


def step_objective(
    out: HierarchyOutput,
    *,
    kl_coeff: float,
    alpha: torch.Tensor,
    balance: bool,
    regularizers: Sequence[Regularizer],
    model: nn.Module,
    progress: TrainProgress,
) -> StepObjective:
    """NVAE's objective for one batch (see the module docstring for the equation)."""
    kl = torch.stack([k.float() for k in out.kl], dim=1)  # KL_g per image, (B, G)
    log_px = out.log_px.float()  # log p(x | z), (B,)
    kl_term, _ = balanced_kl(kl, kl_coeff, alpha, balance=balance)  # beta * sum_g w_g KL_g, (B,)
    loss = (kl_term - log_px).mean()
    reg_losses = tuple(reg.loss(model, progress) for reg in regularizers)  # lambda_r R_r(theta)
    for value in reg_losses:
        loss = loss + value
    return StepObjective(loss=loss, kl_per_group=kl, log_px=log_px, regularizer_losses=reg_losses)
