"""Import paths that moved when the package was regrouped by layer keep their old name for one
release (``genzoo._moved``): importing one warns with a ``DeprecationWarning`` that names the new
path, and gives the very module at the new path. CHANGELOG.md lists them."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from genzoo._moved import MOVED

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_import_path_warns_and_gives_the_module_at_its_new_path(old):
    new = MOVED[old]
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__spec__.name == new  # the alias leaves the module's own spec alone
    assert not (ROOT / (old.replace(".", "/") + ".py")).exists()  # no file left at the old path


def test_names_imported_from_an_old_path_are_the_new_ones():
    sys.modules.pop("genzoo.registry", None)
    with pytest.warns(DeprecationWarning):
        from genzoo.registry import Registry  # noqa: PLC0415 (the point of the test)
    from genzoo.plugin.registry import Registry as moved

    assert Registry is moved
    sys.modules.pop("genzoo.kinds", None)
    with pytest.warns(DeprecationWarning):
        from genzoo.kinds import KIND_NAMES  # noqa: PLC0415
    assert "cell" in KIND_NAMES
