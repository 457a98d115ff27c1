"""Optimizers and the learning-rate scheduler (NVAE, Vahdat & Kautz 2020, App. A).

NVAE trains with Adamax, ``eps = 1e-3`` and weight decay 3e-4 applied as L2 regularization
(``torch.optim.Adamax(weight_decay=...)`` adds ``wd * w`` to the gradient), on every parameter.
AdamW (decoupled weight decay, Loshchilov & Hutter 2019) is offered as the common alternative.
"""

from __future__ import annotations

import torch
from torch import nn

from genzoo.engine.config import TrainConfig
from genzoo.engine.schedules import WarmupCosine

OPTIMIZER_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "adamax": torch.optim.Adamax,
    "adamw": torch.optim.AdamW,
}
"""The class of each ``TrainConfig.optimizer`` name (``genzoo.engine.config.OPTIMIZERS``)."""


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` over every trainable parameter of ``model``, with the
    settings of ``config`` as they are (it was validated when it was built)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return OPTIMIZER_CLASSES[config.optimizer](
        params, lr=config.lr, betas=config.betas, eps=config.optimizer_eps, weight_decay=config.weight_decay
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine to ``lr_min`` (:class:`WarmupCosine`), stepped once per
    training step, skipped steps included, so the learning rate depends on the step alone."""
    schedule = WarmupCosine(
        lr=config.lr, lr_min=config.lr_min, warmup_steps=config.lr_warmup_steps, total_steps=config.steps
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=schedule)
