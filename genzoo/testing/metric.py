"""The ``metric`` contract as code: :func:`check_metric`, and the small model it measures."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from genzoo.interfaces import GroupInfo, Hierarchy, HierarchyOutput, LatentOutput, Metric, OutputLikelihood
from genzoo.layers.distributions import DiagonalNormal, check_temperature
from genzoo.plugin.registry import Registry
from genzoo.testing.subject import KeyOrFactory, Subject, draw, isolated

LATENT_CHS = 2


class CategoricalPixels(OutputLikelihood):
    """A categorical distribution over the ``2**num_bits`` values of each pixel and channel:
    exact, and the simplest likelihood for any bit depth."""

    @property
    def param_chs(self) -> int:
        return self.image_chs * 2**self.num_bits

    def _logits(self, params: torch.Tensor) -> torch.Tensor:
        return rearrange(params, "b (c v) h w -> b c h w v", c=self.image_chs)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        k = torch.round(x * (2**self.num_bits - 1)).long().unsqueeze(-1)
        return F.log_softmax(self._logits(params), -1).gather(-1, k).flatten(1).sum(1)

    def sample(self, params: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        check_temperature(temperature)
        logits = self._logits(params)
        u = torch.rand(logits.shape, device=logits.device).clamp(1e-6, 1 - 1e-6)
        return (logits - temperature * torch.log(-torch.log(u))).argmax(-1) / (2**self.num_bits - 1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self._logits(params).argmax(-1) / (2**self.num_bits - 1)


class ProbeHierarchy(Hierarchy):
    """The smallest hierarchy: one latent group at full resolution, N(0, I) prior, 3x3 convs in
    and out, :class:`CategoricalPixels` output. What a metric is checked on by default."""

    def __init__(self, *, image_shape: tuple[int, int, int] = (3, 8, 8), num_bits: int = 8) -> None:
        super().__init__(image_shape=image_shape)
        c = self.image_shape[0]
        self.output_likelihood = CategoricalPixels(image_chs=c, num_bits=num_bits)
        self.encoder = nn.Conv2d(c, 2 * LATENT_CHS, 3, padding=1)
        self.decoder = nn.Conv2d(LATENT_CHS, self.output_likelihood.param_chs, 3, padding=1)

    @property
    def groups(self) -> list[GroupInfo]:
        return [GroupInfo(0, 0, 1, LATENT_CHS, *self.image_shape[1:])]

    @property
    def likelihood(self) -> OutputLikelihood:
        return self.output_likelihood

    def forward(self, x: torch.Tensor) -> HierarchyOutput:
        mu, log_sigma = self.encoder(2 * x - 1).chunk(2, dim=1)
        q, p = DiagonalNormal(mu, log_sigma.exp()), DiagonalNormal(torch.zeros_like(mu), torch.ones_like(mu))
        z = q.sample()
        latent = LatentOutput.from_elementwise(
            z, kl=q.kl(p), log_q=q.log_prob(z), log_p=p.log_prob(z), q_mean=mu
        )
        params = self.decoder(z)
        return HierarchyOutput(log_px=self.likelihood.log_prob(params, x), latents=[latent], params=params)

    def sample_params(self, num_samples: int, temperature: float = 1.0) -> torch.Tensor:
        z = temperature * torch.randn(
            num_samples, LATENT_CHS, *self.image_shape[1:], device=self.decoder.weight.device
        )
        return self.decoder(z)


@isolated
def check_metric(
    key_or_factory: KeyOrFactory,
    registry: Registry | None = None,
    *,
    model: Hierarchy | None = None,
    **options: Any,
) -> None:
    """Check a metric against the :class:`genzoo.Metric` contract; raise :class:`AssertionError`
    naming the key and what failed.

    ``compute(model, batches)`` on three batches of two images on the model's bit grid, given
    as a one-pass generator: every module of the model it runs is in eval mode with gradients
    off, the model's parameters and buffers are unchanged afterwards, and the result is a
    non-empty mapping from non-empty names to finite numbers (plain ``float``/``int``, not
    tensors).

    :param key_or_factory: a registered metric key, or a factory not registered yet.
    :param registry: where the key is looked up (default: the process-wide registry).
    :param model: the hierarchy to measure; default a :class:`ProbeHierarchy` on 3x8x8
        8-bit images (pass a model of the size your metric needs, e.g. for an Inception).
    :param options: the metric's options, over the entry's ``example``.
    """
    subject = Subject("metric", key_or_factory, registry, options, check="check_metric")
    metric: Metric = draw(0, subject.build)
    if model is None:
        model = draw(1, ProbeHierarchy)
    model.train()  # compute must switch it to eval mode itself
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls: list[tuple[str, bool, bool]] = []
    hooks = [
        module.register_forward_pre_hook(
            lambda module, args, name=name: calls.append(
                (name or "model", module.training, torch.is_grad_enabled())
            )
        )
        for name, module in model.named_modules()
    ]
    top = 2**model.likelihood.num_bits - 1
    generator = torch.Generator().manual_seed(2)

    def batches():
        for _ in range(3):
            yield torch.randint(0, top + 1, (2, *model.image_shape), generator=generator) / top

    try:
        result = draw(3, lambda: metric.compute(model, batches()))
    finally:
        for hook in hooks:
            hook.remove()
    training = sorted({name for name, is_training, _ in calls if is_training})
    subject.check(not training, f"compute runs modules in training mode: {training}")
    with_grad = sorted({name for name, _, grad in calls if grad})
    subject.check(
        not with_grad, f"compute runs modules with gradients enabled (not under torch.no_grad()): {with_grad}"
    )
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    subject.check(not changed, f"compute changed the model's state: {changed}")
    if not isinstance(result, dict) or not result:
        subject.fail(f"compute returned {result!r}; expected a non-empty dict of named numbers")
    for name, value in result.items():
        subject.check(isinstance(name, str) and name, f"compute returned the result name {name!r}")
        subject.check(
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
            f"compute returned {name!r}: {value!r}; expected a finite float",
        )
