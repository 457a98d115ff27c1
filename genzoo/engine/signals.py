"""Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM (what schedulers and torchrun send).

The first signal only sets a flag; the trainer finishes the current step, writes a checkpoint and
returns with status ``interrupted``. A second Ctrl-C (SIGINT) interrupts at once
(``KeyboardInterrupt``); a repeated SIGTERM does not, as a scheduler may send more than one (a
preemption, then the job's checkpoint signal, which a launcher's job turns into SIGTERM:
:mod:`genzoo.experiment.job`), and the checkpoint must still be written.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """A context manager that turns SIGINT/SIGTERM into a stop request while it is active.

    Signal handlers can only be installed from the main thread; elsewhere it does nothing but
    still offers :meth:`request` for programmatic stops.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def request(self, signum: int = signal.SIGTERM) -> None:
        self.requested = signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt(f"second signal {signal.Signals(signum).name}: stopping at once")
        if self.requested is None:
            self.requested = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
