"""The ``dataset`` kind: a source of train and test images."""

from __future__ import annotations

import abc

from torch.utils.data import Dataset


class ImageDataset(abc.ABC):
    """A named image dataset with a train and a test split.

    Contract:

    - ``image_shape``: ``(C, H, W)`` of the images the splits yield.
    - ``num_bits``: bit depth of the pixels (1 for binarized data, 8 for photos); it decides
      which output likelihoods fit and how bits/dim are counted.
    - ``split(name)`` with ``name`` in ``("train", "test")`` returns a
      :class:`torch.utils.data.Dataset` whose items are float tensors ``(C, H, W)`` in
      ``[0, 1]`` on the grid ``k / (2**num_bits - 1)`` (or ``(image, label)`` tuples).
    - Missing files raise :class:`genzoo.ConfigError` naming the files and where to put them.
    """

    image_shape: tuple[int, int, int]
    num_bits: int

    @abc.abstractmethod
    def split(self, name: str) -> Dataset:
        """The ``"train"`` or ``"test"`` split."""
