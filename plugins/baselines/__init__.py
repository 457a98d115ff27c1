"""The standard components NVAE is compared against: a standard VAE, plain conv residual cells,
a directly parameterized normal posterior, and "none" for gates and regularizers.

One module per component, declared where it is defined (``@genzoo.component``); this plugin's
``genzoo_register`` hook adds them.
"""

from __future__ import annotations

import genzoo

GENZOO_PLUGIN_API = 1


@genzoo.hookimpl
def genzoo_register(registry: genzoo.Registry) -> None:
    # Imported here, not at the top: listing the built-in plugins must not load torch.
    from genzoo_plugins.baselines import conv_cell, no_regularizer, none_gate, plain_normal, standard_vae

    registry.add_declared(none_gate, conv_cell, plain_normal, no_regularizer, standard_vae)
