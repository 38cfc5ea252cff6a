"""The docker runtime's command lines, as `start()`, `job()` and stopping really run them, with
no Docker engine: a `docker` executable first on PATH records each call (argv and the variables
compose reads) and exits 0. The engine-backed behaviour (containers stopped, orphans removed,
whole pipelines) is in tests/docker."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from orchestrator import images
from orchestrator.datadir import DataDir
from orchestrator.runtimes import RuntimeConfig, make_runtime
from orchestrator.runtimes.docker import ATTEMPT_LABEL

REPO = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO / "compose.yaml"

RECORDER = """#!{python}
import json, os, sys
with open({log!r}, "a") as log:
    keys = ("HM_GPU", "DATA_DIR", "HOST_UID", "HOST_GID", "PYTHONUNBUFFERED")
    env = {{k: os.environ.get(k) for k in keys}}
    log.write(json.dumps({{"argv": sys.argv[1:], "env": env}}) + "\\n")
"""


@pytest.fixture
def docker_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`calls()`: the recorded `docker` invocations so far, oldest first."""
    bin_dir, log = tmp_path / "bin", tmp_path / "docker-calls.jsonl"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(RECORDER.format(python=sys.executable, log=str(log)))
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def calls() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return calls


@pytest.fixture
def stage(tmp_path: Path):
    runtime = make_runtime("docker", RuntimeConfig(repo=REPO, venvs=REPO / ".venvs"))
    data = DataDir(tmp_path / "data")
    attempt = data.attempt("train-B-B42-train", "0123456789ab")
    attempt.mkdir(parents=True)
    spec = attempt / "spec.json"
    spec.write_text("{}")
    return runtime, data, spec


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _check_stage_argv(argv: list[str], data: DataDir, service: str) -> str:
    """The shape every stage container shares; returns the container name."""
    assert argv[:7] == ["compose", "-f", str(COMPOSE_FILE), "run", "--rm", "-T", "-v"]
    # the checkout's sources replace the image's copies, read-only: the hashed code runs
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "-v"]
    assert mounts == [
        f"{REPO / 'shared'}:/opt/src/shared:ro",
        f"{REPO / 'containers/torch'}:/opt/src/containers/torch:ro",
    ]
    attempt = data.attempt("train-B-B42-train", "0123456789ab")
    assert _option(argv, "--label") == f"{ATTEMPT_LABEL}={attempt}"
    assert argv[-4:] == [
        service,
        "train",
        "--spec",
        "/data/work/.attempts/train-B-B42-train/0123456789ab/spec.json",
    ]
    name = _option(argv, "--name")
    assert name.startswith("hm-train-B-B42-train-0123456789ab-") and len(name) == 42
    return name


def test_start_removes_orphans_then_runs_the_named_container(stage, docker_calls) -> None:
    runtime, data, spec = stage
    log = data.log("train-B-B42-train")
    assert runtime.start("torch", "train", spec, log, None, data).wait() == 0
    orphans, run = docker_calls()
    attempt = spec.resolve().parent
    assert orphans["argv"] == ["ps", "-aq", "--filter", f"label={ATTEMPT_LABEL}={attempt}"]
    _check_stage_argv(run["argv"], data, "torch")
    assert run["env"] == {
        "HM_GPU": "",
        "DATA_DIR": str(data.root),
        "HOST_UID": str(os.getuid()),
        "HOST_GID": str(os.getgid()),
        "PYTHONUNBUFFERED": "1",
    }


def test_a_gpu_stage_runs_the_gpu_service_with_its_lease(stage, docker_calls) -> None:
    runtime, data, spec = stage
    gpu = "GPU-6f1e2a55-0000-4000-8000-000000000001"
    log = data.log("train-B-B42-train")
    assert runtime.start("torch", "train", spec, log, gpu, data).wait() == 0
    run = docker_calls()[-1]
    _check_stage_argv(run["argv"], data, "torch-gpu")
    assert run["env"]["HM_GPU"] == gpu


def test_stopping_a_stage_stops_its_container_by_name(stage, docker_calls) -> None:
    runtime, data, spec = stage
    proc = runtime.start("torch", "train", spec, data.log("train-B-B42-train"), None, data)
    proc.wait()
    name = _option(docker_calls()[-1]["argv"], "--name")
    proc.kill()  # the client has exited: the container is still removed by name
    assert docker_calls()[-1]["argv"] == ["rm", "--force", name]


def test_a_slurm_job_runs_the_same_container_and_is_cancelled_by_name(stage) -> None:
    runtime, data, spec = stage
    argv, environ, stop = runtime.job("torch", "train", spec, data)
    assert argv[0] == "docker"
    name = _check_stage_argv(argv[1:], data, "torch")
    assert stop == ["docker", "kill", "--signal", "TERM", name]
    assert environ["DATA_DIR"] == str(data.root) and environ["HM_GPU"] == ""


def test_host_stages_run_with_the_orchestrator_interpreter(stage, docker_calls) -> None:
    runtime, data, _ = stage
    spec = data.attempt("prepare", "0123456789ab") / "spec.json"
    assert runtime.command("host", "prepare", spec, data) == [
        sys.executable,
        "-m",
        "hm_shared",
        "prepare",
        "--spec",
        str(spec),
    ]
    assert runtime.data_root(data, "host") == str(data.root)
    assert runtime.data_root(data, "torch") == "/data"
    assert docker_calls() == []


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
