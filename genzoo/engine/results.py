"""A run's row of results: what :func:`genzoo.engine.train` returns and writes, once, to the
run folder's ``results.json`` when the run is over (finished, diverged, interrupted or failed).

The trainer is the only writer of that file; the caller adds its own fields up front (the
experiment runner: run name, seed, group, fingerprint ...), so the row is complete in one
atomic write and a reader never sees half of it.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping
from typing import Any

from genzoo.atomic import atomic_write_text
from genzoo.engine.logging import json_safe
from genzoo.layout import RunPaths

MIB = 2**20


def write_results(paths: RunPaths, row: Mapping[str, Any]) -> None:
    """``results.json``: the row, JSON-safe (non-finite numbers as strings), keys sorted."""
    atomic_write_text(
        paths.results, json.dumps(json_safe(dict(row)), indent=2, sort_keys=True, default=str) + "\n"
    )


def failed_row(paths: RunPaths, fields: Mapping[str, Any], exc: BaseException) -> dict[str, Any]:
    """The row of a run that crashed (a bug, out of memory); its traceback goes to ``error.txt``."""
    atomic_write_text(paths.error, "".join(traceback.format_exception(exc)))
    return {**fields, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}


def summary_line(row: Mapping[str, Any]) -> str:
    """``finished: test_bpd_elbo 4.5800, ...``: one line on how a run ended."""
    status = row.get("status", "finished")
    if status == "failed":
        return f"failed: {row.get('reason', '')}"
    figures = ", ".join(
        f"{k} {row[k]:.4f}"
        for k in ("test_bpd_elbo", "test_bpd_iw", "test_nats_elbo")
        if isinstance(row.get(k), float)
    )
    return status + (f": {figures}" if figures else "")
