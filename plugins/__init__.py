"""genzoo's built-in plugins (installed as the package ``genzoo_plugins``).

Each sub-package is one plugin, listed in ``registry.yaml``: ``nvae`` holds NVAE's components,
``baselines`` the standard ones they are compared against.
"""
