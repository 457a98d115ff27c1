"""Images stored as NumPy arrays in an ``.npz`` file, one array per split.

Arrays are ``(N, H, W)`` (grey), ``(N, H, W, C)`` or ``(N, C, H, W)``, of ``uint8`` (0 to 255),
``bool``, or floats in [0, 1], which are rounded to the 8-bit grid (a float image on a coarser
``k / (2**b - 1)`` grid keeps its values under ``num_bits: b``). The file is opened with
``allow_pickle=False``: it can hold arrays only, never code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset

import genzoo
from genzoo.errors import ConfigError
from genzoo.interfaces import ImageDataset
from genzoo.io.validation import check_bool, check_choice, check_path
from genzoo_plugins.data.image_tensors import UInt8Images
from genzoo_plugins.data.options import check_bit_depth, check_split

KEY = "data.npz"
LAYOUTS = ("auto", "nhwc", "nchw")
PATTERNS = {"nhwc": "n h w c -> n c h w", "nchw": "n c h w -> n c h w"}


def _codes(array: np.ndarray, file: Path, array_key: str, layout: str) -> torch.Tensor:
    """A validated array -> uint8 codes ``(N, C, H, W)``; errors name the file and the key."""
    where = f"{KEY}: array {array_key!r} in {str(file)!r}"
    if array.ndim not in (3, 4):
        raise ConfigError(
            f"{where} has shape {array.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)"
        )
    if 0 in array.shape:
        raise ConfigError(f"{where} has shape {array.shape}; expected at least one non-empty image")
    if array.dtype == np.uint8:
        codes = array
    elif array.dtype == np.bool_:
        codes = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ConfigError(
                f"{where} holds floats outside [0, 1] (min {np.nanmin(array)}, max {np.nanmax(array)}, "
                "or not finite); expected float images in [0, 1] or uint8"
            )
        codes = np.rint(array * 255).astype(np.uint8)
    else:
        raise ConfigError(f"{where} has dtype {array.dtype}; expected uint8, bool, or float in [0, 1]")
    if codes.ndim == 3:
        return rearrange(torch.from_numpy(np.ascontiguousarray(codes)), "n h w -> n 1 h w")
    if layout == "auto":
        first, last = codes.shape[1] in (1, 3), codes.shape[3] in (1, 3)
        if first == last:
            raise ConfigError(
                f"{where} has shape {codes.shape}, whose channel axis is ambiguous; set option "
                "'layout' to 'nhwc' or 'nchw'"
            )
        layout = "nchw" if first else "nhwc"
    tensor = torch.from_numpy(np.ascontiguousarray(codes))
    return rearrange(tensor, PATTERNS[layout]).contiguous()


@genzoo.component("dataset", KEY, description="images from NumPy .npz arrays (uint8 or float in [0, 1])")
class NpzImages(ImageDataset):
    """Images from a NumPy ``.npz`` file, one array per split.

    :param file: the ``.npz`` file.
    :param train_key, test_key: the arrays holding each split.
    :param layout: ``"auto"`` (channel axis of size 1 or 3, after N or last), ``"nhwc"`` or
        ``"nchw"`` for 4-d arrays; 3-d arrays are always grey ``(N, H, W)``.
    :param num_bits: bit depth, 1 to 8 (keeps the top bits of each 8-bit value).
    :param binarize: dynamic binarization, a fresh ``Bernoulli(value)`` at every read.
    :param hflip: random horizontal flips in the train split.
    """

    def __init__(
        self,
        *,
        file: str | Path,
        train_key: str = "train",
        test_key: str = "test",
        layout: str = "auto",
        num_bits: int = 8,
        binarize: bool = False,
        hflip: bool = False,
    ) -> None:
        self.num_bits = check_bit_depth(KEY, num_bits, binarize)
        self.binarize, self.hflip = binarize, check_bool("hflip", hflip, component=KEY)
        check_choice("layout", layout, LAYOUTS, component=KEY)
        path = check_path("file", file, component=KEY)
        if not path.is_file():
            raise ConfigError(f"{KEY}: option 'file': the .npz file {str(path)!r} was not found")
        try:
            with np.load(path, allow_pickle=False) as archive:
                available = list(archive.files)
                arrays = {}
                for split, array_key in (("train", train_key), ("test", test_key)):
                    if array_key not in available:
                        raise ConfigError(
                            f"{KEY}: option '{split}_key': {str(path)!r} has no array {array_key!r}; "
                            f"it holds {', '.join(repr(k) for k in available) or 'no arrays'}"
                        )
                    arrays[split] = _codes(archive[array_key], path, array_key, layout)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ConfigError(f"{KEY}: cannot read {str(path)!r} as an .npz file of arrays: {exc}") from exc
        if arrays["train"].shape[1:] != arrays["test"].shape[1:]:
            raise ConfigError(
                f"{KEY}: in {str(path)!r}, the train images {train_key!r} are (C, H, W) = "
                f"{tuple(arrays['train'].shape[1:])} but the test images {test_key!r} are "
                f"{tuple(arrays['test'].shape[1:])}; both splits need the same shape"
            )
        self.image_shape = tuple(arrays["train"].shape[1:])
        self._splits: dict[str, Dataset] = {
            split: UInt8Images(
                codes, num_bits=self.num_bits, binarize=binarize, hflip=self.hflip and split == "train"
            )
            for split, codes in arrays.items()
        }

    def split(self, name: str) -> Dataset:
        """The ``"train"`` or ``"test"`` split."""
        return self._splits[check_split(KEY, name)]
