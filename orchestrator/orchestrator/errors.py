"""Errors of the orchestrator; each maps to an exit code of docs/architecture.md §6."""

from __future__ import annotations

from hm_shared.errors import FileSystemFault, HmError, file_system_fault


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


__all__ = [
    "EnvBuildError",
    "FileSystemFault",
    "GpuError",
    "Interrupted",
    "LockedError",
    "RecipeError",
    "RuntimeUnavailable",
    "StageFailed",
    "UnknownModelError",
    "file_system_fault",
]
