"""The standard components NVAE is compared against: a standard VAE, plain conv residual cells,
a directly parameterized normal posterior, and "none" for gates and regularizers.

One module per component; each exposes ``register(registry)``, and this plugin's
``genzoo_register`` hook calls them in turn.
"""

from __future__ import annotations

import genzoo

GENZOO_PLUGIN_API = 1

COMPONENT_MODULES = (
    "none_gate",
    "conv_cell",
    "plain_normal",
    "no_regularizer",
    "standard_vae",
)


@genzoo.hookimpl
def genzoo_register(registry: genzoo.Registry) -> None:
    genzoo.register_modules(registry, __name__, COMPONENT_MODULES)
