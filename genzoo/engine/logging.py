"""What a run writes while it trains: a JSONL metrics log, the same scalars to its trackers
(TensorBoard when it is installed, or those ``logging.backends`` names: MLflow, W&B; see
:mod:`.trackers`), and a tqdm progress bar (step, loss, bits/dim, images/s, ETA).

Only the main process (rank 0) gets a :class:`RunLogger` that writes; the others get one with
``enabled=False`` that does nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from genzoo.engine.config import LoggingConfig
from genzoo.engine.trackers import TrackedRun, Tracker, build_trackers, scalar
from genzoo.errors import GenzooError
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
    ``kind`` ``train``, ``eval`` or ``curve``, ``step`` and wall ``time``) and to its trackers.

    :param trackers: the :class:`~genzoo.engine.trackers.Tracker` objects to feed, not started
        yet (default: those of ``LoggingConfig()``, TensorBoard where it is installed). They are
        started here with ``name`` and ``run_config``; those that keep a record elsewhere leave
        their ids in ``trackers.json``, which a resumed run (``start_step > 0``) hands back to
        them, and are then not sent again the steps they had before the stop. A tracker that
        fails while the run trains is dropped with a warning (``metrics.jsonl`` has everything);
        one that cannot start stops the run before it trains, with a :class:`genzoo.GenzooError`.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        total_steps: int,
        start_step: int = 0,
        enabled: bool = True,
        progress_bar: bool = True,
        trackers: Sequence[Tracker] | None = None,
        name: str = "",
        run_config: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> None:
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self._file = None
        self._bar = None
        self._trackers: list[tuple[Tracker, dict[str, int]]] = []  # (tracker, kind -> steps it has)
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        paths = RunPaths(self.out_dir)
        logged_before = _truncate_log(paths.metrics, start_step)
        run = TrackedRun(
            name=name or self.out_dir.name,
            out_dir=self.out_dir,
            config=run_config or {},
            start_step=start_step,
        )
        self._start_trackers(
            build_trackers(LoggingConfig()) if trackers is None else trackers, run, logged_before
        )
        self._file = open(paths.metrics, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if progress_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total_steps, initial=start_step, desc=description, unit="step", dynamic_ncols=True
            )

    def _start_trackers(
        self, trackers: Sequence[Tracker], run: TrackedRun, logged_before: dict[str, int]
    ) -> None:
        """Start each tracker (continuing its record of the last session when the run resumes) and
        keep their ids in ``trackers.json``."""
        path = RunPaths(self.out_dir).trackers
        previous = _read_trackers(path) if run.start_step > 0 else {}
        state = dict(previous)
        for tracker in trackers:
            try:
                ids = tracker.start(dataclasses.replace(run, previous=previous.get(tracker.name)))
            except GenzooError:
                self.close("failed")
                raise
            except Exception as exc:
                self.close("failed")
                raise GenzooError(
                    f"logging.backends: the {tracker.name} tracker could not start: {type(exc).__name__}: {exc}"
                ) from exc
            if ids:
                state[tracker.name] = ids
            self._trackers.append((tracker, logged_before if tracker.continued else {}))
        if _read_trackers(path) != state:
            atomic_write_text(path, json.dumps(state, indent=2))

    def log(self, kind: str, step: int, metrics: dict[str, Any]) -> None:
        """Append one record and send its scalars to the trackers (as ``kind/<name>``)."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": int(step), "time": time.time(), **json_safe(metrics)}
        assert self._file is not None
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        scalars = {name: number for name, value in metrics.items() if (number := scalar(value)) is not None}
        for tracker, had in list(self._trackers):
            if int(step) > had.get(kind, -1):
                self._send(tracker, "log_scalars", kind, int(step), scalars)

    def log_images(self, images: Sequence[tuple[str, Path]], step: int) -> None:
        """Send the image files ``(name, path)`` that exist (the evaluation's grids) to the trackers."""
        for name, path in images:
            if self.enabled and Path(path).is_file():
                for tracker, _ in list(self._trackers):
                    self._send(tracker, "log_image", name, Path(path), int(step))

    def log_final(self, results: Mapping[str, Any], step: int) -> None:
        """Send the run's row of results (``results.json``) to the trackers."""
        for tracker, _ in list(self._trackers):
            self._send(tracker, "log_final", results, int(step))

    def _send(self, tracker: Tracker, method: str, *args: Any) -> None:
        try:
            getattr(tracker, method)(*args)
        except Exception as exc:  # a tracker's server down must not cost days of training
            warnings.warn(
                f"the {tracker.name} tracker failed ({type(exc).__name__}: {exc}); the run goes on "
                f"without it (metrics.jsonl in {self.out_dir} has every record)",
                RuntimeWarning,
                stacklevel=3,
            )
            self._trackers = [(t, had) for t, had in self._trackers if t is not tracker]
            self._close_tracker(tracker, "failed")

    def progress(self, step: int, postfix: dict[str, float]) -> None:
        """Move the bar to ``step`` and show ``postfix`` (loss, bits/dim, images/s)."""
        if self._bar is None:
            return
        self._bar.update(step - self._bar.n)
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def close(self, status: str = "finished") -> None:
        """Close the bar, the log and the trackers, telling them how the run ended (``status``:
        ``finished``, ``interrupted``, ``diverged`` or ``failed``)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        trackers, self._trackers = self._trackers, []
        for tracker, _ in trackers:
            self._close_tracker(tracker, status)
        if self._file is not None:
            self._file.close()
            self._file = None

    def _close_tracker(self, tracker: Tracker, status: str) -> None:
        try:
            tracker.close(status)
        except Exception as exc:
            warnings.warn(f"the {tracker.name} tracker failed to close: {exc}", RuntimeWarning, stacklevel=3)


def _read_trackers(path: Path) -> dict[str, Any]:
    """``trackers.json`` (an empty mapping when there is none or it cannot be read: the trackers
    then start new records)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def _truncate_log(path: Path, start_step: int) -> dict[str, int]:
    """Drop what a resumed run will log again: records after the checkpoint's step, and a line
    cut short by a kill. Rewritten atomically, so a kill here loses nothing either. Returns the
    last step of each kind of record that was dropped: what the trackers already have."""
    if not path.exists():
        return {}
    kept, dropped = [], {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        step, kind = int(record.get("step", 0)), str(record.get("kind"))
        if step <= start_step:
            kept.append(line)
        else:
            dropped[kind] = max(step, dropped.get(kind, step))
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return dropped


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
