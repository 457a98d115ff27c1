"""genzoo's built-in plugins (installed as the package ``genzoo_plugins``).

Each sub-package is one plugin: ``nvae`` holds NVAE's components, ``baselines`` the standard ones
they are compared against, ``data`` the datasets. Importing them loads no torch: each imports its
component modules when its ``genzoo_register`` hook runs.
"""

from __future__ import annotations

from types import ModuleType

from genzoo_plugins import baselines, data, nvae

BUILTIN_PLUGINS: dict[str, ModuleType] = {"nvae": nvae, "baselines": baselines, "data": data}
"""The plugins genzoo loads at start-up, in this order, by name."""
