"""VDVAE's safeguards against a bad step (Child 2021, Sec. 5), for NVAE's recipe.

A step whose loss is non-finite, whose gradient norm is non-finite, or whose gradient norm is
above ``skip_threshold`` is skipped: no parameter update, and the model's buffers (BatchNorm
running statistics) restored to what they were before the step, since a non-finite forward
pass would otherwise poison them for good. After ``max_consecutive_skips`` non-finite steps in
a row the run is over as ``diverged``; with ``diverge_nelbo`` set, so is a run whose negative
ELBO stays above that bound for as many steps in a row (those steps are not skipped: a loss that
explodes but stays finite is measured, not prevented).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Verdict:
    """What the guard decided about one step."""

    loss_bad: bool  # the loss is NaN or infinite (on any rank)
    grad_bad: bool  # the gradient norm is NaN or infinite
    too_large: bool  # the gradient norm is finite but above the threshold

    @property
    def skip(self) -> bool:
        return self.loss_bad or self.grad_bad or self.too_large


class StepGuard:
    """Decides which steps to skip, counts them, and says when the run has diverged."""

    def __init__(
        self, *, skip_threshold: float | None, max_consecutive_skips: int, diverge_nelbo: float | None = None
    ) -> None:
        self.skip_threshold = skip_threshold
        self.max_consecutive_skips = max_consecutive_skips
        self.diverge_nelbo = diverge_nelbo
        self.counters = {
            "skipped_nonfinite": 0,
            "skipped_grad_norm": 0,
            "consecutive_nonfinite": 0,
            "consecutive_exploded": 0,
        }

    def judge(self, *, loss_bad: bool, grad_norm: float, nelbo: float = math.nan) -> Verdict:
        """The verdict on a step with this loss state, gradient norm and negative ELBO; counted
        at once."""
        grad_bad = not math.isfinite(grad_norm)
        too_large = not grad_bad and self.skip_threshold is not None and grad_norm > self.skip_threshold
        verdict = Verdict(loss_bad=loss_bad, grad_bad=grad_bad, too_large=too_large)
        if loss_bad or grad_bad:
            self.counters["skipped_nonfinite"] += 1
            self.counters["consecutive_nonfinite"] += 1
        else:
            self.counters["consecutive_nonfinite"] = 0
        if too_large:
            self.counters["skipped_grad_norm"] += 1
        exploded = self.diverge_nelbo is not None and nelbo > self.diverge_nelbo  # NaN compares False
        self.counters["consecutive_exploded"] = self.counters["consecutive_exploded"] + 1 if exploded else 0
        return verdict

    @property
    def diverged(self) -> bool:
        return self.divergence_reason is not None

    @property
    def divergence_reason(self) -> str | None:
        """Why the run has diverged, or None while it has not."""
        n = self.max_consecutive_skips
        if self.counters["consecutive_nonfinite"] >= n:
            return f"non-finite loss or gradient for {n} steps in a row"
        if self.counters["consecutive_exploded"] >= n:
            return f"negative ELBO above {self.diverge_nelbo:g} nats for {n} steps in a row"
        return None

    @property
    def skipped_steps(self) -> int:
        return self.counters["skipped_nonfinite"] + self.counters["skipped_grad_norm"]


class BufferSnapshot:
    """The model's buffers before a step, to put back if the step is skipped."""

    def __init__(self, buffers: list[torch.Tensor]) -> None:
        self._buffers = buffers
        self._saved = [b.detach().clone() for b in buffers]

    @classmethod
    def of(cls, model: nn.Module) -> BufferSnapshot:
        return cls(list(model.buffers()))

    def restore(self) -> None:
        with torch.no_grad():
            for buffer, saved in zip(self._buffers, self._saved):
                buffer.copy_(saved)
