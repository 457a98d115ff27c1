"""Every component of this plugin meets its kind's contract, checked by genzoo.testing."""

import genzoo.testing
import pytest

registry, keys = genzoo.testing.load_plugin("genzoo_vdvae")


@pytest.mark.parametrize("key", keys)
def test_meets_its_contract(key):
    genzoo.testing.check(key, registry)
