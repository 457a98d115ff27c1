"""What every check shares: the component under test, built by key or from a factory, and the
failures it reports.

A check names what it tests (the registry key, or the factory's qualified name), the case that
failed (``in_chs=4, out_chs=8, resample='down'``) and what was expected, in one
:class:`AssertionError`, so a failing plugin test reads as a sentence.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn, TypeVar

import torch
from torch import nn

from genzoo.interfaces import KINDS
from genzoo.plugin.discovery import get_registry
from genzoo.plugin.registry import Registry

KeyOrFactory = str | Callable[..., Any]
"""A registry key (``"vdvae.bottleneck_cell"``), or a factory (usually the class) that is not
registered yet."""


class Subject:
    """The component a check builds, again and again, with the kind's keywords.

    :param kind: one of :data:`genzoo.KINDS`.
    :param key_or_factory: a key registered as ``kind`` in ``registry``, or a factory.
    :param registry: where the key is looked up and nested components come from; the
        process-wide registry when ``None``.
    :param options: the caller's options, merged over the entry's ``example`` options.
    :param reserved: the keywords the check sets itself; an option of that name is refused.
    """

    def __init__(
        self,
        kind: str,
        key_or_factory: KeyOrFactory,
        registry: Registry | None,
        options: Mapping[str, Any],
        *,
        check: str,
        reserved: tuple[str, ...] = (),
    ) -> None:
        clash = sorted(set(options) & set(reserved))
        if clash:
            raise TypeError(
                f"{check}() sets {', '.join(reserved)} itself; got {', '.join(map(repr, clash))} among the "
                "options (pass only the component's own options)"
            )
        self.kind = kind
        self.registry = registry if registry is not None else get_registry()
        if isinstance(key_or_factory, str):
            entry = self.registry.get(kind, key_or_factory)
            self.name = key_or_factory
            self.options = {**entry.example, **options}
            self.accepts = entry.accepts
            self._factory: Callable[..., Any] | None = None
        elif callable(key_or_factory):
            self.name = getattr(key_or_factory, "__qualname__", repr(key_or_factory))
            self.options = dict(options)
            self.accepts = frozenset()
            self._factory = key_or_factory
        else:
            raise TypeError(
                f"{check}() takes a registry key or a factory; got {type(key_or_factory).__name__} "
                f"{key_or_factory!r}"
            )

    def build(self, **keywords: Any) -> Any:
        """The component built with the options and ``keywords`` (the kind's vocabulary), from
        the registry (so its type is checked and nested keys come from it), or from the factory
        with the registry in scope."""
        options = {**self.options, **keywords}
        if self._factory is None:
            return self.registry.create(self.kind, self.name, **options)
        with self.registry.as_current():
            obj = self._factory(**options)
        expected = KINDS[self.kind]
        if not isinstance(obj, expected):
            self.fail(f"the factory returned a {type(obj).__qualname__}; expected a {expected.__qualname__}")
        return obj

    def fail(self, what: str, case: str = "") -> NoReturn:
        where = f" ({case})" if case else ""
        raise AssertionError(f"{self.kind} {self.name!r}{where}: {what}")

    def check(self, condition: object, what: str, case: str = "") -> None:
        """Fail with ``what`` unless ``condition`` holds."""
        if not condition:
            self.fail(what, case)

    def close(
        self, actual: torch.Tensor, expected: torch.Tensor, what: str, case: str = "", **tol: Any
    ) -> None:
        """Fail with ``what`` and torch's account of the mismatch unless the tensors are close."""
        try:
            torch.testing.assert_close(actual, expected, **tol)
        except AssertionError as exc:
            self.fail(f"{what}: {exc}", case)

    def finite(self, tensor: torch.Tensor, what: str, case: str = "") -> None:
        if not torch.isfinite(tensor).all():
            self.fail(f"{what} is not finite (has NaN or inf)", case)

    def shape(self, tensor: object, expected: tuple[int, ...], what: str, case: str = "") -> None:
        if not isinstance(tensor, torch.Tensor):
            self.fail(f"{what} is a {type(tensor).__name__}; expected a tensor of shape {expected}", case)
        if tuple(tensor.shape) != tuple(expected):
            self.fail(f"{what} has shape {tuple(tensor.shape)}; expected {tuple(expected)}", case)

    def every_parameter_has_a_gradient(self, module: nn.Module, case: str = "") -> None:
        """Every parameter got a finite gradient from the last backward pass (a parameter that
        gets none is unused: it never trains, and DDP refuses it)."""
        missing = [name for name, p in module.named_parameters() if p.grad is None]
        if missing:
            self.fail(f"no gradient reaches the parameters {missing}", case)
        bad = [name for name, p in module.named_parameters() if not torch.isfinite(p.grad).all()]
        if bad:
            self.fail(f"the gradients of {bad} are not finite", case)

    def round_trip(self, original: nn.Module, fresh: nn.Module, case: str = "") -> None:
        """Load ``original``'s ``state_dict`` into ``fresh`` (same options), strictly."""
        try:
            fresh.load_state_dict(original.state_dict())
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            self.fail(
                f"the state_dict of one instance does not load into another built with the same "
                f"options: {type(exc).__name__}: {exc}",
                case,
            )


Check = TypeVar("Check", bound=Callable[..., None])


def isolated(check: Check) -> Check:
    """Run a check on one CPU thread (its tensors are tiny: more threads only add overhead, and
    on a busy machine a lot of it) and give the caller back its thread count and random state."""

    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):
                check(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return run  # type: ignore[return-value]


@contextlib.contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """Run with torch's CPU generator seeded, and leave the caller's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def draw(seed: int, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``fn()`` with torch's generator at ``seed`` (the caller's state is kept)."""
    with seeded(seed):
        return fn()


def weighted_sum(out: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """A scalar whose gradient reaches layers before a BatchNorm (``out.sum()`` would not: a
    training-mode BatchNorm's outputs sum to a constant over the batch)."""
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return (out * weights.to(out.device)).sum()


def normal(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def describe(**values: Any) -> str:
    """``in_chs=4, out_chs=8, resample='down'``: the case a failure happened in."""
    return ", ".join(f"{k}={v!r}" for k, v in values.items())
