"""Promotion of a finished attempt onto the stage's output path (docs/architecture.md §4).

Steps: hash the attempt → move the old output aside → rename the attempt onto the output →
delete the old output. The record that makes the output visible to consumers is written by
the caller after this returns, so a kill between any two steps leaves the stage "running"
(it reruns, in its attempt dir if that still exists) and never exposes a half-promoted output.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from orchestrator.cache import output_files, output_hash

ASIDE = "previous-output"


def promote(attempt: Path, output: Path) -> tuple[str, dict[str, int]]:
    """Rename `attempt` onto `output` (same filesystem); return the output's content hash and
    its files' sizes (`cache.output_files`).

    Temp files (`*.tmp`) that a killed earlier attempt left behind are deleted first: an atomic
    write never finished them, so no consumer may see them."""
    for leftover in attempt.rglob("*.tmp"):
        if leftover.is_file():
            leftover.unlink()
    digest, files = output_hash(attempt), output_files(attempt)
    aside = attempt.parent / ASIDE
    if aside.exists():
        shutil.rmtree(aside)  # left behind by a promotion that was killed
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists():
        os.replace(output, aside)
    os.replace(attempt, output)
    shutil.rmtree(aside, ignore_errors=True)
    return digest, files


def drop_stale_attempts(attempts: Path) -> None:
    """Remove the attempt dirs of other keys once a stage is done (they can never resume)."""
    if attempts.is_dir():
        for child in attempts.iterdir():
            shutil.rmtree(child, ignore_errors=True)
