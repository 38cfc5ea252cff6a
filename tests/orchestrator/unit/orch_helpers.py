"""Executor test helpers: a runtime that runs script_stage.py as the stage process."""

from __future__ import annotations

import sys
from pathlib import Path

from orchestrator.datadir import DataDir
from orchestrator.plan import Fingerprints
from orchestrator.runtimes import EnvInfo, Runtime, Say
from orchestrator.stages import InputRef, StageDef

SCRIPT = Path(__file__).with_name("script_stage.py")


class ScriptRuntime(Runtime):
    name = "script"

    def ensure(self, env: str, say: Say) -> EnvInfo:
        return EnvInfo("lock")

    def data_root(self, data: DataDir, env: str) -> str:
        return str(data.root)

    def command(self, env: str, verb: str, spec_path: Path, data: DataDir) -> list[str]:
        return [sys.executable, str(SCRIPT), str(spec_path)]


def diamond(params: dict[str, dict] | None = None) -> list[StageDef]:
    """a → (b, c) → d; b and c are accelerated (train) stages, a and d host stages."""
    params = params or {}

    def stage(sid: str, kind: str, deps: list[str]) -> StageDef:
        inputs = {d: InputRef(f"work/{d}", d) for d in deps} or {"hm": InputRef("hm")}
        return StageDef(
            id=sid,
            kind=kind,
            env="host",
            output=f"work/{sid}",
            inputs=inputs,
            params=params.get(sid, {}),
        )

    return [
        stage("a", "prepare", []),
        stage("b", "train", ["a"]),
        stage("c", "train", ["a"]),
        stage("d", "average", ["b", "c"]),
    ]


HASHES = Fingerprints(inputs={"hm": "h"}, env_locks={"host": "L"}, code={"host": "C"})
