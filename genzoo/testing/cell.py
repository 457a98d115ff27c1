"""The ``cell`` contract as code: :func:`check_cell`."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from genzoo.interfaces import RESAMPLE_MODES, Cell, ChannelGate
from genzoo.plugin.registry import Registry
from genzoo.testing.subject import KeyOrFactory, Subject, describe, draw, isolated, normal, weighted_sum

CHANNELS = ((4, 4), (4, 8), (8, 4))
"""(in_chs, out_chs): kept, doubled (as NVAE going down), halved (as NVAE going up)."""
BATCH, HEIGHT, WIDTH = 2, 6, 4  # not square, so that a swapped height and width shows
RESAMPLED = {"none": (HEIGHT, WIDTH), "down": (HEIGHT // 2, WIDTH // 2), "up": (2 * HEIGHT, 2 * WIDTH)}


class ScaleGate(ChannelGate):
    """The smallest gate with a parameter: each channel times a learned sigmoid."""

    def __init__(self, chs: int) -> None:
        super().__init__(chs)
        self.logit = nn.Parameter(torch.linspace(-1.0, 1.0, chs).reshape(1, chs, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.logit)


class GateRecorder:
    """A ``gate_layer`` that remembers the gates it built, to find them in the cell."""

    def __init__(self) -> None:
        self.made: list[ChannelGate] = []

    def __call__(self, chs: int) -> ChannelGate:
        gate = ScaleGate(chs)
        self.made.append(gate)
        return gate


@isolated
def check_cell(key_or_factory: KeyOrFactory, registry: Registry | None = None, **options: Any) -> None:
    """Check a cell against the :class:`genzoo.Cell` contract; raise :class:`AssertionError`
    naming the key, the case and what failed.

    For every resample mode (none, down, up), with the channels kept, doubled and halved, and
    with and without a gate layer (a small gate with a parameter), on a ``2 x C x 6 x 4`` input:

    - the attributes ``in_chs``, ``out_chs``, ``resample``; ``output_size`` and the output's
      shape; a finite output;
    - training mode: the input and every parameter get a finite gradient (the input a non-zero
      one), and the gate the cell built is one of its submodules;
    - a channels_last input gives the same output and gradients as a contiguous one (training
      and eval mode);
    - the ``state_dict`` (after a training step moved the BatchNorm statistics) loads strictly
      into a fresh instance, which then gives identical outputs in eval mode.

    A cell that declares ``accepts=["expansion"]`` is also built with ``expansion=3``.

    :param key_or_factory: a registered cell key, or a factory not registered yet.
    :param registry: where the key is looked up (default: the process-wide registry).
    :param options: the cell's own options, over the entry's ``example`` options.
    """
    reserved = ("in_chs", "out_chs", "resample", "gate_layer")
    subject = Subject("cell", key_or_factory, registry, options, check="check_cell", reserved=reserved)
    cases = [
        dict(in_chs=i, out_chs=o, resample=r, gated=g)
        for r, (i, o), g in itertools.product(RESAMPLE_MODES, CHANNELS, (True, False))
    ]
    if "expansion" in subject.accepts and "expansion" not in subject.options:
        cases.append(dict(in_chs=4, out_chs=4, resample="none", gated=True, expansion=3))
    for seed, case in enumerate(cases):
        _check_case(subject, seed, **case)


def _check_case(
    subject: Subject, seed: int, *, in_chs: int, out_chs: int, resample: str, gated: bool, **extra: Any
) -> None:
    def build(build_seed: int) -> tuple[Cell, GateRecorder | None]:
        gates = GateRecorder() if gated else None
        keywords = dict(in_chs=in_chs, out_chs=out_chs, resample=resample, gate_layer=gates, **extra)
        return draw(build_seed, lambda: subject.build(**keywords)), gates

    case = describe(in_chs=in_chs, out_chs=out_chs, resample=resample, **extra)
    case += ", with a gate layer" if gated else ", gate_layer=None"
    cell, gates = build(seed)
    for name, value in (("in_chs", in_chs), ("out_chs", out_chs), ("resample", resample)):
        subject.check(
            getattr(cell, name, None) == value,
            f"cell.{name} is {getattr(cell, name, None)!r}; expected {value!r}",
            case,
        )
    size = RESAMPLED[resample]
    subject.check(
        tuple(cell.output_size(HEIGHT, WIDTH)) == size,
        f"output_size({HEIGHT}, {WIDTH}) is {cell.output_size(HEIGHT, WIDTH)}; expected {size}",
        case,
    )
    if gates is not None:
        subject.check(gates.made, "the cell never calls gate_layer, so a gate key would be ignored", case)
        inside = {id(m) for m in cell.modules()}
        subject.check(
            all(id(g) in inside for g in gates.made),
            "a gate built by gate_layer is not a submodule of the cell (it would not train nor be checkpointed)",
            case,
        )

    cell.train()
    x = normal(BATCH, in_chs, HEIGHT, WIDTH, seed=seed).requires_grad_()
    out = draw(seed, lambda: cell(x))
    subject.shape(out, (BATCH, out_chs, *size), "the output", case)
    subject.finite(out, "the output", case)
    weighted_sum(out).backward()
    subject.finite(x.grad, "the input's gradient", case)
    subject.check(x.grad.abs().sum() > 0, "the input's gradient is zero", case)
    subject.every_parameter_has_a_gradient(cell, case)

    # channels_last: the same numbers, forward and backward (fused and custom kernels often
    # take another path for it)
    grads = {name: p.grad.clone() for name, p in cell.named_parameters()}
    # rounding noise is relative to the largest gradient: a bias before a training-mode
    # BatchNorm has an exactly zero gradient, computed as a difference of large terms
    scale = max([x.grad.abs().max().item(), *(g.abs().max().item() for g in grads.values())])
    cell.zero_grad(set_to_none=True)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    out_cl = draw(seed, lambda: cell(x_cl))
    what = "with a channels_last input, {} differs from a contiguous input's"
    _close(subject, out_cl, out.detach(), what.format("the output"), case)
    weighted_sum(out_cl).backward()
    _close(subject, x_cl.grad, x.grad, what.format("the input's gradient"), case, scale)
    for name, p in cell.named_parameters():
        if p.grad is None:
            subject.fail(f"with a channels_last input no gradient reaches {name!r}", case)
        _close(subject, p.grad, grads[name], what.format(f"the gradient of {name!r}"), case, scale)

    cell.eval()
    with torch.no_grad():
        expected = cell(x)
        _close(subject, cell(x_cl), expected, what.format("the eval-mode output"), case)
        fresh, _ = build(seed + 1000)
        subject.round_trip(cell, fresh, case)
        fresh.eval()
        subject.check(
            torch.equal(fresh(x), expected),
            "after loading the state_dict, a fresh instance gives other eval-mode outputs "
            "(state kept outside parameters and buffers?)",
            case,
        )


def _close(
    subject: Subject, actual: torch.Tensor, expected: torch.Tensor, what: str, case: str, scale: float = 0.0
) -> None:
    """Close up to float32 rounding, relative to ``scale`` (default: ``expected``'s largest value)."""
    scale = max(1.0, scale or expected.abs().max().item())
    subject.close(actual, expected, what, case, rtol=1e-4, atol=2e-5 * scale)
