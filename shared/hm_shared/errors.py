"""One exception base for every domain error, each class carrying its process exit code."""

from __future__ import annotations

import errno
import os
from pathlib import Path

CONTAINER_DATA = "/data"  # where compose.yaml mounts the data directory (HM_DATA there)


class HmError(Exception):
    """Base of all domain errors. `exit_code` is what a CLI exits with when it is uncaught."""

    exit_code = 1


class HmDataError(HmError):
    """Bad input data: a dataset file, a predictions file, a feature store, a checkpoint."""

    exit_code = 3

    def __init__(self, message: str, path: Path | str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class MissingWeightsError(HmDataError):
    """A pretrained file the full profile needs is absent."""


class SpecError(HmError):
    """A stage spec that does not follow the contract of docs/architecture.md §2.1."""

    exit_code = 2


class FileSystemFault(HmError):
    """The machine refused a file operation on the data directory (read-only file system,
    permission denied, no space left); the message names the path and what to do. Raised by
    the orchestrator and the stage entry points alike (docs/architecture.md §6)."""

    exit_code = 5


_ADVICE = {
    errno.EROFS: "the file system is read-only: use a data directory on a writable disk (--data)",
    errno.ENOSPC: "the disk is full: free space (finished stages' old attempt dirs under "
    "work/.attempts can go) or use a data directory on another disk",
    errno.EDQUOT: "your disk quota is used up: free space or use a data directory elsewhere",
}


def file_system_fault(exc: OSError) -> FileSystemFault:
    """One line for an OSError that names a file: the path, what failed, what to do."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        advice = (
            f"make it readable and writable by the user running this (uid {os.getuid()}), or "
            "use another data directory"
        )
        if os.environ.get("HM_DATA") == CONTAINER_DATA:  # inside a compose service
            advice += (
                "; under `docker compose run`, export HOST_UID=$(id -u) HOST_GID=$(id -g) so "
                "the container runs as the owner of DATA_DIR"
            )
    else:
        advice = _ADVICE.get(exc.errno or 0, "check the disk and the path")
    return FileSystemFault(f"{exc.filename}: {exc.strerror or exc}; {advice}")
