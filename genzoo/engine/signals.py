"""Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM (what schedulers and torchrun send).

The first signal only sets a flag; the trainer finishes the current step and writes a checkpoint.
Then a SIGTERM (or :meth:`genzoo.engine.Trainer.request_stop`) returns the run's row with status
``interrupted``: a scheduler's stop is not an error, and launchers requeue the run. A Ctrl-C is
the user's, so it stops the caller too: ``train()`` raises :class:`RunInterrupted`, a
``KeyboardInterrupt``, once the checkpoint is written (``genzoo run`` catches it, says so and
exits with 130). A second Ctrl-C interrupts at once (a plain ``KeyboardInterrupt``, no
checkpoint); a repeated SIGTERM does not, as a scheduler may send more than one (a preemption,
then the job's checkpoint signal, which a launcher's job turns into SIGTERM:
:mod:`genzoo.experiment.run.job`), and the checkpoint must still be written.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a run after the step in flight, and its checkpoint is written:
    ``train()`` raises this ``KeyboardInterrupt`` instead of returning, so that a script stops
    where the user stopped it. ``results`` is the run's row (status ``interrupted``, also in
    ``results.json``); calling ``train()`` again with the same folder resumes the run."""

    def __init__(self, results: dict[str, Any]) -> None:
        super().__init__(
            f"Ctrl-C: stopped at step {results.get('step')}; the checkpoint is written, "
            "training again in the same folder resumes"
        )
        self.results = results


class StopSignals:
    """A context manager that turns SIGINT/SIGTERM into a stop request while it is active.

    Signal handlers can only be installed from the main thread; elsewhere it does nothing but
    still offers :meth:`request` for programmatic stops. A signal the process ignores stays
    ignored, as POSIX tools leave it: a shell starts a background job (``cmd &``) with SIGINT
    ignored, so that a Ctrl-C at the terminal stops the foreground job and not that one.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def request(self, signum: int = signal.SIGTERM) -> None:
        self.requested = signum

    @property
    def by_user(self) -> bool:
        """Whether the stop came from Ctrl-C (SIGINT), the user's, rather than a scheduler's."""
        return self.requested == signal.SIGINT

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt(f"second signal {signal.Signals(signum).name}: stopping at once")
        if self.requested is None:
            self.requested = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                if signal.getsignal(signum) is signal.SIG_IGN:
                    continue  # ignored by whoever started us (a background job's SIGINT): stays so
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
