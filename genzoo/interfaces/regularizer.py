"""The ``regularizer`` kind: a loss term over the whole model."""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genzoo.errors import ConfigError
from genzoo.io.validation import check_float


@dataclass(frozen=True)
class TrainProgress:
    """Where training stands, for schedules: ``kl_coeff`` is the KL warm-up coefficient in
    ``[0, 1]`` (1 once warm-up is over)."""

    step: int
    total_steps: int
    kl_coeff: float = 1.0


class Regularizer(abc.ABC):
    """A penalty over a model's weights, with its own coefficient schedule and state.

    Constructed with keywords ``coeff`` (the coefficient after warm-up), ``anneal`` and
    ``coeff_init`` (when ``anneal`` is on, the coefficient moves in log space from
    ``coeff_init`` to ``coeff`` as the KL warm-up coefficient goes from 0 to 1, as NVAE's
    ``--weight_decay_norm_anneal`` does), plus its own options.

    Contract:

    - ``penalty(model)`` returns the unweighted penalty, a differentiable scalar tensor on the
      model's device.
    - ``coefficient(progress)`` returns the weight for this step; ``loss(model, progress)`` is
      their product, and is what the trainer adds to the loss.
    - ``state_dict()`` / ``load_state_dict()`` hold everything needed to continue exactly after
      a resume (e.g. power-iteration vectors); the trainer puts them into the checkpoint. Values
      must be tensors, numbers, strings, or lists/dicts of them (loadable with
      ``torch.load(weights_only=True)``).
    """

    def __init__(self, *, coeff: float, anneal: bool = False, coeff_init: float = 10.0) -> None:
        check_float("coeff", coeff, 0.0)
        if anneal and (coeff <= 0 or coeff_init <= 0):
            raise ConfigError(
                f"anneal=True needs coeff > 0 and coeff_init > 0 (annealing is in log space); "
                f"got coeff={coeff!r}, coeff_init={coeff_init!r}"
            )
        self.coeff = float(coeff)
        self.anneal = bool(anneal)
        self.coeff_init = float(coeff_init)

    @abc.abstractmethod
    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The unweighted penalty, a differentiable scalar."""

    def coefficient(self, progress: TrainProgress) -> float:
        """``coeff``, or during KL warm-up its log-space interpolation from ``coeff_init``."""
        if not self.anneal:
            return self.coeff
        t = min(max(progress.kl_coeff, 0.0), 1.0)
        return math.exp((1.0 - t) * math.log(self.coeff_init) + t * math.log(self.coeff))

    def loss(self, model: nn.Module, progress: TrainProgress) -> torch.Tensor:
        """``coefficient(progress) * penalty(model)``."""
        return self.coefficient(progress) * self.penalty(model)

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint; stateless regularizers return ``{}``."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ConfigError(f"{type(self).__name__} is stateless but got state keys {sorted(state)}")
