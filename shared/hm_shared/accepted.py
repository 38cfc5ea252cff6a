"""The accepted-params table each stage environment publishes for the orchestrator:
`{kind: {model letter or "*": {"model": [param, …], "engine": [setting, …]}}}` as
`accepted_params.json` beside the environment's `accepted` module, written by
`python -m hm_<env>.accepted --write`.

A recipe's model table is one flat list of names (`hidden_size` beside `lr`); the table says
which of them are the model's hyper-parameters and which its training engine's settings, so the
orchestrator refuses a misspelt one at plan time and hands the stage the two parts apart
(`StageSpec.params`, `StageSpec.engine`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

Accepted = Mapping[str, Sequence[str]]  # {"model": [...], "engine": [...]}
Table = Mapping[str, Mapping[str, Accepted]]
FILE_NAME = "accepted_params.json"


def accepted(model: Iterable[str], engine: Iterable[str] = ()) -> dict[str, list[str]]:
    """One letter's entry of the table."""
    return {"model": sorted(model), "engine": sorted(engine)}


def split_params(
    entry: Accepted, params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the model's params, the engine's settings) of one recipe table. A name the entry does
    not list stays with the model's, whose config then refuses it naming the stage."""
    engine = set(entry.get("engine", ()))
    return (
        {k: v for k, v in params.items() if k not in engine},
        {k: v for k, v in params.items() if k in engine},
    )


def table_text(table: Table) -> str:
    return json.dumps(table, indent=1, sort_keys=True) + "\n"


def main(published: Path, table: Callable[[], Table], argv: Sequence[str]) -> None:
    """`--write`: rewrite the published file; no argument: print the table."""
    if list(argv) == ["--write"]:
        published.write_text(table_text(table()))
    else:
        sys.stdout.write(table_text(table()))
