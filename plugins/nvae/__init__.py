"""NVAE's components (Vahdat & Kautz 2020, "NVAE: A Deep Hierarchical Variational Autoencoder").

One module per idea of the paper; each exposes ``register(registry)``, and this plugin's
``genzoo_register`` hook calls them in turn.
"""

from __future__ import annotations

import genzoo

GENZOO_PLUGIN_API = 1

COMPONENT_MODULES = (
    "se",
    "encoder_cell",
    "decoder_cell",
    "residual_normal",
    "likelihoods",
    "spectral",
    "bn_penalty",
    "hierarchy",
)


@genzoo.hookimpl
def genzoo_register(registry: genzoo.Registry) -> None:
    genzoo.register_modules(registry, __name__, COMPONENT_MODULES)
