"""The torch ``Dataset`` splits the built-in datasets return: 8-bit images read as floats on a
``num_bits`` grid, with NVAE's dynamic binarization and horizontal-flip augmentation.

Bit depth follows the official code's ``pre_process``: an 8-bit code ``k`` keeps its top
``num_bits`` bits, ``floor(k / 2**(8 - num_bits)) / (2**num_bits - 1)``. Dynamic binarization
(NVAE, App. A; Salakhutdinov & Murray 2008) instead draws ``Bernoulli(k / 255)`` afresh on every
read. Random draws use torch's global generator, which the trainer checkpoints, so a resumed run
sees the same noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torch.utils.data import Dataset

from genzoo.errors import ConfigError


def to_grid(
    codes: torch.Tensor, *, num_bits: int = 8, binarize: bool = False, hflip: bool = False
) -> torch.Tensor:
    """8-bit codes ``(C, H, W)`` (uint8) -> float32 image in [0, 1] on the dataset's bit grid.

    :param num_bits: keep the top ``num_bits`` bits of each code (ignored when ``binarize``).
    :param binarize: a fresh ``Bernoulli(k / 255)`` draw per pixel (values 0 or 1).
    :param hflip: flip left-right with probability 1/2 (training augmentation).
    """
    if hflip and torch.rand(()) < 0.5:
        codes = codes.flip(-1)
    if binarize:
        return torch.bernoulli(codes.float() / 255)
    if num_bits == 8:
        return codes.float() / 255
    levels = torch.div(codes, 2 ** (8 - num_bits), rounding_mode="floor")
    return levels.float() / (2**num_bits - 1)


def pil_to_codes(image: Image.Image) -> torch.Tensor:
    """A PIL image in mode ``RGB`` or ``L`` -> uint8 tensor ``(C, H, W)``."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return rearrange(torch.from_numpy(array.copy()), "h w c -> c h w")


class UInt8Images(Dataset):
    """Images held in memory as 8-bit codes ``(N, C, H, W)``; item ``i`` is a float ``(C, H, W)``.

    :param codes: uint8 tensor ``(N, C, H, W)``.
    :param indices: which of the ``N`` images this split holds (default: all, in order).
    :param num_bits, binarize, hflip: see :func:`to_grid`.
    """

    def __init__(
        self,
        codes: torch.Tensor,
        indices: Sequence[int] | torch.Tensor | None = None,
        *,
        num_bits: int = 8,
        binarize: bool = False,
        hflip: bool = False,
    ) -> None:
        if codes.dtype != torch.uint8 or codes.dim() != 4:
            raise TypeError(f"expected uint8 codes (N, C, H, W), got {codes.dtype} {tuple(codes.shape)}")
        self.codes = codes
        self.indices = torch.arange(len(codes)) if indices is None else torch.as_tensor(indices)
        self.num_bits, self.binarize, self.hflip = num_bits, binarize, hflip

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> torch.Tensor:
        codes = self.codes[self.indices[index]]
        return to_grid(codes, num_bits=self.num_bits, binarize=self.binarize, hflip=self.hflip)


class ImageFiles(Dataset):
    """Images read from files on each access, for datasets too large to hold in memory.

    :param paths: one image file per item.
    :param prepare: PIL image (already converted to ``mode``) -> PIL image of the final size;
        a module-level function or ``functools.partial`` so that worker processes can pickle it.
    :param mode: ``"RGB"`` or ``"L"``.
    :param key: the dataset's registry key, named when a file cannot be read.
    :param num_bits, hflip: see :func:`to_grid`.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        prepare: Callable[[Image.Image], Image.Image],
        *,
        mode: str,
        key: str,
        num_bits: int = 8,
        hflip: bool = False,
    ) -> None:
        self.paths, self.prepare, self.mode, self.key = list(paths), prepare, mode, key
        self.num_bits, self.hflip = num_bits, hflip

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                prepared = self.prepare(image.convert(self.mode))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.key}: cannot read the image file {str(path)!r}: {exc}") from exc
        return to_grid(pil_to_codes(prepared), num_bits=self.num_bits, hflip=self.hflip)
