"""`make_spec`: the stage spec a test hands a stage, with what the test does not care about
derived from the stage id as the orchestrator would set it (kind from its first part, env from
the kind and the model letter, an attempt directory as output). A test that hands a stage a
recipe's flat table (`recipe=`) gets it split into `params` and `engine` by the table the
stage's environment publishes, as the orchestrator splits it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hm_shared.accepted import FILE_NAME, split_params
from hm_shared.spec import RunSpec, StageSpec

REPO = Path(__file__).resolve().parents[1]

HOST_KINDS = {"prepare", "average", "ensemble", "report", "intake", "scores"}
PADDLE_LETTERS = {"EL", "ES"}


def _env(kind: str, stage: str) -> str:
    if kind in HOST_KINDS:
        return "host"
    if kind == "extract":
        return "extract"
    parts = stage.split("/")
    return "paddle" if len(parts) > 1 and parts[1] in PADDLE_LETTERS else "torch"


def split_recipe(
    env: str, kind: str, run: RunSpec | dict[str, Any] | None, recipe: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """`{"params": …, "engine": …}` of a recipe table, by `env`'s published table."""
    published = json.loads((REPO / "containers" / env / f"hm_{env}" / FILE_NAME).read_text())
    table = published["train" if kind == "predict" else kind]  # predict: its fit's params
    letter = run.model if isinstance(run, RunSpec) else (run or {}).get("model", "*")
    params, engine = split_params(table.get(letter, table.get("*", {})), recipe)
    return {"params": params, "engine": engine}


def make_spec(
    stage: str,
    root: Path | str,
    *,
    inputs: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    output: str | None = None,
    **fields: Any,
) -> StageSpec:
    """`fields`: any other `StageSpec` field (kind, env, run, engine, profile, device);
    `recipe`: the recipe's params of the stage, instead of `params` and `engine`."""
    kind = fields.pop("kind", stage.split("/")[0])
    env = fields.pop("env", _env(kind, stage))
    if recipe is not None:
        fields |= split_recipe(env, kind, fields.get("run"), recipe)
        params = fields.pop("params")
    return StageSpec(
        stage=stage,
        kind=kind,
        env=env,
        data_root=str(root),
        output=output or f"work/.attempts/{stage.replace('/', '-')}/test",
        inputs=inputs or {},
        params=params or {},
        **fields,
    )


__all__ = ["make_spec"]
