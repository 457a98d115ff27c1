"""CIFAR-10 (Krizhevsky 2009) through torchvision: 50,000 train and 10,000 test images, 3x32x32.

As in NVAE's official pipeline, the train split is augmented with random horizontal flips
(``hflip``) and the test split is not; pixels are 8-bit. torchvision reads the Python-pickle
batches of the official archive from ``root/cifar-10-batches-py`` (``root``: ``data/cifar10``, or
``$GENZOO_DATA/cifar10``: :mod:`~genzoo_plugins.data.options`); it downloads them when
``download`` is set and the network allows it. Offline, put the extracted folder (or the archive)
in ``root`` yourself.
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from torch.utils.data import Dataset

import genzoo
from genzoo.errors import ConfigError
from genzoo.interfaces import ImageDataset
from genzoo.io.validation import check_bool, check_int
from genzoo_plugins.data.image_tensors import UInt8Images
from genzoo_plugins.data.options import DOWNLOAD_HINT, check_split, data_root, elsewhere, folder_text

KEY = "data.cifar10"
FOLDER = "cifar-10-batches-py"
FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
ARCHIVE = "cifar-10-python.tar.gz"


def _layout(root: Path) -> str:
    return (
        f"{folder_text(root / FOLDER)} holding {', '.join(FILES)} (the extracted {ARCHIVE} from "
        "https://www.cs.toronto.edu/~kriz/cifar.html; with the archive itself in "
        f"{str(root)!r}, 'download: true' only extracts it)"
    )


@genzoo.component("dataset", KEY, description="CIFAR-10 3x32x32 via torchvision")
class CIFAR10(ImageDataset):
    """CIFAR-10, 3x32x32, 8-bit, via torchvision.

    :param root: folder holding ``cifar-10-batches-py/``; a root in ``data/`` is read under
        ``$GENZOO_DATA`` when that is set.
    :param download: download (or extract) with torchvision when the files are missing.
    :param hflip: random horizontal flips in the train split (NVAE's augmentation).
    :param num_bits: bit depth, 1 to 8 (keeps the top bits of each byte).
    """

    image_shape = (3, 32, 32)

    def __init__(
        self,
        *,
        root: str | Path = "data/cifar10",
        download: bool = False,
        hflip: bool = True,
        num_bits: int = 8,
    ) -> None:
        self.root = data_root(KEY, root)
        self.download = check_bool("download", download, component=KEY)
        self.hflip = check_bool("hflip", hflip, component=KEY)
        self.num_bits = check_int("num_bits", num_bits, minimum=1, maximum=8, component=KEY)
        self._splits: dict[str, Dataset] = {}
        if self._missing() and self.download:
            self._download()  # now, so that a failure shows when the experiment is validated
        missing = self._missing()
        if missing:
            raise ConfigError(
                f"{KEY}: CIFAR-10 was not found under option 'root' = {str(self.root)!r} (missing "
                f"{', '.join(missing)}). Expected {_layout(self.root)}; or {DOWNLOAD_HINT}. {elsewhere()}."
            )

    def _missing(self) -> list[str]:
        return [name for name in FILES if not (self.root / FOLDER / name).is_file()]

    def _download(self) -> None:
        from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

        try:
            TorchvisionCIFAR10(str(self.root), train=True, download=True)
        except Exception as exc:  # no network, a proxy, a mirror down: all mean "put the files"
            raise ConfigError(
                f"{KEY}: downloading CIFAR-10 into {str(self.root / FOLDER)!r} failed "
                f"({type(exc).__name__}: {exc}). Put {_layout(self.root)} instead. {elsewhere()}."
            ) from exc

    def split(self, name: str) -> Dataset:
        """The ``"train"`` or ``"test"`` split, loaded into memory on first use."""
        check_split(KEY, name)
        if name not in self._splits:
            from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

            try:
                data = TorchvisionCIFAR10(str(self.root), train=name == "train", download=self.download)
            except Exception as exc:  # no network, or corrupted files: the same fix either way
                raise ConfigError(
                    f"{KEY}: cannot load CIFAR-10 from option 'root' = {str(self.root)!r} "
                    f"({type(exc).__name__}: {exc}). Expected {_layout(self.root)}."
                ) from exc
            codes = rearrange(torch.from_numpy(data.data), "n h w c -> n c h w").contiguous()
            self._splits[name] = UInt8Images(
                codes, num_bits=self.num_bits, hflip=self.hflip and name == "train"
            )
        return self._splits[name]
