"""genzoo's built-in datasets: an embedded shapes dataset that needs no download, MNIST,
CIFAR-10, CelebA 64, and generic IDX files, NumPy ``.npz`` arrays and image folders.

Every split yields float images ``(C, H, W)`` in [0, 1] on the dataset's ``num_bits`` grid
(images only, no labels). One module per dataset; each exposes ``register(registry)``, and this
plugin's ``genzoo_register`` hook calls them in turn.
"""

from __future__ import annotations

import genzoo

GENZOO_PLUGIN_API = 1

COMPONENT_MODULES = (
    "shapes",
    "mnist",
    "cifar10",
    "celeba64",
    "image_folder",
    "idx",
    "npz",
)


@genzoo.hookimpl
def genzoo_register(registry: genzoo.Registry) -> None:
    genzoo.register_modules(registry, __name__, COMPONENT_MODULES)
