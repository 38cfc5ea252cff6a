"""Fixtures of the executor tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from orch_helpers import ScriptRuntime

from orchestrator.datadir import DataDir
from orchestrator.runtimes import RuntimeConfig


@pytest.fixture
def data(tmp_path: Path) -> DataDir:
    return DataDir(tmp_path / "data")


@pytest.fixture
def runtime(tmp_path: Path) -> ScriptRuntime:
    return ScriptRuntime(RuntimeConfig(repo=tmp_path, venvs=tmp_path))
