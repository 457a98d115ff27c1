"""Images in IDX files, the format MNIST is distributed in (LeCun et al. 1998).

An IDX file is a big-endian header -- two zero bytes, a type code (``0x08`` for unsigned bytes),
the number of dimensions ``d`` -- then ``d`` 32-bit sizes and the values, row-major. Image files
are ``(count, rows, cols)`` of uint8. Files may be gzip-compressed (recognized by their first
bytes, whatever their name). Each split reads a file, or an index range of one, so a single file
can hold both splits (e.g. MNIST's test file: ``train_range: [0, 8000]``,
``test_range: [8000, 10000]``).
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path
from typing import IO, Any

import torch
from einops import rearrange
from torch.utils.data import Dataset

import genzoo
from genzoo.errors import ConfigError
from genzoo.interfaces import ImageDataset
from genzoo.io.validation import check_bool, check_path
from genzoo_plugins.data.image_tensors import UInt8Images
from genzoo_plugins.data.options import check_bit_depth, check_split, index_range

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08


def _open(path: Path) -> IO[bytes]:
    with open(path, "rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def _read_header(stream: IO[bytes], path: Path, key: str) -> tuple[int, ...]:
    head = stream.read(4)
    if len(head) < 4 or head[:2] != b"\0\0":
        raise ConfigError(f"{key}: {str(path)!r} is not an IDX file (it does not start with two zero bytes)")
    if head[2] != UBYTE:
        raise ConfigError(
            f"{key}: {str(path)!r} holds IDX type code {head[2]:#04x}; expected 0x08 (unsigned bytes)"
        )
    ndim = head[3]
    raw = stream.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise ConfigError(f"{key}: {str(path)!r} ends inside its IDX header")
    return struct.unpack(f">{ndim}I", raw)


def read_idx_shape(path: str | Path, *, key: str = "data.idx") -> tuple[int, ...]:
    """The dimensions an IDX file declares, reading its header only."""
    with _open(Path(path)) as stream:
        return _read_header(stream, Path(path), key)


def read_idx(path: str | Path, *, key: str = "data.idx") -> torch.Tensor:
    """The whole array of a uint8 IDX file (raw or gzip) as a uint8 tensor of its declared shape.

    :raises genzoo.ConfigError: naming the file if it is not a uint8 IDX file or is truncated.
    """
    path = Path(path)
    with _open(path) as stream:
        dims = _read_header(stream, path, key)
        body = stream.read()
    expected = math.prod(dims)
    if len(body) < expected:
        raise ConfigError(
            f"{key}: {str(path)!r} declares shape {dims} ({expected} bytes) but holds {len(body)} bytes"
        )
    return torch.frombuffer(bytearray(body[:expected]), dtype=torch.uint8).reshape(dims)


@genzoo.component("dataset", "data.idx", description="grey images from IDX files (the MNIST format)")
class IdxImages(ImageDataset):
    """Grey images from IDX files: a train and a test split, each a file or a range of one.

    Paths are taken as given, relative to ``root`` when that is set, and ``name.gz`` is tried when
    ``name`` is missing (and the reverse), so raw and compressed copies both work.

    :param train_file: IDX file of the training images ``(count, rows, cols)``.
    :param test_file: IDX file of the test images; defaults to ``train_file`` when
        ``test_range`` is given (one file, two disjoint ranges).
    :param root: folder the file names are relative to.
    :param train_range, test_range: ``[start, stop)`` image indices of each split in its file
        (default: the whole file). Ranges of one file must not overlap.
    :param num_bits: bit depth, 1 to 8 (keeps the top bits of each byte).
    :param binarize: dynamic binarization, a fresh ``Bernoulli(pixel / 255)`` draw at every read
        (then ``num_bits`` is 1).
    :param hflip: random horizontal flips in the train split.
    """

    key = "data.idx"

    def __init__(
        self,
        *,
        train_file: str | Path,
        test_file: str | Path | None = None,
        root: str | Path | None = None,
        train_range: list[int] | None = None,
        test_range: list[int] | None = None,
        num_bits: int = 8,
        binarize: bool = False,
        hflip: bool = False,
    ) -> None:
        key = self.key
        self.num_bits = check_bit_depth(key, num_bits, binarize)
        self.binarize, self.hflip = binarize, check_bool("hflip", hflip, component=key)
        self.root = None if root is None else check_path("root", root, component=key)
        if test_file is None and test_range is None:
            raise ConfigError(
                f"{key}: no test split; give 'test_file', or 'test_range' to hold out part of 'train_file'"
            )
        self.files = {"train": self._locate("train_file", train_file)}
        self.files["test"] = (
            self.files["train"] if test_file is None else self._locate("test_file", test_file)
        )
        shapes = {name: read_idx_shape(path, key=key) for name, path in self.files.items()}
        for name, dims in shapes.items():
            if len(dims) != 3:
                raise ConfigError(
                    f"{key}: {str(self.files[name])!r} ({name} split) has shape {dims}; "
                    "expected images (count, rows, cols)"
                )
        if shapes["train"][1:] != shapes["test"][1:]:
            raise ConfigError(
                f"{key}: the train images are {shapes['train'][1:]} but the test images are "
                f"{shapes['test'][1:]}; both splits need the same size"
            )
        self.ranges = {
            name: index_range(key, f"{name}_range", given, shapes[name][0], str(self.files[name]))
            for name, given in (("train", train_range), ("test", test_range))
        }
        same_file = self.files["train"].resolve() == self.files["test"].resolve()
        train, test = self.ranges["train"], self.ranges["test"]
        if same_file and max(train.start, test.start) < min(train.stop, test.stop):
            raise ConfigError(
                f"{key}: 'train_range' {[train.start, train.stop]} and 'test_range' "
                f"{[test.start, test.stop]} overlap in {str(self.files['train'])!r}; the test images "
                "must be held out"
            )
        self.image_shape = (1, *shapes["train"][1:])
        self._splits: dict[str, Dataset] = {}

    # -- where the files are ---------------------------------------------------------------
    def _search_dirs(self) -> list[Path]:
        return [self.root] if self.root is not None else [Path.cwd()]

    def _locate(self, option: str, name: Any) -> Path:
        """The existing file for ``name`` (raw or ``.gz``), or :meth:`_missing`'s error."""
        given = check_path(option, name, component=self.key)
        variants = [given, given.with_name(given.name[:-3])] if given.name.endswith(".gz") else []
        variants = variants or [given, given.with_name(given.name + ".gz")]
        dirs = [Path()] if given.is_absolute() else self._search_dirs()
        tried = [folder / variant for folder in dirs for variant in variants]
        for path in tried:
            if path.is_file():
                return path
        return self._missing(option, given, tried)

    def _missing(self, option: str, name: Path, tried: list[Path]) -> Path:
        looked = ", ".join(repr(str(p)) for p in tried)
        raise ConfigError(
            f"{self.key}: option {option!r}: the IDX file {str(name)!r} was not found (looked for {looked})"
        )

    # -- the splits ---------------------------------------------------------------------------
    def split(self, name: str) -> Dataset:
        """The ``"train"`` or ``"test"`` split (files are read on first use)."""
        check_split(self.key, name)
        if name not in self._splits:
            codes = self._codes(self.files[name])
            self._splits[name] = UInt8Images(
                codes,
                self.ranges[name],
                num_bits=self.num_bits,
                binarize=self.binarize,
                hflip=self.hflip and name == "train",
            )
        return self._splits[name]

    def _codes(self, path: Path) -> torch.Tensor:
        other = self._splits.get("train") or self._splits.get("test")
        if isinstance(other, UInt8Images) and self.files["train"] == self.files["test"]:
            return other.codes  # one file, two ranges: read it once
        return rearrange(read_idx(path, key=self.key), "n h w -> n 1 h w")
