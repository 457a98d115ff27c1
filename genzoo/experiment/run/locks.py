"""One owner per run folder: advisory file locks that the operating system releases when their
process ends, however it ends.

A process that trains a run holds ``flock(LOCK_EX)`` on the run's ``run.lock``
(:attr:`genzoo.io.run_layout.RunPaths.lock`) and writes into it who it is (host, pid, job id, since
when). Another process that wants the run finds the lock taken, reads the owner and skips the
run, or waits for it. A process killed with SIGKILL, or whose node reboots, holds nothing any
more: the kernel (on NFS, the lock server) drops its lock, and the next process takes the run
over and resumes it from its checkpoint; the stale owner record left in the file is overwritten
then. Lock files are never removed: a removed file would let two processes lock two different
files of the same name.

``flock`` is used rather than ``fcntl`` record locks because a record lock is dropped when the
process closes *any* descriptor of the file, and because two ``flock`` descriptors in one
process exclude each other as two processes do. Linux NFS clients implement ``flock`` with
NFS byte-range locks, which the server arbitrates between hosts; Lustre needs the ``flock``
mount option (without it, :meth:`FileLock.acquire` raises an error naming the file).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from genzoo.errors import GenzooError

# A probe (``owner_of``) holds a shared lock for a few microseconds; a process that wants the
# lock tries again over this long before it concludes that another process owns it.
CONTENTION_RETRY_S = 0.2


@dataclass(frozen=True)
class Owner:
    """Who holds a lock: what the holder wrote into the lock file."""

    host: str
    pid: int
    job_id: str | None = None
    since: str = ""

    def describe(self) -> str:
        """``pid 4242 on node17 (job 123_4), since 2026-12-02 18:04:09``."""
        text = f"pid {self.pid} on {self.host}"
        if self.job_id:
            text += f" (job {self.job_id})"
        return text + (f", since {self.since}" if self.since else "")

    @classmethod
    def of_this_process(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), current_job_id(), time.strftime("%Y-%m-%d %H:%M:%S"))

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        try:
            doc = json.loads(text)
            return cls(str(doc["host"]), int(doc["pid"]), doc.get("job_id"), str(doc.get("since", "")))
        except (ValueError, KeyError, TypeError):
            return None


def current_job_id() -> str | None:
    """The scheduler's id of the job this process runs in (Slurm, or submitit's local
    executor), as submitit writes it (``<array job>_<task>`` for an array task); None outside
    a job."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")


def _lock_error(path: Path, exc: OSError) -> GenzooError:
    return GenzooError(
        f"cannot lock {path}: {exc.strerror or exc}. genzoo gives each run folder one owner with "
        "flock(2) locks, which this filesystem refuses (on Lustre, mount it with -o flock); choose "
        "an --out folder on a filesystem with locks"
    )


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing), held until :meth:`release`
    or until the process ends. With ``record_owner``, the holder writes :class:`Owner` into
    the file while it holds it, for :func:`owner_of` to report."""

    def __init__(self, path: str | os.PathLike, *, record_owner: bool = True) -> None:
        self.path = Path(path)
        self.record_owner = record_owner
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; returns whether it is now held by this object."""
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise GenzooError(f"cannot open the lock file {self.path}: {exc.strerror or exc}") from exc
        deadline = time.monotonic() + CONTENTION_RETRY_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.02)
            except OSError as exc:
                os.close(fd)
                raise _lock_error(self.path, exc) from exc
        self._fd = fd
        if self.record_owner:
            record = json.dumps(asdict(Owner.of_this_process())).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, record + b"\n", 0)
        return True

    def wait(self, *, poll_s: float = 0.5, on_wait: Callable[[Owner | None], None] | None = None) -> None:
        """Take the lock, waiting for its holder to release it (or to end); ``on_wait(owner)``
        is called once if it has to wait."""
        told = False
        while not self.acquire():
            if not told and on_wait is not None:
                on_wait(owner_of(self.path))
                told = True
            time.sleep(poll_s)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self.record_owner:
                os.ftruncate(fd, 0)  # no stale record for the next reader
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.wait()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def owner_of(path: str | os.PathLike) -> Owner | None:
    """Who holds the lock on ``path`` now (None when nobody does). A holder that has not yet
    written its record is reported with pid 0 and host ``?``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise GenzooError(f"cannot read the lock file {path}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            return Owner.parse(text) or Owner("?", 0)
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise _lock_error(Path(path), exc) from exc
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
