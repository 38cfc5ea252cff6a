"""Plan-time check of recipe params against what each environment accepts, and their split into
the model's params and the training engine's settings.

Each environment publishes `containers/<env>/hm_<env>/accepted_params.json`
(`{kind: {model letter or "*": {"model": [param, …], "engine": [setting, …]}}}`, written and
kept true by that environment's own code and tests; `hm_shared.accepted`), so a misspelt param
stops `plan` and `run` before prepare or any extraction runs, without importing torch or paddle
here. An environment without the file is not checked and its stages get every param as theirs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from pydantic import TypeAdapter, ValidationError

from hm_shared.accepted import FILE_NAME, Table, split_params
from orchestrator.errors import RecipeError
from orchestrator.stages import StageDef

# {kind: {letter or "*": {"model": [...], "engine": [...]}}}
_TABLE = TypeAdapter(dict[str, dict[str, dict[Literal["model", "engine"], list[str]]]])


def published(repo: Path, env: str) -> Table | None:
    path = repo / "containers" / env / f"hm_{env}" / FILE_NAME
    if not path.is_file():
        return None
    try:
        return _TABLE.validate_json(path.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "/".join(str(part) for part in first["loc"])
        raise RecipeError(
            f"{path}: not a table of accepted params ({first['msg']}"
            f"{f' at {where}' if where else ''}); rewrite it with "
            f"`python -m hm_{env}.accepted --write` in the {env} venv"
        ) from None


def accept_params(stages: list[StageDef], repo: Path, recipes: Path) -> list[StageDef]:
    """The stages with their recipe params split into `params` (the model's) and `engine`;
    RecipeError naming the first stage whose params its environment does not accept."""
    tables: dict[str, Table | None] = {}
    out = []
    for stage in stages:
        if stage.env not in tables:
            tables[stage.env] = published(repo, stage.env)
        table = (tables[stage.env] or {}).get(stage.kind)
        if table is None:
            out.append(stage)
            continue
        letter = stage.run.model if stage.run else None
        entry = table.get(str(letter), table.get("*"))
        if entry is None:
            raise RecipeError(
                f"{recipes}: model {letter} has no {stage.kind} stage in the {stage.env} "
                f"environment; it has: {', '.join(sorted(table))}"
            )
        known = sorted({*entry.get("model", ()), *entry.get("engine", ())})
        recipe = {**stage.params, **stage.engine}
        unknown = sorted(set(recipe) - set(known))
        if unknown:
            raise RecipeError(
                f"{recipes}: [models.{letter}] gives {stage.kind} param(s) {unknown} that the "
                f"{stage.env} environment does not accept (stage {stage.id}); accepted: "
                f"{', '.join(known)}"
            )
        params, engine = split_params(entry, recipe)
        out.append(dataclasses.replace(stage, params=params, engine=engine))
    return out
