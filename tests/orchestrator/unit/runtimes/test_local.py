import json
import subprocess
import sys
from pathlib import Path

import pytest

from hm_shared.io import sha256_file
from orchestrator.api import Settings, build_envs
from orchestrator.datadir import DataDir
from orchestrator.errors import EnvBuildError
from orchestrator.runtimes import RuntimeConfig
from orchestrator.runtimes.local import MARKER, LocalRuntime


def _package(folder: Path, package: str) -> None:
    (folder / package).mkdir(parents=True, exist_ok=True)
    (folder / package / "__init__.py").write_text("")
    (folder / "setup.py").write_text(
        f"from setuptools import setup\nsetup(name='{package}', packages=['{package}'])\n"
    )


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "containers" / "tiny").mkdir(parents=True)
    (repo / "containers" / "tiny" / "requirements.lock").write_text("")
    (repo / "orchestrator").mkdir()
    (repo / "orchestrator" / "requirements.lock").write_text("click==8.1\n")
    return repo


def test_marker_decides_whether_a_venv_is_current(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    runtime = LocalRuntime(RuntimeConfig(repo=repo, venvs=tmp_path / "venvs"))
    assert not runtime.is_current("tiny")
    marker = tmp_path / "venvs" / "tiny" / MARKER
    marker.parent.mkdir(parents=True)
    lock_hash = sha256_file(repo / "containers/tiny/requirements.lock")
    marker.write_text(
        json.dumps({"lock_sha256": lock_hash, "packages": ["shared", "containers/tiny"]})
    )
    assert runtime.is_current("tiny")
    messages: list[str] = []
    assert runtime.ensure("tiny", messages.append).lock_sha256 == lock_hash
    assert messages == []  # nothing built
    (repo / "containers/tiny/requirements.lock").write_text("numpy==2.0\n")
    assert not runtime.is_current("tiny")  # a changed lock means rebuild


def test_host_stages_use_this_interpreter(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    runtime = LocalRuntime(RuntimeConfig(repo=repo, venvs=tmp_path / "venvs"))
    data = DataDir(tmp_path / "data")
    assert runtime.command("host", "average", Path("s.json"), data) == [
        sys.executable,
        "-m",
        "hm_shared",
        "average",
        "--spec",
        "s.json",
    ]
    assert runtime.command("torch", "train", Path("s.json"), data)[:3] == [
        str(tmp_path / "venvs/torch/bin/python"),
        "-m",
        "hm_torch",
    ]
    assert runtime.environ("3")["CUDA_VISIBLE_DEVICES"] == "3"
    assert runtime.environ(None)["CUDA_VISIBLE_DEVICES"] == ""
    assert runtime.ensure("host", print).lock_sha256 == sha256_file(
        repo / "orchestrator/requirements.lock"
    )


@pytest.mark.slow
def test_builds_a_venv_and_writes_the_marker_last(tmp_path: Path) -> None:
    """A real build of an environment with an empty lock and two tiny editable packages."""
    repo = _repo(tmp_path)
    for folder, package in ((repo / "shared", "hm_shared"), (repo / "containers/tiny", "hm_tiny")):
        _package(folder, package)
    runtime = LocalRuntime(RuntimeConfig(repo=repo, venvs=tmp_path / "venvs"))
    messages: list[str] = []
    runtime.ensure("tiny", messages.append)
    assert runtime.is_current("tiny")
    assert messages[0].startswith(f"building {tmp_path / 'venvs/tiny'}")
    python = tmp_path / "venvs/tiny/bin/python"
    assert subprocess.run([str(python), "-c", "import hm_tiny, hm_shared"]).returncode == 0


@pytest.mark.slow
def test_envs_build_at_once_and_a_failure_names_its_environment(tmp_path: Path) -> None:
    """`orchestrator envs build`: the broken torch lock fails, the extract venv is still built."""
    repo = _repo(tmp_path)
    _package(repo / "shared", "hm_shared")
    for env in ("extract", "torch"):
        _package(repo / "containers" / env, f"hm_{env}")
        (repo / "containers" / env / "requirements.lock").write_text("")
    (repo / "containers/torch/requirements.lock").write_text("not a requirement ==\n")
    settings = Settings(data=tmp_path, repo=repo, venvs=tmp_path / "venvs")
    messages: list[str] = []
    with pytest.raises(EnvBuildError) as info:
        build_envs(settings, ("extract", "torch"), messages.append)
    message = str(info.value)
    assert message.startswith(f"torch: building {tmp_path / 'venvs/torch'} failed")
    assert str(tmp_path / "venvs/torch.build.log") in message
    assert "extract" not in message
    runtime = LocalRuntime(settings.runtime_config)
    assert runtime.is_current("extract") and not runtime.is_current("torch")
    assert f"extract: {tmp_path / 'venvs/extract'} is up to date" in messages
