"""The ``dataset`` contract as code: :func:`check_dataset`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import default_collate

from genzoo.interfaces import ImageDataset
from genzoo.plugin.registry import Registry
from genzoo.testing.subject import KeyOrFactory, Subject, draw, isolated

SPLITS = ("train", "test")
MAX_ITEMS = 4
"""Items read per split: the first, the second, the last and one in the middle."""


@isolated
def check_dataset(
    key_or_factory: KeyOrFactory,
    registry: Registry | None = None,
    *,
    lengths: Mapping[str, int] | None = None,
    **options: Any,
) -> None:
    """Check a dataset against the :class:`genzoo.ImageDataset` contract; raise
    :class:`AssertionError` naming the key, the split and what failed.

    - ``image_shape`` is ``(C, H, W)`` of positive integers, ``num_bits`` an integer in
      ``[1, 16]``;
    - ``split("train")`` and ``split("test")`` are non-empty datasets (of ``lengths[name]``
      items where ``lengths`` is given); a few items each (the first, second, middle and last)
      are float tensors ``(C, H, W)`` (or ``(image, label)`` tuples) in ``[0, 1]`` on the grid
      ``k / (2**num_bits - 1)``, binary when ``num_bits == 1``, and batch with the default
      collate function into ``(n, C, H, W)``.

    File-backed datasets need their files: point the options at a small copy made in the test
    (``tests/test_conformance.py`` writes one per built-in format).

    :param key_or_factory: a registered dataset key, or a factory not registered yet.
    :param registry: where the key is looked up (default: the process-wide registry).
    :param lengths: the expected number of items per split, e.g. ``{"train": 6, "test": 4}``.
    :param options: the dataset's options (``root``, ``file`` ...), over the entry's ``example``.
    """
    subject = Subject("dataset", key_or_factory, registry, options, check="check_dataset")
    dataset: ImageDataset = draw(0, subject.build)
    shape = tuple(getattr(dataset, "image_shape", ()))
    subject.check(
        len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape),
        f"image_shape is {getattr(dataset, 'image_shape', None)!r}; expected (C, H, W) of positive integers",
    )
    bits = getattr(dataset, "num_bits", None)
    subject.check(
        isinstance(bits, int) and not isinstance(bits, bool) and 1 <= bits <= 16,
        f"num_bits is {bits!r}; expected an integer in [1, 16]",
    )
    top = 2**bits - 1
    for name in SPLITS:
        case = f"split {name!r}"
        split = dataset.split(name)
        size = len(split)
        subject.check(size > 0, "the split is empty", case)
        if lengths is not None and name in lengths:
            subject.check(
                size == lengths[name], f"the split has {size} items; expected {lengths[name]}", case
            )
        images = []
        for index in sorted({0, min(1, size - 1), size // 2, size - 1})[:MAX_ITEMS]:
            at = f"{case}, item {index}"
            item = draw(index, lambda split=split, index=index: split[index])
            image = item[0] if isinstance(item, (tuple, list)) else item
            subject.shape(image, shape, "the image", at)
            subject.check(
                image.is_floating_point(), f"the image has dtype {image.dtype}; expected a float", at
            )
            subject.check(
                torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1,
                "the image leaves [0, 1]",
                at,
            )
            levels = image.double() * top
            subject.check(
                ((levels - levels.round()).abs() <= 1e-3).all(),
                f"the image is not on the grid k / {top} of num_bits={bits}",
                at,
            )
            images.append(image)
        batch = default_collate(images)
        subject.shape(batch, (len(images), *shape), "a batch of the images (default collate)", case)
