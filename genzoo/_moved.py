"""Old import paths of modules that moved when the package was regrouped by layer, kept for one
release: importing one warns (``DeprecationWarning``, naming the new path) and gives the module
at its new path, the very same object. CHANGELOG.md lists the moves.

One finder on ``sys.meta_path`` serves them all, so the old names need no files of their own;
it is installed by ``import genzoo`` and imports nothing until an old name is imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED: dict[str, str] = {
    # the plugin system, and the kinds (declared in the interfaces)
    "genzoo.kinds": "genzoo.interfaces",
    "genzoo.registry": "genzoo.plugin.registry",
    "genzoo.hookspecs": "genzoo.plugin.hookspecs",
    "genzoo.discovery": "genzoo.plugin.discovery",
    "genzoo.spec": "genzoo.plugin.component_spec",
    "genzoo.run_info": "genzoo.plugin.run_info",
    # building blocks the plugins share
    "genzoo.activations": "genzoo.layers.activations",
    "genzoo.distributions": "genzoo.layers.distributions",
    "genzoo.composition": "genzoo.layers.composition",
    "genzoo.cpu_kernels": "genzoo.layers.cpu_kernels",
    # the machine a process trains on
    "genzoo.allocator": "genzoo.machine.allocator",
    "genzoo.cpu_share": "genzoo.machine.cpu_share",
    # files: atomic writes, the layout of run folders, value checks
    "genzoo.atomic": "genzoo.io.atomic",
    "genzoo.layout": "genzoo.io.run_layout",
    "genzoo.validation": "genzoo.io.validation",
    # the experiment layer: configuration, running, launching, reporting
    "genzoo.experiment.spec": "genzoo.experiment.config.spec",
    "genzoo.experiment.typed": "genzoo.experiment.config.typed",
    "genzoo.experiment.yamlio": "genzoo.experiment.config.yamlio",
    "genzoo.experiment.merging": "genzoo.experiment.config.merging",
    "genzoo.experiment.ablations": "genzoo.experiment.config.ablations",
    "genzoo.experiment.runner": "genzoo.experiment.run.runner",
    "genzoo.experiment.job": "genzoo.experiment.run.job",
    "genzoo.experiment.locks": "genzoo.experiment.run.locks",
    "genzoo.experiment.outputs": "genzoo.experiment.run.outputs",
    "genzoo.experiment.status": "genzoo.experiment.run.status",
    "genzoo.experiment.launcher": "genzoo.experiment.launch.launcher",
    "genzoo.experiment.launcher_config": "genzoo.experiment.launch.options",
    "genzoo.experiment.report_markdown": "genzoo.experiment.report.markdown",
    "genzoo.experiment.statistics": "genzoo.experiment.report.statistics",
    "genzoo.experiment.budget": "genzoo.experiment.report.budget",
    "genzoo.experiment.curves": "genzoo.experiment.report.curves",
    "genzoo.experiment.sampling": "genzoo.experiment.report.sampling",
}
"""Old module path -> new module path."""


class _Alias(importlib.abc.Loader):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{self.old} moved to {self.new}; the old path goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(self.new)
        self._spec = module.__spec__  # the import machinery sets __spec__ to the alias's: undone below
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec
        sys.modules[self.old] = module  # the new module itself, under its old name too


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds the old paths of :data:`MOVED`."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 (the finder protocol)
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(fullname, new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
