"""Writing files so that a kill at any moment leaves either the old or the new file, never half
of one: write to a temporary file in the same folder, flush and fsync it, then ``os.replace``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from genzoo.errors import GenzooError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise GenzooError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise GenzooError(
            f"cannot write {path}: {exc.strerror or exc}; the previous version is left intact"
        ) from exc


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
