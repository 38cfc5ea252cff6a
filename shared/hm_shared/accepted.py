"""The accepted-params table each stage environment publishes for the orchestrator's plan-time
check: `{kind: {model letter or "*": [param, …]}}` as `accepted_params.json` beside the
environment's `accepted` module, written by `python -m hm_<env>.accepted --write`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

Table = Mapping[str, Mapping[str, Sequence[str]]]
FILE_NAME = "accepted_params.json"


def table_text(table: Table) -> str:
    return json.dumps(table, indent=1, sort_keys=True) + "\n"


def main(published: Path, table: Callable[[], Table], argv: Sequence[str]) -> None:
    """`--write`: rewrite the published file; no argument: print the table."""
    if list(argv) == ["--write"]:
        published.write_text(table_text(table()))
    else:
        sys.stdout.write(table_text(table()))
