"""Pieces every hierarchy needs, whoever provides it: padding images to a size the network
divides evenly (and cropping back to the scored pixels), and building the output likelihood
from a spec with a bit depth that agrees with the data.

They live in the core so that hierarchies of different plugins (NVAE's, the standard VAE
baseline, a third party's) share them without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from genzoo.errors import ConfigError
from genzoo.interfaces import OutputLikelihood
from genzoo.io.validation import check_int
from genzoo.plugin.component_spec import ComponentSpec

SpecLike = ComponentSpec | str | Mapping[str, Any]
"""A component as written in a config: a spec, a bare registry key, or ``{key: ..., options}``."""


def padded_shape(height: int, width: int, multiple: int, padding: int) -> tuple[int, int]:
    """``(height + 2 padding, width + 2 padding)``, which must be multiples of the total
    downsampling ``multiple``; a :class:`genzoo.ConfigError` says what to change otherwise."""
    check_int("padding", padding, 0)
    shape = (height + 2 * padding, width + 2 * padding)
    if shape[0] % multiple or shape[1] % multiple:
        raise ConfigError(
            f"image size {height}x{width} with padding={padding} gives {shape[0]}x{shape[1]}, which is not "
            f"a multiple of the total downsampling {multiple}; set padding so that it is (NVAE pads 28x28 "
            "MNIST with padding 2 to 32x32) or use fewer downsampling blocks or scales"
        )
    return shape


def pad_center(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero-pad ``x`` (images in ``[0, 1]``) to ``height x width``, centred; an odd remainder goes
    to the bottom/right. NVAE pads 28x28 MNIST by 2 pixels on each side (``transforms.Pad(2)``)."""
    dh, dw = height - x.shape[-2], width - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), value=0.0)


def crop_center(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The ``height x width`` centre of ``x``: the inverse of :func:`pad_center`."""
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


def build_likelihood(
    spec: SpecLike | None,
    *,
    image_chs: int,
    num_bits: int | None,
    binary_default: SpecLike,
    multibit_default: SpecLike,
) -> OutputLikelihood:
    """The output likelihood for ``image_chs``-channel images, from the registry in scope.

    ``num_bits`` defaults to 1 for one channel (binarized MNIST) and 8 otherwise; a
    ``num_bits`` in ``spec`` wins over that default but must agree with an explicit
    ``num_bits``. Without ``spec``, the hierarchy's own choice: ``binary_default`` for 1-bit
    images, ``multibit_default`` otherwise.
    """
    spec_bits = (
        None if spec is None else ComponentSpec.parse(spec, where="likelihood").options.get("num_bits")
    )
    if num_bits is not None:
        check_int("num_bits", num_bits, 1)
        if spec_bits is not None and spec_bits != num_bits:
            raise ConfigError(
                f"num_bits={num_bits!r} disagrees with likelihood num_bits={spec_bits!r}; "
                "expected one of them, or the same value"
            )
    bits = num_bits if num_bits is not None else spec_bits
    if bits is None:
        bits = 1 if image_chs == 1 else 8
    if spec is None:
        spec = binary_default if bits == 1 else multibit_default
    spec = ComponentSpec.parse(spec, where="likelihood")
    return spec.build("likelihood", image_chs=image_chs, num_bits=bits)
