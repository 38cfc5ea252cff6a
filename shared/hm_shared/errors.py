"""One exception base for every domain error, each class carrying its process exit code."""

from __future__ import annotations

from pathlib import Path


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
