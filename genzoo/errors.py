"""Errors a user can act on.

Every error genzoo raises on purpose derives from :class:`GenzooError`. The command line prints
its message alone and exits with code 2 (a traceback only with ``--debug``); anything else is a
bug in genzoo or a plugin and keeps its traceback.
"""

from __future__ import annotations


class GenzooError(Exception):
    """Base class: the message alone must tell the user what to change."""


class RegistryError(GenzooError):
    """A problem with a registry key or with what a plugin registered."""


class DuplicateKeyError(RegistryError):
    """The same (kind, key) was registered by two plugins."""


class UnknownKeyError(RegistryError):
    """A key is not registered under the requested kind."""


class WrongKindError(RegistryError):
    """A key exists, but under another kind than the one requested."""


class ComponentTypeError(RegistryError):
    """A factory returned an object that is not of its kind's interface."""


class PluginLoadError(GenzooError):
    """A plugin module could not be imported or its registration hook failed."""


class ConfigError(GenzooError, ValueError):
    """An invalid option or combination of options, named by file and key.

    Also a :class:`ValueError`: every check in :mod:`genzoo.io.validation` raises it, from an
    experiment file's settings down to a component's constructor arguments."""
