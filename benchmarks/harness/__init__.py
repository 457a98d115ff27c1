"""What the benchmark scripts share: measurement and Markdown tables (:mod:`.measure`), the small
models and training step of the model-level benchmarks (:mod:`.small_models`), the official
paper-scale models (:mod:`.paper_models`), the engine's own training step (:mod:`.engine_step`),
and the worker processes that run one genzoo version's steps (:mod:`.step_processes`, the
parent's side, and ``step_worker.py``, the program it starts).

This module imports neither torch nor genzoo: the parent of the step workers and the GPU
session's planner use it before (or without) either.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository root: experiments/ and docs/ are read from it."""


def command_line() -> str:
    """How this process was started, as a user would type it from the repository root
    (``python -m benchmarks.cells.bench_cells --channels 32``)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    program = f"-m {spec.name}" if spec is not None else os.path.relpath(sys.argv[0])
    return " ".join(["python", program, *sys.argv[1:]])


def module_command(module: str, *args: str) -> list[str]:
    """The command that runs ``module`` (``benchmarks.model.bench_model``) as a script in a fresh
    process of this interpreter. ``python -m`` imports the package from the current folder: run
    it from the repository root, as the parent was, or with ``cwd=REPO``."""
    return [sys.executable, "-m", module, *args]
