"""Option checks and split arithmetic shared by the built-in datasets.

Every message starts with the dataset's registry key and names the option (or file), the value
given and what was expected, so that an error in an experiment file can be fixed from the
message alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from genzoo.errors import ConfigError

SPLITS = ("train", "test")


class DataOptionError(ConfigError, ValueError):
    """A dataset option is invalid.

    A :class:`genzoo.ConfigError` (the command line prints it without a traceback) and a
    :class:`ValueError` (what every genzoo constructor raises for a bad option).
    """


def check_int(key: str, option: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``; bools are not integers here."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    ok = ok and (maximum is None or value <= maximum)
    if not ok:
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise DataOptionError(f"{key}: option {option!r} = {value!r} is invalid; expected an integer {bound}")
    return value


def check_bool(key: str, option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise DataOptionError(f"{key}: option {option!r} = {value!r} is invalid; expected true or false")
    return value


def check_choice(key: str, option: str, value: Any, choices: Sequence[Any]) -> Any:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise DataOptionError(f"{key}: option {option!r} = {value!r} is invalid; expected one of {listed}")
    return value


def check_fraction(key: str, option: str, value: Any) -> float:
    """A number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise DataOptionError(
            f"{key}: option {option!r} = {value!r} is invalid; expected a number between 0 and 1 (exclusive)"
        )
    return float(value)


def check_path(key: str, option: str, value: Any) -> Path:
    """A path option (``str`` or ``os.PathLike``), with ``~`` expanded; existence is not checked."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise DataOptionError(f"{key}: option {option!r} = {value!r} is invalid; expected a path")
    return Path(value).expanduser()


def check_split(key: str, name: Any) -> str:
    if name not in SPLITS:
        raise DataOptionError(f"{key}: unknown split {name!r}; expected 'train' or 'test'")
    return name


def check_bit_depth(key: str, num_bits: Any, binarize: Any) -> int:
    """The bit depth the dataset yields: 1 when binarized, else ``num_bits`` (1 to 8)."""
    check_bool(key, "binarize", binarize)
    check_int(key, "num_bits", num_bits, minimum=1, maximum=8)
    return 1 if binarize else num_bits


def index_range(key: str, option: str, value: Any, count: int, where: str) -> range:
    """``[start, stop)`` from ``value`` (a pair, or None for everything), inside ``count`` items.

    :param where: names the file the range indexes, for the error message.
    """
    if value is None:
        return range(count)
    pair = list(value) if isinstance(value, (list, tuple)) else None
    valid = pair is not None and len(pair) == 2
    valid = valid and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
    if not valid or not 0 <= pair[0] < pair[1] <= count:
        raise DataOptionError(
            f"{key}: option {option!r} = {value!r} is invalid; expected [start, stop] with "
            f"0 <= start < stop <= {count} (the number of images in {where})"
        )
    return range(pair[0], pair[1])


def holdout_indices(count: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random partition of ``range(count)`` into (train, test), ``ceil(fraction * count)``
    of them held out for test; both sorted, so reading them walks the files in order."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    num_test = math.ceil(fraction * count)
    return order[num_test:].sort().values, order[:num_test].sort().values
