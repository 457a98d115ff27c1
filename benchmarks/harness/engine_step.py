"""The engine's own training step (:class:`genzoo.engine.step.TrainStep`), assembled as the
trainer assembles it, for benchmarks that time the step a run takes without the trainer's loop:
``gpu/bench_gpu_paper.py`` and ``gpu/matrix_probe.py``."""

from __future__ import annotations

import torch

from genzoo.engine import compilation
from genzoo.engine.config import TrainConfig
from genzoo.engine.devices import grad_scaler, resolve_precision
from genzoo.engine.distributed import DistContext
from genzoo.engine.guard import StepGuard
from genzoo.engine.optim import build_optimizer, build_scheduler
from genzoo.engine.schedules import kl_balance_alpha
from genzoo.engine.signals import StopSignals
from genzoo.engine.step import TrainStep


def engine_step(model: torch.nn.Module, config: TrainConfig, device: torch.device, regularizers=()):
    """The engine's training step for ``model`` on ``device``, assembled as the trainer does
    (one process); returns the step and the blocks it compiled."""
    compilation.check_device(config, device)
    precision = resolve_precision(config.precision, device)  # fp32 on a CPU, as in the engine
    optimizer = build_optimizer(model, config)
    train_model, blocks = compilation.training_model(model, model, config)
    step = TrainStep(
        config=config,
        ctx=DistContext(),
        model=model,
        train_model=train_model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config),
        scaler=grad_scaler(precision, device, config.grad_scaler_init),
        ema=None,
        guard=StepGuard(skip_threshold=config.skip_threshold, max_consecutive_skips=10**9),
        regularizers=list(regularizers),
        alpha=kl_balance_alpha(model.groups, config.kl_balance_fun).to(device),
        precision=precision,
        device=device,
        stop_signals=StopSignals(),
    )
    return step, blocks
