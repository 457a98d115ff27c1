"""genzoo's built-in datasets: an embedded shapes dataset that needs no download, MNIST,
CIFAR-10, CelebA 64, and generic IDX files, NumPy ``.npz`` arrays and image folders.

Every split yields float images ``(C, H, W)`` in [0, 1] on the dataset's ``num_bits`` grid
(images only, no labels). One module per dataset, declared where it is defined
(``@genzoo.component``); this plugin's ``genzoo_register`` hook adds them.
"""

from __future__ import annotations

import genzoo

GENZOO_PLUGIN_API = 1


@genzoo.hookimpl
def genzoo_register(registry: genzoo.Registry) -> None:
    # Imported here, not at the top: listing the built-in plugins must not load torch.
    from genzoo_plugins.data import celeba64, cifar10, idx, image_folder, mnist, npz, shapes

    registry.add_declared(shapes, mnist, cifar10, celeba64, image_folder, idx, npz)
