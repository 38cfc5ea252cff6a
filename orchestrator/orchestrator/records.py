"""Stage records (written last, atomically) and the trace file (docs/architecture.md §3–§4)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from hm_shared.io import atomic_write_json
from orchestrator.datadir import DataDir

RECORD_FORMAT_VERSION = 1
TRACE_COLUMNS = ("stage", "key", "runtime", "gpu", "start", "end", "exit", "cached")

Status = Literal["running", "done", "failed"]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Record(BaseModel):
    """What the orchestrator knows about the last attempt of a stage."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = RECORD_FORMAT_VERSION
    stage: str
    kind: str
    status: Status
    key: str
    key_parts: dict[str, Any]
    output: str
    attempt: str
    log: str
    runtime: str
    image: str | None = None
    gpu: str | None = None
    device: str | None = None  # what the stage says it ran on (its metrics.json), train stages
    started: str
    ended: str | None = None
    seconds: float | None = None
    exit_code: int | None = None
    output_hash: str | None = None
    output_files: dict[str, int] | None = None  # name → size at promotion (cache.output_problem)
    job_id: str | None = None  # the SLURM job that runs the stage (--executor slurm)


def read_record(data: DataDir, slug: str) -> Record | None:
    """The stage's record, or None when there is none or it cannot be trusted.

    Writes are atomic, so an unreadable record means someone edited it; it counts as absent
    (the stage runs again) rather than as done.
    """
    path = data.record(slug)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    if raw.get("format_version") != RECORD_FORMAT_VERSION:
        return None
    try:
        return Record.model_validate(raw)
    except ValidationError:
        return None


def write_record(data: DataDir, slug: str, record: Record) -> None:
    atomic_write_json(data.record(slug), record.model_dump())


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def append_trace(data: DataDir, row: dict[str, Any]) -> None:
    """Append one line; O_APPEND with one write keeps concurrent lines whole."""
    path = data.trace
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["" if row.get(c) is None else str(row[c]) for c in TRACE_COLUMNS]
    line = "\t".join(f.replace("\t", " ").replace("\n", " ") for f in fields) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size == 0:
            line = "\t".join(TRACE_COLUMNS) + "\n" + line
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_trace(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:] if line]
