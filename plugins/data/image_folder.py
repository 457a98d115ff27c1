"""Any folder of images: resized and center-cropped to a square, split by a seeded hold-out.

Files are found by extension (recursively by default) and sorted by path, then a seeded random
``test_fraction`` of them is held out for the test split, so the split depends on the folder's
contents and the seed only. Images are read and resized when an item is read (Pillow, bilinear
with antialiasing, as torchvision's ``Resize`` on PIL images, which NVAE uses).
"""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import Image, ImageOps
from torch.utils.data import Dataset

import genzoo
from genzoo.errors import ConfigError
from genzoo.interfaces import ImageDataset
from genzoo.io.validation import check_bool, check_choice, check_float, check_int, check_path
from genzoo_plugins.data.image_tensors import ImageFiles
from genzoo_plugins.data.options import check_split, holdout_indices

KEY = "data.image_folder"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MODES = {"RGB": 3, "L": 1}


def fit_square(image: Image.Image, *, size: int) -> Image.Image:
    """Resize so the shorter side is ``size``, then crop the centre ``size x size``."""
    return ImageOps.fit(image, (size, size), method=Image.Resampling.BILINEAR)


def find_images(root: Path, *, recursive: bool) -> list[Path]:
    """Image files under ``root`` by extension (case-insensitive), hidden files skipped, sorted."""
    candidates = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        p for p in candidates if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith(".")
    )


@genzoo.component("dataset", KEY, description="any folder of images, resized and center-cropped")
class ImageFolder(ImageDataset):
    """Every image in a folder, as ``image_size`` squares, with a seeded held-out test split.

    :param root: the folder.
    :param image_size: side of the square images.
    :param mode: ``"RGB"`` (3 channels) or ``"L"`` (grey, 1 channel).
    :param test_fraction: fraction of the images held out for test (rounded up; at least one).
    :param seed: seed of the hold-out draw.
    :param num_bits: bit depth, 1 to 8 (keeps the top bits of each byte).
    :param hflip: random horizontal flips in the train split.
    :param recursive: also take images from sub-folders.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        image_size: int = 32,
        mode: str = "RGB",
        test_fraction: float = 0.1,
        seed: int = 0,
        num_bits: int = 8,
        hflip: bool = False,
        recursive: bool = True,
    ) -> None:
        self.root = check_path("root", root, component=KEY)
        size = check_int("image_size", image_size, minimum=1, component=KEY)
        self.mode = check_choice("mode", mode, tuple(MODES), component=KEY)
        fraction = check_float(
            "test_fraction", test_fraction, 0, 1, open_low=True, open_high=True, component=KEY
        )
        check_int("seed", seed, minimum=0, component=KEY)
        self.num_bits = check_int("num_bits", num_bits, minimum=1, maximum=8, component=KEY)
        self.hflip = check_bool("hflip", hflip, component=KEY)
        check_bool("recursive", recursive, component=KEY)
        if not self.root.is_dir():
            raise ConfigError(f"{KEY}: option 'root': the image folder {str(self.root)!r} does not exist")
        files = find_images(self.root, recursive=recursive)
        if len(files) < 2:
            raise ConfigError(
                f"{KEY}: option 'root': {str(self.root)!r} holds {len(files)} image file(s); expected at "
                f"least 2 (one per split) with an extension among {', '.join(EXTENSIONS)}"
            )
        train, test = holdout_indices(len(files), fraction, seed)
        if len(train) == 0:
            raise ConfigError(
                f"{KEY}: option 'test_fraction' = {test_fraction} holds out all {len(files)} images of "
                f"{str(self.root)!r}; expected a fraction that leaves training images"
            )
        self.files = {"train": [files[i] for i in train], "test": [files[i] for i in test]}
        self.image_shape = (MODES[self.mode], size, size)
        self._prepare = functools.partial(fit_square, size=size)

    def split(self, name: str) -> Dataset:
        """The ``"train"`` or ``"test"`` split; images are read from disk at each access."""
        check_split(KEY, name)
        return ImageFiles(
            self.files[name],
            self._prepare,
            mode=self.mode,
            key=KEY,
            num_bits=self.num_bits,
            hflip=self.hflip and name == "train",
        )
