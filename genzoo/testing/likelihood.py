"""The ``likelihood`` contract as code: :func:`check_likelihood`."""

from __future__ import annotations

import itertools
from typing import Any

import torch

from genzoo.errors import ConfigError
from genzoo.interfaces import OutputLikelihood
from genzoo.plugin.registry import Registry
from genzoo.testing.subject import KeyOrFactory, Subject, describe, draw, isolated, normal

CONFIGS = ((1, 1), (3, 1), (1, 3), (3, 2), (1, 8), (3, 8))
"""(image_chs, num_bits) tried; a likelihood refuses those it does not model with a ValueError."""
MAX_VALUES = 4096
"""Pixels with at most this many values (``2 ** (num_bits * image_chs)``) are enumerated."""
HEIGHT, WIDTH = 2, 3
TEMPERATURES = (1.0, 0.5, 0.1)


@isolated
def check_likelihood(key_or_factory: KeyOrFactory, registry: Registry | None = None, **options: Any) -> None:
    """Check an output likelihood against the :class:`genzoo.OutputLikelihood` contract; raise
    :class:`AssertionError` naming the key, the case and what failed.

    It is built for each ``(image_chs, num_bits)`` of :data:`CONFIGS`; a configuration refused
    with a ``ValueError`` (a Bernoulli for 8 bits) is skipped, but at least one small enough to
    enumerate must build. For each, with random parameters:

    - ``param_chs`` is a positive integer; ``log_prob`` of images on the bit grid is finite,
      ``(B,)``, ``<= 0`` (probabilities of discrete values), differentiable, and the sum of
      the log-probabilities of the image's pixels taken one at a time;
    - every value of a pixel enumerated (all channels jointly, where there are at most
      :data:`MAX_VALUES`): the probabilities sum to one, for each pixel of a ``2 x 3`` image;
    - ``sample`` at temperatures 1, 0.5 and 0.1 lies on the grid ``k / (2**num_bits - 1)``,
      the same seed gives the same sample, and the spread between two draws shrinks with the
      temperature; ``mean`` is deterministic, finite and in ``[0, 1]``.

    :param key_or_factory: a registered likelihood key, or a factory not registered yet.
    :param registry: where the key is looked up (default: the process-wide registry).
    :param options: the likelihood's own options (``num_mixtures`` ...), over the ``example``.
    """
    reserved = ("image_chs", "num_bits")
    subject = Subject(
        "likelihood", key_or_factory, registry, options, check="check_likelihood", reserved=reserved
    )
    enumerated, refused = 0, []
    for seed, (image_chs, num_bits) in enumerate(CONFIGS):
        try:
            lik = draw(seed, lambda c=image_chs, b=num_bits: subject.build(image_chs=c, num_bits=b))
        except (ValueError, ConfigError) as exc:
            refused.append(f"{describe(image_chs=image_chs, num_bits=num_bits)}: {exc}")
            continue
        enumerated += _check_config(subject, lik, image_chs, num_bits, seed)
    subject.check(
        enumerated,
        "no configuration small enough to enumerate every pixel value builds; refused: " + "; ".join(refused),
    )


def _grid(num_bits: int, *shape: int, seed: int) -> torch.Tensor:
    top = 2**num_bits - 1
    return torch.randint(0, top + 1, shape, generator=torch.Generator().manual_seed(seed)) / top


def _check_config(subject: Subject, lik: OutputLikelihood, image_chs: int, num_bits: int, seed: int) -> int:
    """Check one configuration; 1 if its pixel values were enumerated."""
    case = describe(image_chs=image_chs, num_bits=num_bits)
    for name, value in (("image_chs", image_chs), ("num_bits", num_bits)):
        got = getattr(lik, name, None)
        subject.check(got == value, f"likelihood.{name} is {got!r}; expected {value!r}", case)
    chs = lik.param_chs
    subject.check(
        isinstance(chs, int) and chs > 0, f"param_chs is {chs!r}; expected a positive integer", case
    )

    # log_prob: shape, sign, gradient, and the sum over pixels
    # N(0, 2^2): sharp and broad components alike (for a logistic mixture, scales e^-4 to e^4)
    params = normal(2, chs, HEIGHT, WIDTH, seed=seed, scale=2.0).requires_grad_()
    x = _grid(num_bits, 2, image_chs, HEIGHT, WIDTH, seed=seed)
    log_p = lik.log_prob(params, x)
    subject.shape(log_p, (2,), "log_prob", case)
    subject.finite(log_p, "log_prob", case)
    subject.check((log_p <= 1e-4).all(), f"log_prob of a discrete image is positive: {log_p.tolist()}", case)
    log_p.sum().backward()
    subject.finite(params.grad, "the gradient of log_prob", case)
    subject.check(params.grad.abs().sum() > 0, "log_prob has a zero gradient for its parameters", case)
    with torch.no_grad():
        by_pixel = sum(
            lik.log_prob(params[:, :, i : i + 1, j : j + 1], x[:, :, i : i + 1, j : j + 1])
            for i in range(HEIGHT)
            for j in range(WIDTH)
        )
        subject.close(
            log_p.detach(),
            by_pixel,
            "log_prob is not the sum of its pixels' log-probabilities",
            case,
            rtol=1e-4,
            atol=1e-4,
        )
        enumerated = _check_normalization(subject, lik, params.detach()[:1], image_chs, num_bits, case)
        _check_sampling(subject, lik, num_bits, seed, case)
    return enumerated


def _check_normalization(
    subject: Subject, lik: OutputLikelihood, params: torch.Tensor, image_chs: int, num_bits: int, case: str
) -> int:
    levels = 2**num_bits
    if levels**image_chs > MAX_VALUES:
        return 0
    values = torch.tensor(list(itertools.product(range(levels), repeat=image_chs)), dtype=torch.float32)
    values = (values / (levels - 1)).reshape(-1, image_chs, 1, 1)  # every value of one pixel
    n, pixels = len(values), HEIGHT * WIDTH
    per_pixel = params.permute(2, 3, 0, 1).reshape(pixels, -1, 1, 1)  # each pixel's parameters
    log_p = lik.log_prob(per_pixel.repeat_interleave(n, 0), values.repeat(pixels, 1, 1, 1))
    totals = log_p.double().exp().reshape(pixels, n).sum(1)
    subject.check(
        ((totals - 1).abs() <= 1e-4).all(),
        f"the probabilities of all {n} values of a pixel sum to {totals.tolist()} (one per pixel); expected 1",
        case,
    )
    return 1


def _check_sampling(subject: Subject, lik: OutputLikelihood, num_bits: int, seed: int, case: str) -> None:
    params = normal(4, lik.param_chs, 8, 8, seed=seed + 100)
    shape = (4, lik.image_chs, 8, 8)
    top = 2**num_bits - 1
    spread = []
    for t in TEMPERATURES:
        at = f"{case}, temperature={t}"
        first = draw(1, lambda t=t: lik.sample(params, t))
        subject.shape(first, shape, "the sample", at)
        subject.check(
            torch.isfinite(first).all() and first.min() >= 0 and first.max() <= 1,
            "the sample leaves [0, 1]",
            at,
        )
        subject.check(
            ((first * top - (first * top).round()).abs() <= 1e-3).all(),
            f"the sample is not on the grid k / {top}",
            at,
        )
        subject.check(
            torch.equal(first, draw(1, lambda t=t: lik.sample(params, t))),
            "the same seed gives another sample",
            at,
        )
        spread.append((first - draw(2, lambda t=t: lik.sample(params, t))).abs().mean().item())
    subject.check(
        all(hi > lo for hi, lo in zip(spread, spread[1:])),
        f"the spread between two samples does not shrink with the temperature: {dict(zip(TEMPERATURES, spread))}",
        case,
    )
    mean = lik.mean(params)
    subject.shape(mean, shape, "mean(params)", case)
    subject.check(
        torch.isfinite(mean).all() and mean.min() >= 0 and mean.max() <= 1, "mean(params) leaves [0, 1]", case
    )
    subject.check(torch.equal(mean, lik.mean(params)), "mean(params) is not deterministic", case)
