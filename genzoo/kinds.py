"""Deprecated alias, kept for one release: the kinds are declared once, in
:mod:`genzoo.interfaces` (``from genzoo.interfaces import KIND_NAMES``)."""

import warnings

from genzoo.interfaces import KIND_NAMES

__all__ = ["KIND_NAMES"]

warnings.warn(
    "genzoo.kinds is deprecated and goes in the next release: import KIND_NAMES from genzoo.interfaces",
    DeprecationWarning,
    stacklevel=2,
)
