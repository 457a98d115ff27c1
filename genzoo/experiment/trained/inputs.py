"""The images named on the command line of ``genzoo reconstruct`` and ``genzoo interpolate``:
image files (PNG, JPEG: anything PIL reads) or items of the run's dataset (``test:12``), read
as one batch on the model's bit grid.

An image file must have the model's size and channels, or the error says what the model
expects and which option converts it (``--resize``: stretched to the model's height and width,
no crop; ``--convert``: grey <-> RGB). An alpha channel is dropped. Its 8-bit codes ``k`` are put
on the model's grid as the built-in datasets put theirs (``genzoo_plugins.data.image_tensors``):
the top ``num_bits`` bits, ``floor(k / 2**(8 - num_bits)) / (2**num_bits - 1)``; for a binarized
model (``num_bits`` 1) that is a threshold at 128, or, with ``binarize="bernoulli"``, a draw of
``Bernoulli(k / 255)`` per pixel, as dynamically binarized data (MNIST's) are read in training.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from genzoo.errors import ConfigError, GenzooError
from genzoo.interfaces.dataset import ImageDataset

DATASET_ITEM = re.compile(r"^(?P<split>train|test):(?P<index>[0-9]+)$")
"""``<split>:<index>``: an image of the run's dataset, e.g. ``test:12``."""
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")
"""PIL modes with one colour channel (besides alpha); every other mode is read as RGB."""
BINARIZE = ("threshold", "bernoulli")


@dataclass(frozen=True)
class InputOptions:
    """How image files are fitted to the model: ``resize`` to its height and width, ``convert``
    grey <-> RGB, ``binarize`` (``threshold`` or ``bernoulli``) for a 1-bit model."""

    resize: bool = False
    convert: bool = False
    binarize: str = "threshold"

    def __post_init__(self) -> None:
        if self.binarize not in BINARIZE:
            raise ConfigError(f"--binarize {self.binarize!r}; expected one of {', '.join(BINARIZE)}")


AS_GIVEN = InputOptions()
"""The defaults: files must fit the model; 1-bit models threshold them."""


def load_inputs(
    specs: Sequence[str],
    *,
    image_shape: tuple[int, int, int],
    num_bits: int,
    dataset: Callable[[], ImageDataset],
    options: InputOptions = AS_GIVEN,
) -> torch.Tensor:
    """The images ``specs`` names, ``(N, C, H, W)`` in ``[0, 1]`` on the ``num_bits`` grid.

    :param dataset: builds the run's dataset, called on the first ``<split>:<index>``.
    """
    built: list[ImageDataset] = []

    def the_dataset() -> ImageDataset:
        if not built:
            built.append(dataset())
        return built[0]

    images = []
    for spec in specs:
        item = DATASET_ITEM.match(spec)
        if item and not Path(spec).exists():
            images.append(_dataset_image(spec, item["split"], int(item["index"]), the_dataset(), image_shape))
        else:
            images.append(read_image(spec, image_shape=image_shape, num_bits=num_bits, options=options))
    return torch.stack(images)


def _dataset_image(
    spec: str, split: str, index: int, dataset: ImageDataset, image_shape: tuple[int, int, int]
) -> torch.Tensor:
    images = dataset.split(split)
    count = len(images)  # type: ignore[arg-type]
    if index >= count:
        raise ConfigError(
            f"{spec}: index {index} is out of range; the run's {split} split has {count} images "
            f"(indices 0 to {count - 1})"
        )
    item = images[index]
    image = item[0] if isinstance(item, (tuple, list)) else item
    if tuple(image.shape) != tuple(image_shape):
        raise GenzooError(
            f"{spec}: the run's dataset gives an image of shape {tuple(image.shape)}, but its model "
            f"expects {_shape_text(image_shape)}"
        )
    return image.float()


def read_image(
    path: str | Path, *, image_shape: tuple[int, int, int], num_bits: int, options: InputOptions
) -> torch.Tensor:
    """One image file as a ``(C, H, W)`` tensor on the model's grid (see the module docstring)."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = image_shape
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such image file; expected an image file (PNG, JPEG) or an image of the run's "
            "dataset as <split>:<index>, e.g. test:12"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ConfigError(f"{path}: not an image file that PIL can read ({exc})") from None
    chs = 1 if image.mode in GREY_MODES else 3
    got = f"got {chs}x{image.height}x{image.width} {image.mode}"
    if c not in (1, 3):
        raise ConfigError(
            f"{path}: the model expects {_shape_text(image_shape)} images; {got}, and image files give "
            "grey or RGB only: name images of the run's dataset instead (e.g. test:12)"
        )
    wrong_size = (image.height, image.width) != (h, w)
    fixes = []
    if chs != c and not options.convert:
        fixes.append(f"--convert to convert it to {'grey' if c == 1 else 'RGB'}")
    if wrong_size and not options.resize:
        fixes.append(f"--resize to resize it to {h}x{w} (stretched, not cropped)")
    if fixes:
        raise ConfigError(
            f"{path}: the model expects {_shape_text(image_shape)} images; {got}; pass " + " and ".join(fixes)
        )
    image = image.convert("L" if c == 1 else "RGB")
    if wrong_size:
        image = image.resize((w, h), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8).reshape(h, w, c)
    codes = rearrange(torch.from_numpy(array.copy()), "h w c -> c h w")
    return to_bit_grid(codes, num_bits, bernoulli=options.binarize == "bernoulli")


def to_bit_grid(codes: torch.Tensor, num_bits: int, *, bernoulli: bool = False) -> torch.Tensor:
    """8-bit codes -> floats on the ``num_bits`` grid, as the built-in datasets read theirs; with
    ``bernoulli`` (1-bit models only), a ``Bernoulli(k / 255)`` draw per pixel instead."""
    if num_bits == 1 and bernoulli:
        return torch.bernoulli(codes.float() / 255)
    top = 2**num_bits - 1
    if num_bits <= 8:
        return torch.div(codes, 2 ** (8 - num_bits), rounding_mode="floor").float() / top
    return torch.round(codes.float() * (top / 255)) / top


def _shape_text(image_shape: Sequence[int]) -> str:
    c, h, w = image_shape
    kind = {1: " (grey)", 3: " (RGB)"}.get(c, "")
    return f"{c}x{h}x{w}{kind}"
