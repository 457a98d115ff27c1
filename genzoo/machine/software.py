"""The software a process runs: genzoo's version and source commit, torch, CUDA and Python.

A run's figures are a function of its config, seed and *commit* (and of torch's kernels), so
every record a run or a command on a trained run writes (``results.json``, ``genzoo
evaluate``'s JSON, the model card) carries :func:`software`. The commit is found, in order:

- where genzoo is imported from a git work tree (a checkout, an editable install): that tree's
  ``HEAD`` and whether tracked files differ from it (``dirty``), asked of ``git`` itself;
- where genzoo was installed by pip from a git URL: the commit pip recorded (PEP 610's
  ``direct_url.json``, read with ``importlib.metadata``);
- otherwise none (a wheel, or a copy installed from a folder): ``commit`` is None, and the
  record says where the install came from when pip recorded it.
"""

from __future__ import annotations

import functools
import json
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def software() -> dict[str, Any]:
    """``{"genzoo", "commit", "dirty", "source", "torch", "cuda", "python"}`` for this
    process; ``commit``, ``dirty``, ``source`` and ``cuda`` may be None. Cached: asked once."""
    return dict(_software())


@functools.cache
def _software() -> dict[str, Any]:
    import torch

    return {
        "genzoo": _version(),
        **(_git_source(PACKAGE_DIR) or _pip_source()),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }


def describe(record: dict[str, Any]) -> str:
    """One line: ``genzoo 0.1.0 (commit 1a2b3c4d5e6f, with local changes), torch 2.5.1, CUDA 12.4,
    Python 3.11.9``."""
    commit = record.get("commit")
    source = record.get("source")
    where = f"commit {commit[:12]}" if commit else "no commit known" + (f", from {source}" if source else "")
    if commit and record.get("dirty"):
        where += ", with local changes"
    parts = [f"genzoo {record.get('genzoo')} ({where})", f"torch {record.get('torch')}"]
    if record.get("cuda"):
        parts.append(f"CUDA {record['cuda']}")
    parts.append(f"Python {record.get('python')}")
    return ", ".join(parts)


def _version() -> str:
    try:
        return distribution("genzoo").version
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _git_source(package_dir: Path) -> dict[str, Any] | None:
    """The commit of the git work tree that holds ``package_dir``, if git tracks the package
    there (its ``__init__.py``)."""
    top = _git(package_dir, "rev-parse", "--show-toplevel")
    if top is None or _git(package_dir, "ls-files", "--error-unmatch", "--", "__init__.py") is None:
        return None  # not in a work tree, or an installed copy in one (a virtualenv in a checkout)
    commit = _git(package_dir, "rev-parse", "HEAD")
    if commit is None:  # a repository without a commit yet
        return None
    changes = _git(package_dir, "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit.strip(),
        "dirty": None if changes is None else bool(changes.strip()),
        "source": f"git work tree {top.strip()}",
    }


def _pip_source() -> dict[str, Any]:
    """What pip recorded of where it installed genzoo from (PEP 610)."""
    try:
        text = distribution("genzoo").read_text("direct_url.json")
        record = json.loads(text) if text else {}
    except (PackageNotFoundError, ValueError):
        record = {}
    vcs = record.get("vcs_info") if isinstance(record, dict) else None
    commit = vcs.get("commit_id") if isinstance(vcs, dict) else None
    url = record.get("url") if isinstance(record, dict) else None
    return {"commit": commit, "dirty": False if commit else None, "source": url}
