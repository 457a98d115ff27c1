"""The ``latent_group`` contract as code: :func:`check_latent_group`."""

from __future__ import annotations

import math
from typing import Any

import torch

from genzoo.interfaces import LatentGroup, LatentOutput
from genzoo.plugin.registry import Registry
from genzoo.testing.subject import KeyOrFactory, Subject, describe, draw, isolated, normal, weighted_sum

ENC, DEC, LAT, SIDE, BATCH = 4, 5, 2, 3, 2
NUM_LATENTS = LAT * SIDE * SIDE
MC_SAMPLES = 4000
"""Posterior samples per example for the Monte Carlo KL: its standard error is a few percent of
the KL of a freshly initialized group, so a KL off by a term or a factor fails."""
TEMPERATURES = (1.0, 0.5, 0.25)
ROUNDING = 1e-4 * NUM_LATENTS  # float32 rounding of a sum over the latents of one example


@isolated
def check_latent_group(
    key_or_factory: KeyOrFactory, registry: Registry | None = None, **options: Any
) -> None:
    """Check a latent group against the :class:`genzoo.LatentGroup` contract; raise
    :class:`AssertionError` naming the key, the case and what failed.

    For a top group (``dec_state=None``) and a non-top one, on ``2 x C x 3 x 3`` features:

    - ``forward`` returns a :class:`genzoo.LatentOutput` with the documented shapes, finite,
      with ``kl_per_channel.sum(1) == kl``; gradients reach every parameter, ``z`` is
      reparameterized (its gradient reaches the encoder feature) and a non-top prior reads the
      decoder state; the same seed gives the same ``z``, another seed another ``z``;
    - a KL that does not change with the sample is a closed form: then it is ``>= 0`` (up to
      rounding), does not depend on the rest of the batch, matches the Monte Carlo estimate
      ``mean(log_q - log_p)`` over 4000 posterior samples within five standard errors, and the
      samples average to ``q_mean``. Otherwise it is the single-sample ``log_q - log_p`` and
      its mean over the samples is ``>= 0`` within five standard errors;
    - ``sample`` at temperatures 1, 0.5, 0.25 and 0 gives finite ``(B, latent_chs, H, W)``
      (from ``size`` for the top group, from the decoder state for the others), the same seed
      the same sample, a spread between two draws that shrinks with the temperature and is zero
      at 0;
    - the ``state_dict`` loads strictly into a fresh instance, which then gives the same output.

    :param key_or_factory: a registered latent group key, or a factory not registered yet.
    :param registry: where the key is looked up (default: the process-wide registry).
    :param options: the group's own options (``num_flows`` ...), over the entry's ``example``.
    """
    reserved = ("enc_chs", "dec_chs", "latent_chs", "top")
    subject = Subject(
        "latent_group", key_or_factory, registry, options, check="check_latent_group", reserved=reserved
    )
    for top in (True, False):
        _check_group(subject, top)


def _check_group(subject: Subject, top: bool) -> None:
    case = describe(top=top, enc_chs=ENC, dec_chs=DEC, latent_chs=LAT)

    def build(seed: int) -> LatentGroup:
        return draw(seed, lambda: subject.build(enc_chs=ENC, dec_chs=DEC, latent_chs=LAT, top=top))

    group = build(0)
    for name, value in (("enc_chs", ENC), ("dec_chs", DEC), ("latent_chs", LAT), ("top", top)):
        got = getattr(group, name, None)
        subject.check(got == value, f"group.{name} is {got!r}; expected {value!r}", case)
    enc = normal(BATCH, ENC, SIDE, SIDE, seed=1)
    dec = None if top else normal(BATCH, DEC, SIDE, SIDE, seed=2)

    # shapes, gradients, reparameterization
    enc_g = enc.clone().requires_grad_()
    dec_g = None if dec is None else dec.clone().requires_grad_()
    out = draw(3, lambda: group(enc_g, dec_g))
    _check_output(subject, out, BATCH, case)
    weighted_sum(out.z).backward(retain_graph=True)
    subject.check(
        enc_g.grad is not None and enc_g.grad.abs().sum() > 0,
        "z carries no gradient to the encoder feature (not a reparameterized sample)",
        case,
    )
    out.kl.sum().backward()
    subject.every_parameter_has_a_gradient(group, case)
    if dec_g is not None:
        subject.check(
            dec_g.grad is not None and dec_g.grad.abs().sum() > 0,
            "the KL carries no gradient to the decoder state (the prior does not read it)",
            case,
        )

    with torch.no_grad():
        a, again, b = (draw(seed, lambda: group(enc, dec)) for seed in (5, 5, 6))
        subject.check(torch.equal(a.z, again.z), "the same seed gives another posterior sample", case)
        subject.check(not torch.equal(a.z, b.z), "two seeds give the same posterior sample", case)
        closed_form = torch.allclose(a.kl, b.kl, rtol=1e-6, atol=1e-6)
        _check_kl(subject, group, enc, dec, a, closed_form, case)
        _check_sampling(subject, group, top, case)

        fresh = build(1000)
        subject.round_trip(group, fresh, case)
        restored = draw(5, lambda: fresh(enc, dec))
        subject.check(
            torch.equal(restored.z, a.z) and torch.equal(restored.kl, a.kl),
            "after loading the state_dict, a fresh instance gives another output for the same seed",
            case,
        )


def _check_output(subject: Subject, out: object, batch: int, case: str) -> None:
    if not isinstance(out, LatentOutput):
        subject.fail(f"forward returned a {type(out).__qualname__}; expected a genzoo.LatentOutput", case)
    for name, shape in (
        ("z", (batch, LAT, SIDE, SIDE)),
        ("kl", (batch,)),
        ("kl_per_channel", (batch, LAT)),
        ("log_q", (batch,)),
        ("log_p", (batch,)),
        ("q_mean", (batch, LAT, SIDE, SIDE)),
    ):
        subject.shape(getattr(out, name), shape, f"LatentOutput.{name}", case)
        subject.finite(getattr(out, name), f"LatentOutput.{name}", case)
    subject.close(
        out.kl_per_channel.sum(1),
        out.kl,
        "kl_per_channel.sum(1) differs from kl",
        case,
        rtol=1e-5,
        atol=ROUNDING,
    )


def _check_kl(
    subject: Subject,
    group: LatentGroup,
    enc: torch.Tensor,
    dec: torch.Tensor | None,
    one: LatentOutput,
    closed_form: bool,
    case: str,
) -> None:
    """The reported KL against ``log q - log p`` of the group's own samples."""
    n = MC_SAMPLES
    many = draw(7, lambda: group(enc.repeat(n, 1, 1, 1), None if dec is None else dec.repeat(n, 1, 1, 1)))
    _check_output(subject, many, n * BATCH, case)
    estimates = (many.log_q - many.log_p).reshape(n, BATCH)
    mc, se = estimates.mean(0), estimates.std(0) / math.sqrt(n)
    if closed_form:
        subject.check((one.kl >= -ROUNDING).all(), f"the closed-form KL is negative: {one.kl.tolist()}", case)
        subject.close(
            many.kl.reshape(n, BATCH),
            one.kl.expand(n, BATCH),
            "the closed-form KL of an example changes with the rest of the batch",
            case,
            rtol=1e-5,
            atol=ROUNDING,
        )
        off = (mc - one.kl).abs()
        subject.check(
            (off <= 5 * se + ROUNDING).all(),
            f"the closed-form KL {one.kl.tolist()} disagrees with its Monte Carlo estimate "
            f"mean(log_q - log_p) = {mc.tolist()} (standard error {se.tolist()}, {n} samples)",
            case,
        )
        z = many.z.reshape(n, BATCH, LAT, SIDE, SIDE)
        z_se = z.std(0) / math.sqrt(n)
        subject.check(
            ((z.mean(0) - one.q_mean).abs() <= 5 * z_se + 1e-4).all(),
            "the posterior samples z do not average to q_mean",
            case,
        )
    else:
        subject.close(
            one.kl,
            one.log_q - one.log_p,
            "the KL changes with the sample but is not the single-sample estimate log_q - log_p",
            case,
            rtol=1e-5,
            atol=ROUNDING,
        )
        subject.check(
            (mc >= -5 * se - ROUNDING).all(),
            f"the mean of the KL estimates log_q - log_p over {n} samples is negative: {mc.tolist()} "
            f"(standard error {se.tolist()})",
            case,
        )


def _check_sampling(subject: Subject, group: LatentGroup, top: bool, case: str) -> None:
    batch = 8
    dec = None if top else normal(batch, DEC, SIDE, SIDE, seed=8, scale=0.5)
    expected = (batch, LAT, SIDE, SIDE)

    def sample(temperature: float, seed: int) -> torch.Tensor:
        # as a hierarchy calls it: the top group with a size, the others with the decoder state
        size = (batch, SIDE, SIDE) if top else None
        z = draw(seed, lambda: group.sample(dec, temperature=temperature, size=size))
        at = f"{case}, temperature={temperature}"
        subject.shape(z, expected, "the prior sample", at)
        subject.finite(z, "the prior sample", at)
        return z

    spread = {}
    for t in (*TEMPERATURES, 0.0):
        first = sample(t, 10)
        spread[t] = (first - sample(t, 11)).abs().mean().item()
        subject.check(
            torch.equal(first, sample(t, 10)), f"at temperature {t} the same seed gives another sample", case
        )
    values = [spread[t] for t in TEMPERATURES]
    subject.check(
        all(hi > lo for hi, lo in zip(values, values[1:])) and values[-1] > 0,
        f"the spread between two prior samples does not shrink with the temperature: "
        f"{dict(zip(TEMPERATURES, values))}",
        case,
    )
    subject.check(
        spread[0.0] == 0, "at temperature 0 two prior samples differ (expected the prior mean)", case
    )
