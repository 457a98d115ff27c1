"""The ``gate`` contract as code: :func:`check_gate`."""

from __future__ import annotations

from typing import Any

import torch

from genzoo.interfaces import ChannelGate
from genzoo.plugin.registry import Registry
from genzoo.testing.subject import KeyOrFactory, Subject, describe, draw, isolated, normal, weighted_sum

CHANNELS = (1, 4, 20)  # one channel, few, and more than SE's reduction of 16


@isolated
def check_gate(key_or_factory: KeyOrFactory, registry: Registry | None = None, **options: Any) -> None:
    """Check a channel gate against the :class:`genzoo.ChannelGate` contract; raise
    :class:`AssertionError` naming the key, the case and what failed.

    For ``chs`` in 1, 4 and 20, on a ``2 x chs x 5 x 3`` input: ``chs`` is kept; the output has
    the input's shape and is finite; the input and every parameter get a finite gradient; a
    channels_last input gives the same output; the ``state_dict`` loads strictly into a fresh
    instance, which then gives identical outputs in eval mode.

    :param key_or_factory: a registered gate key, or a factory not registered yet.
    :param registry: where the key is looked up (default: the process-wide registry).
    :param options: the gate's own options, over the entry's ``example`` options.
    """
    subject = Subject("gate", key_or_factory, registry, options, check="check_gate", reserved=("chs",))
    for seed, chs in enumerate(CHANNELS):
        case = describe(chs=chs)
        gate: ChannelGate = draw(seed, lambda chs=chs: subject.build(chs=chs))
        subject.check(gate.chs == chs, f"gate.chs is {gate.chs!r}; expected {chs}", case)
        gate.train()
        x = normal(2, chs, 5, 3, seed=seed).requires_grad_()
        out = gate(x)
        subject.shape(out, tuple(x.shape), "the output", case)
        subject.finite(out, "the output", case)
        weighted_sum(out).backward()
        subject.finite(x.grad, "the input's gradient", case)
        subject.every_parameter_has_a_gradient(gate, case)

        gate.eval()
        with torch.no_grad():
            expected = gate(x)
            subject.close(
                gate(x.contiguous(memory_format=torch.channels_last)),
                expected,
                "with a channels_last input the output differs from a contiguous input's",
                case,
                rtol=1e-4,
                atol=1e-5,
            )
            fresh = draw(seed + 1000, lambda chs=chs: subject.build(chs=chs))
            subject.round_trip(gate, fresh, case)
            fresh.eval()
            subject.check(
                torch.equal(fresh(x), expected),
                "after loading the state_dict, a fresh instance gives other eval-mode outputs",
                case,
            )
