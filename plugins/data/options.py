"""Splits and their arithmetic, and where the data is, shared by the built-in datasets (option
checks themselves are :mod:`genzoo.io.validation`'s, with ``component=`` the dataset's key).

Every message starts with the dataset's registry key and names the option (or file), the value
given and what was expected, so that an error in an experiment file can be fixed from the
message alone.

Data roots: MNIST, CIFAR-10 and CelebA 64 default to ``data/mnist``, ``data/cifar10`` and
``data/celeba``, relative to the folder ``genzoo`` runs from, as the experiment files that ship
name them. ``GENZOO_DATA``, when set, is the folder that stands for ``data/`` in those roots
(``data/mnist`` reads ``$GENZOO_DATA/mnist``), so one variable points every experiment at a
shared copy of the datasets; other roots are taken as given.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from genzoo.errors import ConfigError
from genzoo.io.validation import check_bool, check_int, check_path

SPLITS = ("train", "test")
DATA_ENV = "GENZOO_DATA"
DATA_FOLDER = "data"
DOWNLOAD_HINT = (
    "set 'download: true' (in an experiment: --set data.dataset.download=true) where the network allows it"
)


def check_split(key: str, name: Any) -> str:
    if name not in SPLITS:
        raise ConfigError(f"{key}: unknown split {name!r}; expected 'train' or 'test'")
    return name


def check_bit_depth(key: str, num_bits: Any, binarize: Any) -> int:
    """The bit depth the dataset yields: 1 when binarized, else ``num_bits`` (1 to 8)."""
    check_bool("binarize", binarize, component=key)
    check_int("num_bits", num_bits, 1, 8, component=key)
    return 1 if binarize else num_bits


def data_root(key: str, root: Any) -> Path:
    """The folder option ``root`` names, with its leading ``data/`` read as ``$GENZOO_DATA``
    when that is set (relative roots only)."""
    given = check_path("root", root, component=key)
    base = os.environ.get(DATA_ENV)
    if base and not given.is_absolute() and given.parts[:1] == (DATA_FOLDER,):
        return Path(base).expanduser().joinpath(*given.parts[1:])
    return given


def folder_text(path: Path) -> str:
    """``path`` quoted for a message; a relative one also as the absolute folder it names here."""
    return repr(str(path)) if path.is_absolute() else f"{str(path)!r} ({str(path.absolute())!r} here)"


def elsewhere() -> str:
    """The end of a missing-data message: how to read the files from another folder."""
    base = os.environ.get(DATA_ENV)
    now = f"; it is {base!r} now" if base else ""
    return (
        "To read them from another folder, set option 'root' (in an experiment: "
        f"--set data.dataset.root=PATH), or set {DATA_ENV} to the folder that stands for 'data/' in "
        f"the roots data/mnist, data/cifar10 and data/celeba{now}"
    )


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
