"""The ``regularizer`` contract as code: :func:`check_regularizer`."""

from __future__ import annotations

import io
import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from genzoo.interfaces import Regularizer, TrainProgress
from genzoo.plugin.registry import Registry
from genzoo.testing.subject import KeyOrFactory, Subject, draw, isolated


def small_model() -> nn.Module:
    """The layers regularizers look at: convs (plain, weight-normalized, depthwise, transposed),
    BatchNorm with non-trivial scales, and a Linear."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.SiLU(),
        weight_norm(nn.Conv2d(8, 8, 1)),
        nn.Conv2d(8, 8, 5, padding=2, groups=8),
        nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
    return model


@isolated
def check_regularizer(key_or_factory: KeyOrFactory, registry: Registry | None = None, **options: Any) -> None:
    """Check a regularizer against the :class:`genzoo.Regularizer` contract; raise
    :class:`AssertionError` naming the key and what failed.

    On :func:`small_model`:

    - ``penalty(model)`` is a finite scalar tensor; it carries finite gradients to the model's
      weights (at least one non-zero), or, if it carries none, it is zero;
    - ``coefficient`` is finite and ``>= 0`` through the KL warm-up, and ``loss`` is finite;
    - after a few steps, the ``state_dict`` goes through ``torch.save`` and
      ``torch.load(weights_only=True)`` as a checkpoint does, loads into a fresh instance (built
      with the same options), and the restored regularizer gives exactly the original's loss at
      the next two steps.

    :param key_or_factory: a registered regularizer key, or a factory not registered yet.
    :param registry: where the key is looked up (default: the process-wide registry).
    :param options: the regularizer's options (``coeff`` ...), over the entry's ``example``.
    """
    subject = Subject("regularizer", key_or_factory, registry, options, check="check_regularizer")
    reg: Regularizer = draw(0, subject.build)
    model = draw(1, small_model)

    penalty = reg.penalty(model)
    if not isinstance(penalty, torch.Tensor) or penalty.shape != () or not penalty.is_floating_point():
        subject.fail(f"penalty(model) returned {penalty!r}; expected a scalar floating-point tensor")
    subject.finite(penalty, "penalty(model)")
    if penalty.requires_grad:
        penalty.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        subject.check(grads, "penalty(model) requires grad, but no gradient reaches the model's parameters")
        subject.check(all(torch.isfinite(g).all() for g in grads), "the penalty's gradients are not finite")
        subject.check(any(g.abs().sum() > 0 for g in grads), "the penalty's gradients are all zero")
    else:
        subject.check(
            penalty.item() == 0,
            f"penalty(model) = {penalty.item()} carries no gradient to the weights, so it cannot be minimized",
        )
    for kl_coeff in (0.0, 0.5, 1.0):
        coeff = reg.coefficient(TrainProgress(step=1, total_steps=10, kl_coeff=kl_coeff))
        subject.check(
            isinstance(coeff, (int, float)) and math.isfinite(coeff) and coeff >= 0,
            f"coefficient at kl_coeff={kl_coeff} is {coeff!r}; expected a finite number >= 0",
        )
    subject.finite(reg.loss(model, TrainProgress(step=1, total_steps=10)), "loss(model, progress)")

    # a resume: the state after a few steps, through a checkpoint file, into a fresh instance
    model.zero_grad(set_to_none=True)
    for step in (2, 3):
        reg.loss(model, TrainProgress(step=step, total_steps=10))
    buffer = io.BytesIO()
    torch.save(reg.state_dict(), buffer)
    buffer.seek(0)
    try:
        state = torch.load(buffer, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        subject.fail(
            f"state_dict() does not load with torch.load(weights_only=True): {type(exc).__name__}: {exc}"
        )
    restored: Regularizer = draw(1000, subject.build)
    try:
        restored.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001
        subject.fail(f"a fresh instance does not load the saved state_dict: {type(exc).__name__}: {exc}")
    for step in (4, 5):
        progress = TrainProgress(step=step, total_steps=10, kl_coeff=0.5)
        with torch.no_grad():
            expected, got = reg.loss(model, progress), restored.loss(model, progress)
        if not torch.equal(torch.as_tensor(got), torch.as_tensor(expected)):
            subject.fail(
                f"after the state_dict round trip the loss at step {step} is {float(got)}; "
                f"the original gives {float(expected)}"
            )
