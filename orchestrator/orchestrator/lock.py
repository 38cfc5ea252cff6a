"""One lock per data directory: fcntl.flock on work/state/lock, released by the kernel on exit.

No check-then-write and no stale lock to remove by hand: a killed orchestrator's lock is gone
with its process. The file holds the holder's PID so the error can name it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from orchestrator.errors import LockedError


class DataLock:
    def __init__(self, path: Path, data_root: Path):
        self.path = path
        self.data_root = data_root
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"data directory {self.data_root} is in use by another orchestrator "
                f"(PID {holder}, lock {self.path}); wait for it to finish or stop it "
                f"(`kill {holder}`), then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
