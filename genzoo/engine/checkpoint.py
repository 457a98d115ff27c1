"""Checkpoints that survive a crash and load safely.

A checkpoint is written atomically: to a temporary file in the target's folder, flushed and
``fsync``-ed, then moved over the target with ``os.replace`` (atomic on POSIX and Windows) and
the folder ``fsync``-ed, so a reader sees the old checkpoint or the new one, never half of one.
Everything stored is tensors, numbers, strings, ``None`` and lists/dicts of them, so that
:func:`load_checkpoint` can use ``torch.load(weights_only=True)``, which runs no pickled code.

The random-number generators are part of the state (torch, every CUDA device, numpy and
python's ``random``) so that a resumed run draws the same noise as an uninterrupted one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genzoo.errors import GenzooError
from genzoo.io.atomic import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(GenzooError):
    """A checkpoint that cannot be read, or that does not fit the run resuming from it."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically and durably (see :mod:`genzoo.io.atomic`)."""
    return atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated zip, wrong file, or a pickle that is not weights-only
        raise CheckpointError(
            f"{path}: cannot read the checkpoint, it is corrupt, truncated or not a genzoo checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Move it away to "
            "restart this run from scratch; nothing else in the folder depends on it."
        ) from exc


def rng_state() -> dict[str, Any]:
    """The state of every random-number generator a run uses, as weights_only-safe values."""
    keys_name, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": keys_name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
