"""The docker runtime's command lines and image names (no engine needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from docker_helpers import COMPOSE_FILE, REPO

from orchestrator import images
from orchestrator.datadir import DataDir
from orchestrator.runtimes import RuntimeConfig, make_runtime


@pytest.fixture
def runtime():
    return make_runtime("docker", RuntimeConfig(repo=REPO, venvs=REPO / ".venvs"))


def test_stage_command_runs_the_service_on_the_spec_inside_data(runtime, tmp_path: Path) -> None:
    data = DataDir(tmp_path / "data")
    spec = data.root / "work/.attempts/train-B-B42-train/abc/spec.json"
    argv = runtime.command("torch", "train", spec, data)
    assert argv[:7] == ["docker", "compose", "-f", str(COMPOSE_FILE), "run", "--rm", "-T"]
    assert argv[-4:] == [
        "torch",
        "train",
        "--spec",
        "/data/work/.attempts/train-B-B42-train/abc/spec.json",
    ]
    # the checkout's sources replace the image's copies, read-only: the hashed code runs
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "-v"]
    assert mounts == [
        f"{REPO / 'shared'}:/opt/src/shared:ro",
        f"{REPO / 'containers/torch'}:/opt/src/containers/torch:ro",
    ]
    assert runtime.data_root(data, "torch") == "/data"


def test_host_stages_run_with_the_orchestrator_interpreter(runtime, tmp_path: Path) -> None:
    data = DataDir(tmp_path / "data")
    spec = data.root / "work/.attempts/prepare/abc/spec.json"
    assert runtime.command("host", "prepare", spec, data) == [
        sys.executable,
        "-m",
        "hm_shared",
        "prepare",
        "--spec",
        str(spec),
    ]
    assert runtime.data_root(data, "host") == str(data.root)


def test_image_names_follow_hm_image_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HM_IMAGE_TAG", raising=False)
    assert images.image_name("torch") == "hm-torch:latest"
    monkeypatch.setenv("HM_IMAGE_TAG", "v2")
    assert images.image_name("extract") == "hm-extract:v2"
    assert images.image_name("paddle", "dev") == "hm-paddle:dev"


def test_compose_file_uses_the_same_image_names() -> None:
    text = COMPOSE_FILE.read_text()
    for env in images.ENVS:
        assert f"image: hm-{env}:${{HM_IMAGE_TAG:-latest}}" in text
