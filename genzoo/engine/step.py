"""One optimizer step of NVAE's recipe: forward under autocast, the objective
(:mod:`.objective`), backward through the gradient scaler, the gradient norm (clipped when
asked), the guard's verdict (:mod:`.guard`), the update or the skip, the EMA and the schedule;
then the step's scalars summed over ranks by name."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from genzoo.engine.config import TrainConfig
from genzoo.engine.devices import autocast
from genzoo.engine.distributed import DistContext, all_reduce_scalars
from genzoo.engine.evaluation import bits_per_dim
from genzoo.engine.guard import BufferSnapshot, StepGuard
from genzoo.engine.objective import step_objective
from genzoo.engine.schedules import kl_coefficient
from genzoo.engine.signals import StopSignals
from genzoo.interfaces.hierarchy import Hierarchy
from genzoo.interfaces.regularizer import Regularizer, TrainProgress


class TrainStep:
    """Takes one training step of ``model`` (through ``train_model``, its DDP or compiled
    wrapper) and returns its metrics; :attr:`kl_groups` and :attr:`stop_requested` describe the
    step just taken."""

    def __init__(
        self,
        *,
        config: TrainConfig,
        ctx: DistContext,
        model: Hierarchy,
        train_model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: Any,
        ema: nn.Module | None,
        guard: StepGuard,
        regularizers: Sequence[Regularizer],
        alpha: torch.Tensor,
        precision: str,
        device: torch.device,
        stop_signals: StopSignals,
    ) -> None:
        self.config, self.ctx = config, ctx
        self.model, self.train_model = model, train_model
        self.optimizer, self.scheduler, self.scaler, self.ema = optimizer, scheduler, scaler, ema
        self.guard, self.regularizers, self.alpha = guard, list(regularizers), alpha
        self.precision, self.device, self.stop_signals = precision, device, stop_signals
        self.reg_names = _unique_names([type(r).__name__ for r in self.regularizers])
        self._buffers = list(model.buffers())
        self.kl_groups: list[float] = []
        self.stop_requested = False

    def __call__(self, x: torch.Tensor, step: int) -> dict[str, float]:
        cfg = self.config
        kl_coeff = kl_coefficient(
            step,
            cfg.steps,
            anneal_portion=cfg.kl_anneal_portion,
            const_portion=cfg.kl_const_portion,
            const_coeff=cfg.kl_const_coeff,
        )
        progress = TrainProgress(step=step, total_steps=cfg.steps, kl_coeff=kl_coeff)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.model.train()
        if cfg.cuda_graphs:
            # A graph replay reuses the memory of the previous step's outputs (.compilation).
            torch.compiler.cudagraph_mark_step_begin()
        self.optimizer.zero_grad(set_to_none=True)
        buffers_before = BufferSnapshot(self._buffers)
        # Parametrized weights (weight normalization) are computed once for the forward pass and
        # the regularizers, which read them again (the same values; one backward through them).
        # Not under torch.compile, which traces the parametrizations itself.
        with parametrize.cached() if cfg.compile_mode is None else contextlib.nullcontext():
            with autocast(self.precision, self.device):
                out = self.train_model(x)
            objective = step_objective(
                out,
                kl_coeff=kl_coeff,
                alpha=self.alpha,
                balance=cfg.kl_balance,
                regularizers=self.regularizers,
                model=self.model,
                progress=progress,
            )
        # Every rank runs backward, even on a non-finite loss, so that DDP's gradient all-reduce
        # stays in step; the skip decision below is the same on every rank.
        self.scaler.scale(objective.loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = self._clip_and_norm()

        scalars = {
            **objective.scalars(),
            "nonfinite": (~torch.isfinite(objective.loss.detach())).float(),
            "stop": torch.tensor(
                float(self.stop_signals.requested is not None), device=objective.loss.device
            ),
            **{f"reg_{n}": v for n, v in zip(self.reg_names, objective.regularizer_losses)},
            **{f"kl_group_{i}": v for i, v in enumerate(objective.kl_per_group.detach().mean(0))},
        }
        totals = all_reduce_scalars(scalars)
        world = self.ctx.world_size
        verdict = self.guard.judge(
            loss_bad=totals["nonfinite"] > 0, grad_norm=grad_norm, nelbo=totals["nelbo"] / world
        )
        if not verdict.skip:
            self.scaler.step(self.optimizer)
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        else:
            buffers_before.restore()
        self.scaler.update()
        with warnings.catch_warnings():
            # A skipped first step makes torch warn that the scheduler stepped before the optimizer.
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()

        nelbo = totals["nelbo"] / world
        metrics = {
            "loss": totals["loss"] / world,
            "nelbo": nelbo,
            "bpd": bits_per_dim(nelbo, self.model.num_dims),
            "recon": totals["recon"] / world,
            "kl": totals["kl"] / world,
            "kl_coeff": kl_coeff,
            "lr": lr,
            "grad_norm": grad_norm,
            "skipped": int(verdict.skip),
        }
        self.stop_requested = totals["stop"] > 0
        for name in self.reg_names:
            metrics[f"reg_{name}"] = totals[f"reg_{name}"] / world
        self.kl_groups = [totals[f"kl_group_{i}"] / world for i in range(objective.kl_per_group.shape[1])]
        return metrics

    def _clip_and_norm(self) -> float:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return 0.0
        if self.config.grad_clip is not None:
            params = [p for p in self.model.parameters() if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm(grads)
        return float(norm)


def _unique_names(names: list[str]) -> list[str]:
    out = []
    for i, name in enumerate(names):
        out.append(name if names.count(name) == 1 else f"{name}_{i}")
    return out
