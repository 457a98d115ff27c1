"""The ``hierarchy`` contract as code: :func:`check_hierarchy`."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from genzoo.interfaces import GroupInfo, Hierarchy, HierarchyOutput, OutputLikelihood
from genzoo.interfaces.hierarchy import LatentStep
from genzoo.plugin.registry import Registry
from genzoo.testing.subject import KeyOrFactory, Subject, describe, draw, isolated

IMAGE_SHAPES = ((3, 16, 16), (1, 16, 16))
"""Colour (8-bit by default) and grey (binary by default) images, unless the options or the
entry's ``example`` give an ``image_shape``."""
BATCH = 2


@isolated
def check_hierarchy(key_or_factory: KeyOrFactory, registry: Registry | None = None, **options: Any) -> None:
    """Check a hierarchy against the :class:`genzoo.Hierarchy` contract; raise
    :class:`AssertionError` naming the key, the case and what failed.

    Built with ``image_shape`` 3x16x16 and 1x16x16 (or the one the options or the entry's
    ``example`` give), on a batch of two images on the likelihood's bit grid:

    - ``image_shape``, ``num_dims == C * H * W``, ``likelihood`` (an output likelihood of
      ``C`` channels); ``groups`` top first, indexed from 0, scales from 0 and not decreasing,
      ``groups_in_scale`` the number of groups of that scale;
    - ``forward`` in training mode: ``log_px`` finite, ``(B,)`` and ``<= 0``; a latent per group
      with ``z`` of the group's ``(latent_chs, height, width)`` and a finite ``(B,)`` KL;
      ``params`` ``(B, param_chs, H, W)``; ``elbo`` and ``log_weight`` finite ``(B,)``; the
      backward pass of ``-elbo`` reaches every parameter with a finite gradient;
    - in eval mode: ``sample_params`` ``(n, param_chs, H, W)``, finite, the same for the same
      seed; ``sample`` and ``reconstruct`` give ``(n, C, H, W)`` in ``[0, 1]``;
    - ``parameter_counts()``, when the model has it, sums to the number of parameters;
    - where the model implements :meth:`genzoo.Hierarchy.traverse` (optional: a hierarchy
      without it is not failed, it only lacks the latent API), in eval mode: each step has
      the group's :class:`GroupInfo`, no decoder state for the top group and a prior and a
      posterior of the group's shape; posterior draws everywhere give ``forward``'s
      parameters for the same seed; ``decode(encode(x).eps)`` gives them again; for the same
      seed ``decode(num_samples=n, temperature=t)`` gives ``sample_params(n, t)`` (a
      ``sample_params`` that ignores the temperature of any group, NVAE's PR #55, fails);
      ``reconstruct(x, keep_groups=0)`` gives images in ``[0, 1]``;
    - the ``state_dict`` loads strictly into a fresh instance, which then gives the same ELBO.

    :param key_or_factory: a registered hierarchy key, or a factory not registered yet.
    :param registry: where the key and the model's component keys are looked up (default: the
        process-wide registry).
    :param options: the model's options (``num_channels``, component keys ...), over the
        entry's ``example`` (small models: the defaults are often the paper's).
    """
    subject = Subject("hierarchy", key_or_factory, registry, options, check="check_hierarchy")
    if "image_shape" in subject.options:
        _check_model(subject, {})
    else:
        for shape in IMAGE_SHAPES:
            _check_model(subject, {"image_shape": shape})


def _check_model(subject: Subject, keywords: dict[str, Any]) -> None:
    case = describe(**keywords)
    model: Hierarchy = draw(0, lambda: subject.build(**keywords))
    shape = tuple(keywords.get("image_shape", subject.options.get("image_shape")))
    subject.check(
        tuple(model.image_shape) == shape, f"model.image_shape is {model.image_shape}; expected {shape}", case
    )
    c, h, w = shape
    subject.check(model.num_dims == c * h * w, f"num_dims is {model.num_dims}; expected {c * h * w}", case)
    lik = model.likelihood
    if not isinstance(lik, OutputLikelihood):
        subject.fail(
            f"model.likelihood is a {type(lik).__qualname__}; expected a genzoo.OutputLikelihood", case
        )
    subject.check(lik.image_chs == c, f"the likelihood models {lik.image_chs} channels; expected {c}", case)
    groups = list(model.groups)
    _check_groups(subject, groups, case)

    top = 2**lik.num_bits - 1
    x = torch.randint(0, top + 1, (BATCH, *shape), generator=torch.Generator().manual_seed(1)) / top
    model.train()
    out = draw(2, lambda: model(x))
    if not isinstance(out, HierarchyOutput):
        subject.fail(f"forward returned a {type(out).__qualname__}; expected a genzoo.HierarchyOutput", case)
    subject.shape(out.log_px, (BATCH,), "log_px", case)
    subject.finite(out.log_px, "log_px", case)
    subject.check(
        (out.log_px <= 1e-3).all(), f"log_px of discrete images is positive: {out.log_px.tolist()}", case
    )
    subject.check(
        len(out.latents) == len(groups),
        f"forward returned {len(out.latents)} latents for {len(groups)} groups",
        case,
    )
    for info, latent in zip(groups, out.latents):
        where = f"the latent of group {info.index}"
        subject.shape(latent.z, (BATCH, info.latent_chs, info.height, info.width), f"{where}: z", case)
        subject.shape(latent.kl, (BATCH,), f"{where}: kl", case)
        subject.finite(latent.kl, f"{where}: kl", case)
    subject.shape(out.params, (BATCH, lik.param_chs, h, w), "HierarchyOutput.params", case)
    for name in ("elbo", "log_weight"):
        subject.shape(getattr(out, name), (BATCH,), name, case)
        subject.finite(getattr(out, name), name, case)
    (-out.elbo.mean()).backward()
    subject.every_parameter_has_a_gradient(model, case)

    model.eval()
    with torch.no_grad():
        for t in (1.0, 0.6):
            params = draw(3, lambda t=t: model.sample_params(3, temperature=t))
            at = f"{case}, temperature={t}" if case else f"temperature={t}"
            subject.shape(params, (3, lik.param_chs, h, w), "sample_params(3)", at)
            subject.finite(params, "sample_params(3)", at)
            again = draw(3, lambda t=t: model.sample_params(3, temperature=t))
            subject.check(
                torch.equal(params, again), "sample_params gives other values for the same seed", at
            )
        for what, images, n in (
            ("sample(3)", draw(4, lambda: model.sample(3, temperature=0.6)), 3),
            ("reconstruct(x)", draw(4, lambda: model.reconstruct(x)), BATCH),
        ):
            subject.shape(images, (n, c, h, w), what, case)
            subject.check(
                torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1,
                f"{what} leaves [0, 1]",
                case,
            )
        _check_parameter_counts(subject, model, case)
        if type(model).traverse is not Hierarchy.traverse:
            _check_latent_api(subject, model, x, case)

        fresh = draw(1000, lambda: subject.build(**keywords))
        subject.round_trip(model, fresh, case)
        fresh.eval()
        expected, got = draw(5, lambda: model(x).elbo), draw(5, lambda: fresh(x).elbo)
        subject.check(
            torch.equal(got, expected),
            "after loading the state_dict, a fresh instance gives another ELBO for the same seed",
            case,
        )


def _check_groups(subject: Subject, groups: list[GroupInfo], case: str) -> None:
    subject.check(groups, "model.groups is empty", case)
    for i, info in enumerate(groups):
        if not isinstance(info, GroupInfo):
            subject.fail(f"groups[{i}] is a {type(info).__qualname__}; expected a genzoo.GroupInfo", case)
        subject.check(info.index == i, f"groups[{i}].index is {info.index}; expected {i} (top first)", case)
    scales = [info.scale for info in groups]
    subject.check(
        scales[0] == 0 and all(a <= b for a, b in zip(scales, scales[1:])),
        f"group scales {scales}; expected 0 for the top group and no decrease towards the bottom",
        case,
    )
    counts = Counter(scales)
    wrong = [info.index for info in groups if info.groups_in_scale != counts[info.scale]]
    subject.check(
        not wrong, f"groups {wrong} have a groups_in_scale other than their scale's number of groups", case
    )


def _check_latent_api(subject: Subject, model: Hierarchy, x: torch.Tensor, case: str) -> None:
    """The traverse contract (see :class:`genzoo.Hierarchy`), in eval mode without gradients."""
    groups = list(model.groups)
    steps: list[LatentStep] = []

    def posterior(step: LatentStep) -> torch.Tensor:
        steps.append(step)
        return step.posterior().z

    params = draw(6, lambda: model.traverse(posterior, x=x))
    subject.check(
        [s.info for s in steps] == groups,
        f"traverse asked for groups {[s.info.index for s in steps]}; expected each of model.groups in order",
        case,
    )
    for step in steps:
        where = f"traverse's step for group {step.index}"
        batch, chs, h, w = BATCH, step.info.latent_chs, step.info.height, step.info.width
        subject.check(
            (step.dec_state is None) == (step.index == 0),
            f"{where}: dec_state is {'None' if step.dec_state is None else 'a tensor'}; expected None "
            "for the top group only",
            case,
        )
        prior = step.prior()
        subject.shape(prior.mean, (batch, chs, h, w), f"{where}: prior mean", case)
        subject.shape(prior.stddev, (batch, chs, h, w), f"{where}: prior stddev", case)
        subject.check((prior.stddev > 0).all(), f"{where}: the prior's stddev is not positive", case)
        subject.shape(step.posterior().z, (batch, chs, h, w), f"{where}: posterior z", case)
    forward = draw(6, lambda: model(x).params)
    subject.check(
        torch.equal(params, forward),
        "traverse with every group's posterior draw gives other parameters than forward for the same seed",
        case,
    )
    encoding = draw(6, lambda: model.encode(x))
    subject.close(
        model.decode(encoding.eps),
        forward,
        "decode(encode(x).eps) does not give forward's parameters back",
        case,
        rtol=1e-4,
        atol=1e-4,
    )
    subject.close(
        draw(7, lambda: model.decode(num_samples=3, temperature=0.6)),
        draw(7, lambda: model.sample_params(3, temperature=0.6)),
        "decode(num_samples=3, temperature=0.6) and sample_params(3, 0.6) differ for the same seed: "
        "sample_params ignores the temperature of a group (NVAE's PR #55), or draws its noise otherwise "
        "than traverse (one standard normal tensor per group, top first)",
        case,
        rtol=1e-5,
        atol=1e-5,
    )
    partial = draw(8, lambda: model.reconstruct(x, keep_groups=0, temperature=0.6))
    subject.shape(partial, tuple(x.shape), "reconstruct(x, keep_groups=0)", case)
    subject.check(
        torch.isfinite(partial).all() and partial.min() >= 0 and partial.max() <= 1,
        "reconstruct(x, keep_groups=0) leaves [0, 1]",
        case,
    )


def _check_parameter_counts(subject: Subject, model: Hierarchy, case: str) -> None:
    own = getattr(model, "parameter_counts", None)
    if not callable(own):
        return
    counts = dict(own())
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    stated = counts.pop("total", total)
    subject.check(
        all(isinstance(v, int) and v >= 0 for v in counts.values()),
        f"parameter_counts() holds values that are not counts: {counts}",
        case,
    )
    subject.check(
        sum(counts.values()) == total == stated,
        f"parameter_counts() sums to {sum(counts.values())}; the model has {total} parameters ({counts})",
        case,
    )
