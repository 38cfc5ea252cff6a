"""Plan-time check of recipe params against what each environment accepts.

Each environment publishes `containers/<env>/hm_<env>/accepted_params.json`
(`{kind: {model letter or "*": [param, …]}}`, written and kept true by that environment's own
code and tests), so a misspelt param stops `plan` and `run` before prepare or any extraction
runs, without importing torch or paddle here. An environment without the file is not checked.
"""

from __future__ import annotations

import json
from pathlib import Path

from hm_shared.accepted import FILE_NAME
from orchestrator.errors import RecipeError
from orchestrator.stages import StageDef


def published(repo: Path, env: str) -> dict[str, dict[str, list[str]]] | None:
    path = repo / "containers" / env / f"hm_{env}" / FILE_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RecipeError(f"{path}: not JSON ({exc}); rewrite it with its env's --write") from None


def check_params(stages: list[StageDef], repo: Path, recipes: Path) -> None:
    """Raise RecipeError naming the first stage whose params its environment does not accept."""
    tables: dict[str, dict[str, dict[str, list[str]]] | None] = {}
    for stage in stages:
        if stage.env not in tables:
            tables[stage.env] = published(repo, stage.env)
        table = (tables[stage.env] or {}).get(stage.kind)
        if table is None:
            continue
        letter = stage.run.model if stage.run else None
        accepted = table.get(str(letter), table.get("*"))
        if accepted is None:
            raise RecipeError(
                f"{recipes}: model {letter} has no {stage.kind} stage in the {stage.env} "
                f"environment; it has: {', '.join(sorted(table))}"
            )
        unknown = sorted(set(stage.params) - set(accepted))
        if unknown:
            raise RecipeError(
                f"{recipes}: [models.{letter}] gives {stage.kind} param(s) {unknown} that the "
                f"{stage.env} environment does not accept (stage {stage.id}); accepted: "
                f"{', '.join(accepted)}"
            )
