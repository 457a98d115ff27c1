"""Every component of this plugin meets its kind's contract (genzoo.testing), as genzoo's own suite
checks its built-in components."""

import genzoo
import genzoo.testing
import pytest

host = genzoo.PluginHost()
host.load_builtin()  # nvae.*, baselines.*, data.*: a hierarchy check can use them
host.load_module("genzoo_vdvae", source="python", name="vdvae")


@pytest.mark.parametrize("key", [entry.key for entry in host.registry.list("vdvae.*")])
def test_meets_its_contract(key):
    genzoo.testing.check(key, host.registry)
