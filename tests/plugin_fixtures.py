"""Helpers for tests that need real installed plugins: a temporary ``*.dist-info`` folder with an
``entry_points.txt`` on ``sys.path``, exactly what ``pip install`` leaves behind, so that
``importlib.metadata`` finds it. Nothing about discovery is mocked."""

from __future__ import annotations

import textwrap
from pathlib import Path

from genzoo import ENTRY_POINT_GROUP


def make_distribution(
    root: Path,
    dist_name: str,
    version: str,
    modules: dict[str, str],
    entry_points: dict[str, str],
) -> Path:
    """Write an installed distribution into ``root`` (a ``site-packages``-like folder).

    :param modules: module file name (``"myplug.py"``) -> source code.
    :param entry_points: entry-point name -> ``"module:attr"`` or ``"module"`` in the group
        ``genzoo.plugins``.
    :returns: ``root``, to be put on ``sys.path`` or ``PYTHONPATH``.
    """
    root.mkdir(parents=True, exist_ok=True)
    for filename, source in modules.items():
        (root / filename).write_text(textwrap.dedent(source), encoding="utf-8")
    info = root / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


GATE_PLUGIN = """
    import genzoo
    from torch import nn

    class DoubleGate(genzoo.ChannelGate):
        '''Multiplies every channel by two.'''

        def forward(self, x):
            return 2 * x

    @genzoo.hookimpl
    def genzoo_register(registry):
        registry.add("gate", "{key}", DoubleGate)
"""
