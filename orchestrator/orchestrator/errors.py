"""Errors of the orchestrator; each maps to an exit code of docs/architecture.md §6."""

from __future__ import annotations

import errno
import os

from hm_shared.errors import HmError


class LockedError(HmError):
    """Another orchestrator holds the lock of the data directory."""

    exit_code = 4


class StageFailed(HmError):
    """One or more stages exited non-zero; the message names each stage and its log.

    Exits 1, or with the stages' own class when every failed stage exited with the same one:
    3 (bad data: the dataset, a feature store, a checkpoint) or 2 (a bad spec, such as a recipe
    param the environment does not accept)."""

    exit_code = 1
    CARRIED = (2, 3)

    def __init__(self, message: str, stage_codes: list[int | None] | None = None):
        super().__init__(message)
        codes = set(stage_codes or [])
        if len(codes) == 1 and (code := codes.pop()) in self.CARRIED:
            self.exit_code = code


class Interrupted(HmError):
    """Ctrl-C or SIGTERM: running stages were terminated, their records stay 'running'."""

    exit_code = 130


class RecipeError(HmError):
    """The recipe file does not follow docs/architecture.md §7."""

    exit_code = 2


class UnknownModelError(HmError):
    """A model letter that the recipe file does not define (the CLI turns it into a UsageError)."""

    exit_code = 2


class RuntimeUnavailable(HmError):
    """The selected runtime cannot run stages here (not implemented, or its tools are missing)."""

    exit_code = 2


class EnvBuildError(HmError):
    """Building a local virtualenv from its lock file failed."""

    exit_code = 1


class GpuError(HmError):
    """`--gpus` names a GPU this machine does not have."""

    exit_code = 2


class FileSystemFault(HmError):
    """The machine refused a file operation on the data directory (read-only file system,
    permission denied, no space left); the message names the path and what to do."""

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
            f"make it readable and writable by the user running the orchestrator (uid "
            f"{os.getuid()}), or use another data directory"
        )
    else:
        advice = _ADVICE.get(exc.errno or 0, "check the disk and the path")
    return FileSystemFault(f"{exc.filename}: {exc.strerror or exc}; {advice}")
