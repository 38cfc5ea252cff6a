"""`make_spec`: the stage spec a test hands a stage, with what the test does not care about
derived from the stage id as the orchestrator would set it (kind from its first part, env from
the kind and the model letter, an attempt directory as output)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hm_shared.spec import StageSpec

HOST_KINDS = {"prepare", "average", "ensemble", "report", "intake", "scores"}
PADDLE_LETTERS = {"EL", "ES"}


def _env(kind: str, stage: str) -> str:
    if kind in HOST_KINDS:
        return "host"
    if kind == "extract":
        return "extract"
    parts = stage.split("/")
    return "paddle" if len(parts) > 1 and parts[1] in PADDLE_LETTERS else "torch"


def make_spec(
    stage: str,
    root: Path | str,
    *,
    inputs: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    output: str | None = None,
    **fields: Any,
) -> StageSpec:
    """`fields`: any other `StageSpec` field (kind, env, profile, device)."""
    kind = fields.pop("kind", stage.split("/")[0])
    env = fields.pop("env", _env(kind, stage))
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
