"""Spectral regularization (Vahdat & Kautz 2020, Sec. 3.2 "Spectral Regularization"; official
``model.py``, ``spectral_norm_parallel``).

NVAE bounds the Lipschitz constant of its cells by penalizing, for every convolution, the largest
singular value ``sigma_max`` of the weight reshaped to ``(C_out, C_in / groups * kh * kw)`` (for
a weight-normalized convolution, the normalized weight; with :mod:`.weight_norm` that is just
``conv.weight``). ``sigma_max`` is estimated by power iteration with persistent left/right
vectors ``u`` and ``v``: a few iterations per step (4 by default) continue from the previous
step's vectors, and 10x as many (40) warm them up the first time a weight shape is seen.
Weights of the same shape are stacked and iterated as one batch. The estimate is
``sigma = u^T W v`` with ``u`` and ``v`` held constant, so the gradient is ``u v^T`` and flows
only into ``W`` (and through it into weight norm's ``log g`` and direction).

The penalty (option ``penalty``):

- ``"sum"`` (**default**): ``sum sigma_max``, the paper's published method and what the official
  code computes.
- ``"squared_excess"``: ``sum (sigma_max - 1)^2``, as the project's seed text writes it; it pulls
  every ``sigma_max`` towards 1 rather than towards 0.

Coefficient: ``coeff`` defaults to ``1e-2``, NVAE's ``--weight_decay_norm`` for CIFAR-10 (and
MNIST, ImageNet 32, CelebA HQ; CelebA 64 and FFHQ use ``1e-1``). ``anneal`` (log-space
interpolation from ``coeff_init`` to ``coeff`` during KL warm-up, official
``--weight_decay_norm_anneal``) defaults to off, as in the official CIFAR-10 and MNIST commands;
``coeff_init`` defaults to 10, the official ``--weight_decay_norm_init`` default (the README's
annealed runs pass 1.0).

Unlike the official code, which keeps ``u`` and ``v`` in dictionaries that are not checkpointed,
they are in :meth:`SpectralRegularizer.state_dict`, so a resumed run continues exactly. Initial
vectors come from a generator seeded by ``seed`` and the weight shape, so they do not consume
the global random stream (which would make an ablation change the training noise) and do not
depend on the order in which shapes first appear.
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.interfaces import Regularizer
from genzoo.io.validation import check_choice, check_int, invalid, is_int
from genzoo.plugin.registry import component

PENALTIES = ("sum", "squared_excess")

NVAE_COEFF = 1e-2  # official README, CIFAR-10 command: --weight_decay_norm 1e-2
NVAE_COEFF_INIT = 10.0  # official train.py default of --weight_decay_norm_init
NORMALIZE_EPS = 1e-3  # F.normalize eps of the official power iteration


def _model_device(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _without_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Leave an enclosing autocast region (if any) for ``device``'s type."""
    try:
        enabled = torch.is_autocast_enabled(device.type)
    except RuntimeError:  # a device type autocast does not know (e.g. "meta")
        enabled = False
    return torch.autocast(device.type, enabled=False) if enabled else contextlib.nullcontext()


def _shape_key(rows: int, cols: int) -> str:
    return f"{rows}x{cols}"


@component(
    "regularizer",
    "nvae.spectral_regularizer",
    description="NVAE spectral regularization: sum of conv weights' largest singular values",
)
class SpectralRegularizer(Regularizer):
    """Sum over convolutions of the largest singular value of the reshaped weight (NVAE Sec. 3.2).

    :param coeff: the coefficient ``lambda`` after warm-up (NVAE CIFAR-10: ``1e-2``).
    :param anneal: interpolate the coefficient in log space from ``coeff_init`` to ``coeff``
        during KL warm-up (official ``--weight_decay_norm_anneal``).
    :param coeff_init: the coefficient at the start of KL warm-up when ``anneal`` is on.
    :param penalty: ``"sum"`` (``sum sigma_max``, the paper and official code) or
        ``"squared_excess"`` (``sum (sigma_max - 1)^2``, the seed text).
    :param power_iterations: power-iteration steps per call for a known weight shape.
    :param first_iterations: power-iteration steps the first time a weight shape is seen.
    :param include_linear: also penalize ``nn.Linear`` weights (the official code does not: its
        SE layers are left out).
    :param seed: seeds the initial ``u``, ``v`` (together with the weight shape).
    """

    def __init__(
        self,
        *,
        coeff: float = NVAE_COEFF,
        anneal: bool = False,
        coeff_init: float = NVAE_COEFF_INIT,
        penalty: str = "sum",
        power_iterations: int = 4,
        first_iterations: int = 40,
        include_linear: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(coeff=coeff, anneal=anneal, coeff_init=coeff_init)
        check_choice("penalty", penalty, PENALTIES)
        for name, value in (("power_iterations", power_iterations), ("first_iterations", first_iterations)):
            check_int(name, value, 1)
        if not is_int(seed):
            raise invalid("seed", seed, "an integer")
        self.penalty_kind = penalty
        self.power_iterations = power_iterations
        self.first_iterations = first_iterations
        self.include_linear = bool(include_linear)
        self.seed = seed
        self._u: dict[str, torch.Tensor] = {}
        self._v: dict[str, torch.Tensor] = {}
        self._last: dict[str, tuple[list[str], torch.Tensor]] = {}

    # -- which weights -----------------------------------------------------------------------
    def _counts(self, module: nn.Module) -> bool:
        return isinstance(module, nn.Conv2d) or (self.include_linear and isinstance(module, nn.Linear))

    def grouped_weights(self, model: nn.Module) -> dict[str, tuple[list[str], list[torch.Tensor]]]:
        """The penalized weights as ``(C_out, -1)`` matrices, grouped by shape: ``{"64x576":
        (module names, matrices)}``, both in ``model.named_modules()`` order."""
        groups: dict[str, tuple[list[str], list[torch.Tensor]]] = {}
        for name, module in model.named_modules():
            if not self._counts(module):
                continue
            matrix = module.weight.flatten(1)  # (C_out, C_in / groups * kh * kw)
            names, matrices = groups.setdefault(_shape_key(*matrix.shape), ([], []))
            names.append(name)
            matrices.append(matrix)
        return groups

    # -- power iteration ---------------------------------------------------------------------
    def _initial_vectors(self, key: str, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, rows, cols = weights.shape
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + zlib.crc32(key.encode())) % 2**63)
        u = torch.randn(n, rows, generator=gen).to(weights.device, weights.dtype)
        v = torch.randn(n, cols, generator=gen).to(weights.device, weights.dtype)
        return F.normalize(u, dim=1, eps=NORMALIZE_EPS), F.normalize(v, dim=1, eps=NORMALIZE_EPS)

    def _stored_vectors(self, key: str, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, rows, cols = weights.shape
        u, v = self._u[key], self._v[key]
        if u.shape != (n, rows) or v.shape != (n, cols):
            raise ValueError(
                f"SpectralRegularizer state for weight shape {key} holds u {tuple(u.shape)} and "
                f"v {tuple(v.shape)}, but the model has {n} weight(s) of that shape (expected u "
                f"{(n, rows)}, v {(n, cols)}); the state belongs to another model"
            )
        # A loaded state may sit on another device (e.g. a checkpoint read with map_location="cpu").
        return u.to(weights.device, weights.dtype), v.to(weights.device, weights.dtype)

    @torch.no_grad()
    def _iterate(self, key: str, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if key in self._u:
            u, v = self._stored_vectors(key, weights)
            steps = self.power_iterations
        else:
            u, v = self._initial_vectors(key, weights)
            steps = self.first_iterations
        # Rows of one: v^T = normalize(u^T W), u^T = normalize(v^T W^T), as batched products.
        u, transposed = u.unsqueeze(1), weights.transpose(1, 2)
        for _ in range(steps):
            v = F.normalize(torch.bmm(u, weights), dim=2, eps=NORMALIZE_EPS)
            u = F.normalize(torch.bmm(v, transposed), dim=2, eps=NORMALIZE_EPS)
        self._u[key], self._v[key] = u.squeeze(1), v.squeeze(1)
        return self._u[key], self._v[key]

    # -- the penalty -------------------------------------------------------------------------
    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``sum sigma_max`` (or ``sum (sigma_max - 1)^2``) over the penalized weights, after
        ``power_iterations`` (``first_iterations`` for a new shape) steps of power iteration.

        Differentiable with respect to the weights only; a scalar on the model's device (zero if
        the model has no penalized weight).
        """
        self._last = {}
        terms = []
        for key, (names, matrices) in self.grouped_weights(model).items():
            weights = torch.stack(matrices)
            # Power iteration in the weights' own precision even inside an autocast region.
            with _without_autocast(weights.device):
                u, v = self._iterate(key, weights.detach())
                sigma = (torch.bmm(u.unsqueeze(1), weights).squeeze(1) * v).sum(1)  # u^T W v
            self._last[key] = (names, sigma.detach())
            terms.append(sigma.sum() if self.penalty_kind == "sum" else (sigma - 1.0).square().sum())
        if not terms:
            return torch.zeros((), device=_model_device(model))
        return torch.stack(terms).sum()

    def last_estimates(self) -> dict[str, float]:
        """``{module name: sigma_max}`` from the last :meth:`penalty` call, for logging."""
        return {
            name: float(s) for names, sigma in self._last.values() for name, s in zip(names, sigma.tolist())
        }

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"u/<rows>x<cols>": (n, rows), "v/<rows>x<cols>": (n, cols)}`` for every weight
        shape seen so far, on the device of the weights."""
        state: dict[str, Any] = {}
        for key in self._u:
            state[f"u/{key}"] = self._u[key]
            state[f"v/{key}"] = self._v[key]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the power-iteration vectors by those of :meth:`state_dict`; they move to the
        weights' device at the next :meth:`penalty` call."""
        u: dict[str, torch.Tensor] = {}
        v: dict[str, torch.Tensor] = {}
        for name, value in state.items():
            kind, _, key = str(name).partition("/")
            if kind not in ("u", "v") or not key or not isinstance(value, torch.Tensor) or value.dim() != 2:
                raise ValueError(
                    f"SpectralRegularizer state entry {name!r}: expected 'u/<rows>x<cols>' or "
                    "'v/<rows>x<cols>' holding a 2-d tensor"
                )
            (u if kind == "u" else v)[key] = value.detach().clone()
        if u.keys() != v.keys():
            raise ValueError(
                f"SpectralRegularizer state has u for shapes {sorted(u)} but v for shapes {sorted(v)}; "
                "expected both for every shape"
            )
        self._u, self._v = u, v
