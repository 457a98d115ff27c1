"""MNIST, dynamically binarized, as NVAE trains and evaluates on it (NVAE, Sec. 5 and App. A).

Dynamic binarization: every read of an image draws each pixel afresh from
``Bernoulli(intensity / 255)``, in both splits, as the official data pipeline does; a model thus
never sees the same binary image twice. Images stay 28x28: NVAE pads them to 32x32 inside its
hierarchy and scores the 28x28 interior (D = 784 for bits/dim), so padding here would count the
border in the likelihood. ``binarize: false`` gives the 8-bit grey images instead.

Files: the image files of LeCun's distribution, ``train-images-idx3-ubyte`` and
``t10k-images-idx3-ubyte`` (raw or ``.gz``), in ``root`` (``data/mnist``, or
``$GENZOO_DATA/mnist``: :mod:`~genzoo_plugins.data.options`), or in ``root/MNIST/raw`` where
torchvision downloads them. Any pair of IDX files, or disjoint index ranges of one file, can serve
as the splits, e.g. the 10,000 test images alone as ``train_file: t10k-images-idx3-ubyte``,
``train_range: [0, 8000]``, ``test_range: [8000, 10000]``.
"""

from __future__ import annotations

from pathlib import Path

import genzoo
from genzoo.errors import ConfigError
from genzoo.io.validation import check_bool
from genzoo_plugins.data.idx import IdxImages
from genzoo_plugins.data.options import DOWNLOAD_HINT, data_root, elsewhere, folder_text

TRAIN_FILE = "train-images-idx3-ubyte"
TEST_FILE = "t10k-images-idx3-ubyte"


@genzoo.component("dataset", "data.mnist", description="MNIST 28x28, dynamically binarized (IDX files)")
class MNIST(IdxImages):
    """MNIST digits, 1x28x28, dynamically binarized (``num_bits`` 1) or 8-bit grey.

    :param root: folder holding the IDX files (also searched: ``root/MNIST/raw``); a root in
        ``data/`` is read under ``$GENZOO_DATA`` when that is set.
    :param train_file, test_file: file names (raw or ``.gz``) relative to ``root``.
    :param train_range, test_range: ``[start, stop)`` image indices of each split in its file.
    :param binarize: dynamic binarization (default, as NVAE); false for 8-bit grey images.
    :param download: download the files with torchvision when they are missing (needs network;
        off by default so that a run never reaches for the network unasked).
    """

    key = "data.mnist"

    def __init__(
        self,
        *,
        root: str | Path = "data/mnist",
        train_file: str | Path = TRAIN_FILE,
        test_file: str | Path = TEST_FILE,
        train_range: list[int] | None = None,
        test_range: list[int] | None = None,
        binarize: bool = True,
        download: bool = False,
    ) -> None:
        self.download = check_bool("download", download, component=self.key)
        self._wanted = list(dict.fromkeys(str(name) for name in (train_file, test_file)))
        super().__init__(
            train_file=train_file,
            test_file=test_file,
            root=data_root(self.key, root),
            train_range=train_range,
            test_range=test_range,
            num_bits=8,
            binarize=binarize,
        )

    def _search_dirs(self) -> list[Path]:
        return [self.root, self.root / "MNIST" / "raw"]

    def _missing(self, option: str, name: Path, tried: list[Path]) -> Path:
        if self.download:
            self._download()
            for path in tried:
                if path.is_file():
                    return path
        looked = ", ".join(repr(str(p)) for p in tried)
        one_file = (
            " With the test file alone, set 'train_file' to it and split it with "
            "'train_range'/'test_range', e.g. [0, 8000] and [8000, 10000]."
            if name.name.startswith(TRAIN_FILE)
            else ""
        )
        raise ConfigError(
            f"{self.key}: option {option!r}: the MNIST file {str(name)!r} was not found (looked for "
            f"{looked}). Put {self._what_to_put()} in {folder_text(self.root)}, or {DOWNLOAD_HINT}. "
            f"{elsewhere()}.{one_file}"
        )

    def _what_to_put(self) -> str:
        return f"the IDX file{'s' if len(self._wanted) > 1 else ''} {' and '.join(self._wanted)} (raw or .gz)"

    def _download(self) -> None:
        from torchvision.datasets import MNIST as TorchvisionMNIST

        root = self.root
        try:
            TorchvisionMNIST(str(root), train=True, download=True)
            TorchvisionMNIST(str(root), train=False, download=True)
        except Exception as exc:  # no network, a proxy, a mirror down: all mean "put the files"
            raise ConfigError(
                f"{self.key}: downloading MNIST into {str(root / 'MNIST' / 'raw')!r} failed "
                f"({type(exc).__name__}: {exc}). Put {self._what_to_put()} in {folder_text(root)} instead. "
                f"{elsewhere()}."
            ) from exc
