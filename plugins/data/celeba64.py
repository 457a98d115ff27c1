"""CelebA at 64x64 (Liu et al. 2015) with NVAE's preprocessing (NVAE, Sec. 5; official datasets.py).

Each aligned 178x218 image is cropped to the 148x148 box ``(left 15, top 40, right 163,
bottom 188)`` -- the face region of Larsen et al. 2016, five pixels below the exact centre --
then resized to 64x64 (bilinear with antialiasing, as torchvision's ``Resize``). Images of any
other size are center-cropped to a square instead. The train split gets random horizontal flips.
NVAE evaluates on CelebA's *validation* partition (its ``validation.lmdb`` holds 19,867
images), hence ``test_split: valid`` by default; ``test`` selects the official test partition.

Files: torchvision's layout, ``root/celeba/img_align_celeba/*.jpg`` and
``root/celeba/list_eval_partition.txt``; ``root`` may also be the ``celeba`` folder itself
(``root``: ``data/celeba``, or ``$GENZOO_DATA/celeba``: :mod:`~genzoo_plugins.data.options`).
torchvision's download (``download: true``) reads from Google Drive, which often refuses it (a
daily quota) and needs the ``gdown`` package; the error then says which files to put where.
Without the partition file, the standard partition by file number is used (train 1-162770,
valid 162771-182637, test 182638-202599). Images are read from disk at each access.
"""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

import genzoo
from genzoo.errors import ConfigError
from genzoo.interfaces import ImageDataset
from genzoo.io.validation import check_bool, check_choice, check_int
from genzoo_plugins.data.image_tensors import ImageFiles
from genzoo_plugins.data.options import DOWNLOAD_HINT, check_split, data_root, elsewhere, folder_text

KEY = "data.celeba64"
IMAGES = "img_align_celeba"
PARTITION = "list_eval_partition.txt"
ALIGNED_SIZE = (178, 218)
FACE_BOX = (15, 40, 163, 188)  # official CropCelebA64: 148x148
PARTITIONS = {"train": 0, "valid": 1, "test": 2}
# the standard partition by file number, for folders without list_eval_partition.txt
LAST_OF_PARTITION = {0: 162770, 1: 182637, 2: 202599}


def crop_face(image: Image.Image, *, size: int = 64) -> Image.Image:
    """NVAE's CelebA 64 preprocessing: the 148x148 face box, then resize to ``size``."""
    if image.size == ALIGNED_SIZE:
        image = image.crop(FACE_BOX)
    else:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    return image.resize((size, size), Image.Resampling.BILINEAR)


def _layout(root: Path) -> str:
    return (
        f"{folder_text(root / 'celeba' / IMAGES)} holding the aligned JPEGs 000001.jpg ... 202599.jpg "
        f"(img_align_celeba.zip from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, extracted), and "
        f"optionally {str(root / 'celeba' / PARTITION)!r}"
    )


@genzoo.component("dataset", KEY, description="CelebA 64x64 with NVAE's crop (148 box, resize)")
class CelebA64(ImageDataset):
    """CelebA, 3x64x64, 8-bit, cropped and resized as NVAE does.

    :param root: folder holding ``celeba/img_align_celeba/`` (or holding ``img_align_celeba/``); a
        root in ``data/`` is read under ``$GENZOO_DATA`` when that is set.
    :param download: download with torchvision when the files are missing (Google Drive; needs
        network and the ``gdown`` package, and often fails on Drive's quota).
    :param test_split: the partition used as the test split: ``"valid"`` (NVAE) or ``"test"``.
    :param hflip: random horizontal flips in the train split (NVAE's augmentation).
    :param num_bits: bit depth, 1 to 8 (keeps the top bits of each byte).
    """

    image_shape = (3, 64, 64)

    def __init__(
        self,
        *,
        root: str | Path = "data/celeba",
        download: bool = False,
        test_split: str = "valid",
        hflip: bool = True,
        num_bits: int = 8,
    ) -> None:
        self.root = data_root(KEY, root)
        check_bool("download", download, component=KEY)
        check_choice("test_split", test_split, ("valid", "test"), component=KEY)
        self.hflip = check_bool("hflip", hflip, component=KEY)
        self.num_bits = check_int("num_bits", num_bits, minimum=1, maximum=8, component=KEY)
        base = self._find() or (self._download() if download else None)
        if base is None:
            raise ConfigError(
                f"{KEY}: CelebA was not found under option 'root' = {str(self.root)!r}. Expected "
                f"{_layout(self.root)}; or {DOWNLOAD_HINT} (Google Drive: often refused). {elsewhere()}."
            )
        partition = self._partition(base)
        wanted = {"train": PARTITIONS["train"], "test": PARTITIONS[test_split]}
        self.files = {
            name: [base / IMAGES / file for file, part in partition if part == code]
            for name, code in wanted.items()
        }
        for name, files in self.files.items():
            if not files:
                raise ConfigError(
                    f"{KEY}: the {name} split (CelebA partition {wanted[name]}) of {str(base)!r} is empty; "
                    f"expected {_layout(self.root)}"
                )

    def _find(self) -> Path | None:
        for base in (self.root / "celeba", self.root):
            if (base / IMAGES).is_dir():
                return base
        return None

    def _download(self) -> Path | None:
        from torchvision.datasets import CelebA

        try:
            CelebA(str(self.root), split="all", download=True)
        except Exception as exc:  # no network, Drive's quota, missing gdown: all mean "put the files"
            raise ConfigError(
                f"{KEY}: downloading CelebA into {str(self.root / 'celeba')!r} failed "
                f"({type(exc).__name__}: {exc}); torchvision downloads it from Google Drive, which "
                "often refuses (a daily quota) and needs the gdown package. Download it by hand "
                f"instead: expected {_layout(self.root)}. {elsewhere()}."
            ) from exc
        return self._find()

    def _partition(self, base: Path) -> list[tuple[str, int]]:
        """``(file name, partition code)`` for every image, from the file or by file number."""
        listed = base / PARTITION
        if listed.is_file():
            rows = [line.split() for line in listed.read_text().splitlines() if line.strip()]
            bad = [r for r in rows if len(r) != 2 or r[1] not in ("0", "1", "2")]
            if bad:
                raise ConfigError(
                    f"{KEY}: {str(listed)!r} has a malformed line {' '.join(bad[0])!r}; "
                    "expected 'NNNNNN.jpg P' with P in 0 (train), 1 (valid), 2 (test)"
                )
            return [(name, int(code)) for name, code in rows]
        files = sorted(p.name for p in (base / IMAGES).iterdir() if p.suffix.lower() in (".jpg", ".png"))
        unnumbered = [name for name in files if not Path(name).stem.isdigit()]
        if unnumbered:
            raise ConfigError(
                f"{KEY}: {str(base / IMAGES)!r} has no {PARTITION} and {unnumbered[0]!r} is not "
                "numbered like CelebA's files (000001.jpg ...); add the partition file"
            )

        def code(name: str) -> int:
            number = int(Path(name).stem)
            return next((c for c, last in LAST_OF_PARTITION.items() if number <= last), 2)

        return [(name, code(name)) for name in files]

    def split(self, name: str) -> Dataset:
        """The ``"train"`` or ``"test"`` split; images are read from disk at each access."""
        check_split(KEY, name)
        return ImageFiles(
            self.files[name],
            functools.partial(crop_face, size=self.image_shape[1]),
            mode="RGB",
            key=KEY,
            num_bits=self.num_bits,
            hflip=self.hflip and name == "train",
        )
