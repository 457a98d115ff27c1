"""What a run writes while it trains: a JSONL metrics log, TensorBoard scalars when TensorBoard
is installed, and a tqdm progress bar (step, loss, bits/dim, images/s, ETA).

Only the main process (rank 0) gets a :class:`RunLogger` that writes; the others get one with
``enabled=False`` that does nothing.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from genzoo.io.atomic import atomic_write_text
from genzoo.io.run_layout import RunPaths


def json_safe(value: Any) -> Any:
    """JSON-safe scalars: tensors to numbers; NaN and infinities as strings (valid JSON)."""
    if hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


class RunLogger:
    """Metrics of one run, to ``<out_dir>/metrics.jsonl`` (one JSON object per line, with
    ``kind`` ``train`` or ``eval``, ``step`` and wall ``time``) and TensorBoard."""

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        total_steps: int,
        start_step: int = 0,
        enabled: bool = True,
        progress_bar: bool = True,
        tensorboard: bool = True,
        description: str | None = None,
    ) -> None:
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self._file = None
        self._writer = None
        self._bar = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        paths = RunPaths(self.out_dir)
        _truncate_log(paths.metrics, start_step)
        self._file = open(paths.metrics, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if tensorboard:
            self._writer = _tensorboard_writer(paths.tensorboard)
        if progress_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total_steps, initial=start_step, desc=description, unit="step", dynamic_ncols=True
            )

    def log(self, kind: str, step: int, metrics: dict[str, Any]) -> None:
        """Append one record and mirror its scalars to TensorBoard under ``kind/``."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": int(step), "time": time.time(), **json_safe(metrics)}
        assert self._file is not None
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for name, value in record.items():
                if name not in ("kind", "step", "time") and isinstance(value, (int, float)):
                    self._writer.add_scalar(f"{kind}/{name}", value, step)

    def progress(self, step: int, postfix: dict[str, float]) -> None:
        """Move the bar to ``step`` and show ``postfix`` (loss, bits/dim, images/s)."""
        if self._bar is None:
            return
        self._bar.update(step - self._bar.n)
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _truncate_log(path: Path, start_step: int) -> None:
    """Drop what a resumed run will log again: records after the checkpoint's step, and a line
    cut short by a kill. Rewritten atomically, so a kill here loses nothing either."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(record.get("step", 0)) <= start_step:
            kept.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # TensorBoard is optional
        return None
    return SummaryWriter(log_dir=str(folder))


def read_metrics(path: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, optionally only those of ``kind``."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the last line of a run that was killed mid-write
                if kind is None or record.get("kind") == kind:
                    records.append(record)
    return records
