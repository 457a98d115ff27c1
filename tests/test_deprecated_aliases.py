"""Import paths that moved keep their old name for one release, with a DeprecationWarning that
names the new one (CHANGELOG.md lists them)."""

from __future__ import annotations

import importlib
import sys

import pytest

MOVED = {
    "genzoo.kinds": ("genzoo.interfaces", "KIND_NAMES"),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_import_path_warns_and_gives_the_same_object(old):
    new, name = MOVED[old]
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
