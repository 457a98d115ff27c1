"""NVAE's components (Vahdat & Kautz 2020, "NVAE: A Deep Hierarchical Variational Autoencoder").

One module per idea of the paper; each declares its components where they are defined
(``@genzoo.component``), and this plugin's ``genzoo_register`` hook adds them.
"""

from __future__ import annotations

import genzoo

GENZOO_PLUGIN_API = 1


@genzoo.hookimpl
def genzoo_register(registry: genzoo.Registry) -> None:
    # Imported here, not at the top: listing the built-in plugins must not load torch.
    from genzoo_plugins.nvae import (
        bn_penalty,
        decoder_cell,
        encoder_cell,
        hierarchy,
        likelihoods,
        residual_normal,
        se,
        spectral,
    )

    registry.add_declared(
        se, encoder_cell, decoder_cell, residual_normal, likelihoods, spectral, bn_penalty, hierarchy
    )
