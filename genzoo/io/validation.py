"""Option checks: one family for every option genzoo validates, one error type.

Engine settings, constructor arguments of components, dataset options and the interfaces'
own arguments are checked by the same functions, which return the value (converted where
that is part of the check) or raise :class:`genzoo.ConfigError`. That error is also a
:class:`ValueError`, so code that builds a component and catches ``ValueError`` keeps working,
and the command line prints it as one line with exit code 2.

A message names the option as the user wrote it, by where it lives:

- a field of a settings class, ``owner="TrainConfig"``: ``TrainConfig.lr=-1; expected ...``
  (:func:`genzoo.experiment.config.typed.build_dataclass` then points at the file, line and key);
- an option of a registered component, ``component="data.mnist"``:
  ``data.mnist: option 'num_bits' = 9 is invalid; expected ...``;
- neither, a constructor argument: ``num_channels=0; expected ...``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from genzoo.errors import ConfigError


def invalid(
    name: str, value: Any, expected: str, *, owner: str | None = None, component: str | None = None
) -> ConfigError:
    """The error for option ``name`` holding ``value`` where ``expected`` was expected."""
    if component is not None:
        return ConfigError(f"{component}: option {name!r} = {value!r} is invalid; expected {expected}")
    prefix = f"{owner}." if owner else ""
    return ConfigError(f"{prefix}{name}={value!r}; expected {expected}")


def is_int(value: Any) -> bool:
    """An integer, not a bool (YAML's ``true`` is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_int(
    name: str,
    value: Any,
    minimum: int,
    maximum: int | None = None,
    *,
    owner: str | None = None,
    component: str | None = None,
) -> int:
    """``value`` if it is an integer in ``[minimum, maximum]``."""
    if not (is_int(value) and value >= minimum and (maximum is None or value <= maximum)):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise invalid(name, value, f"an integer {bound}", owner=owner, component=component)
    return value


def check_odd_int(name: str, value: Any, *, owner: str | None = None, component: str | None = None) -> int:
    """``value`` if it is an odd integer >= 1 (a kernel size with a centre pixel)."""
    if not (is_int(value) and value >= 1 and value % 2 == 1):
        raise invalid(name, value, "an odd positive integer", owner=owner, component=component)
    return value


def check_float(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    open_low: bool = False,
    open_high: bool = False,
    owner: str | None = None,
    component: str | None = None,
) -> float:
    """``value`` as a float if it is a finite number in the interval (bounds closed unless
    ``open_low`` / ``open_high``)."""
    ok = is_number(value)
    ok = ok and (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not ok:
        parts = []
        if low > -math.inf:
            parts.append(f"{'>' if open_low else '>='} {low}")
        if high < math.inf:
            parts.append(f"{'<' if open_high else '<='} {high}")
        bounds = (" " + " and ".join(parts)) if parts else ""
        raise invalid(name, value, f"a finite number{bounds}", owner=owner, component=component)
    return float(value)


def check_optional_positive(name: str, value: Any, *, owner: str | None = None) -> float | None:
    """``None``, or a finite number > 0."""
    return None if value is None else check_float(name, value, 0.0, open_low=True, owner=owner)


def check_bool(name: str, value: Any, *, owner: str | None = None, component: str | None = None) -> bool:
    """``value`` if it is ``True`` or ``False`` (not 0 or 1)."""
    if not isinstance(value, bool):
        raise invalid(name, value, "true or false", owner=owner, component=component)
    return value


def check_bool_or_auto(
    name: str, value: Any, *, owner: str | None = None, component: str | None = None
) -> bool | str:
    """``value`` if it is ``True``, ``False`` or ``"auto"`` (a choice the component makes by
    device, documented where the option is)."""
    if not (isinstance(value, bool) or value == "auto"):
        raise invalid(name, value, "true, false or 'auto'", owner=owner, component=component)
    return value


def check_choice(
    name: str, value: Any, choices: Iterable[Any], *, owner: str | None = None, component: str | None = None
) -> Any:
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise invalid(name, value, f"one of {listed}", owner=owner, component=component)
    return value


def check_path(name: str, value: Any, *, owner: str | None = None, component: str | None = None) -> Path:
    """A path option (``str`` or ``os.PathLike``), with ``~`` expanded; existence is not checked."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise invalid(name, value, "a path", owner=owner, component=component)
    return Path(value).expanduser()
