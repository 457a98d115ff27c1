"""Splits and their arithmetic, shared by the built-in datasets (option checks themselves are
:mod:`genzoo.validation`'s, with ``component=`` the dataset's key).

Every message starts with the dataset's registry key and names the option (or file), the value
given and what was expected, so that an error in an experiment file can be fixed from the
message alone.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from genzoo.errors import ConfigError
from genzoo.validation import check_bool, check_int

SPLITS = ("train", "test")


def check_split(key: str, name: Any) -> str:
    if name not in SPLITS:
        raise ConfigError(f"{key}: unknown split {name!r}; expected 'train' or 'test'")
    return name


def check_bit_depth(key: str, num_bits: Any, binarize: Any) -> int:
    """The bit depth the dataset yields: 1 when binarized, else ``num_bits`` (1 to 8)."""
    check_bool("binarize", binarize, component=key)
    check_int("num_bits", num_bits, 1, 8, component=key)
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
        raise ConfigError(
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
