"""Stopping stage containers: terminate/kill reach the container, not only the compose client,
and a container orphaned by a killed orchestrator is removed before its attempt dir is reused.

The runtime's own `start` runs here, with the stage argv swapped for a script that records the
signals it gets, so no stage code is involved.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from docker_helpers import COMPOSE_FILE, REPO

from orchestrator.datadir import DataDir
from orchestrator.runtimes import RuntimeConfig
from orchestrator.runtimes.docker import ATTEMPT_LABEL, DockerRuntime

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

# Writes `up` into its attempt dir, then `terminated` on SIGTERM (exit 143).
SCRIPT = """
import pathlib, signal, sys, time
attempt = pathlib.Path(sys.argv[1])
def stop(*_):
    (attempt / "terminated").write_text("TERM")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
(attempt / "up").write_text("up")
time.sleep(600)
"""


class SleeperRuntime(DockerRuntime):
    """The docker runtime with the stage command replaced by SCRIPT (same options, service)."""

    def _argv(
        self,
        env: str,
        verb: str,
        spec_path: Path,
        data: DataDir,
        service: str,
        run_options: list[str],
    ) -> list[str]:
        inside = "/data/" + spec_path.parent.relative_to(data.root).as_posix()
        return [
            "docker",
            "compose",
            "-f",
            str(COMPOSE_FILE),
            "run",
            "--rm",
            "-T",
            *run_options,
            "--entrypoint",
            "python",
            service,
            "-c",
            SCRIPT,
            inside,
        ]


def containers_on(attempt: Path) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={ATTEMPT_LABEL}={attempt}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def wait_for(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def stage(tmp_path: Path):
    data = DataDir(tmp_path / "data")
    attempt = data.attempt("train-B-B42-train", "0123456789abcdef")
    attempt.mkdir(parents=True)
    spec = attempt / "spec.json"
    spec.write_text("{}")
    runtime = SleeperRuntime(RuntimeConfig(repo=REPO, venvs=REPO / ".venvs"))
    started = []

    def start() -> subprocess.Popen[bytes]:
        proc = runtime.start("torch", "train", spec, data.log("train-B-B42-train"), None, data)
        started.append(proc)
        return proc

    yield attempt.resolve(), start
    for proc in started:  # never leave a sleeper behind, whatever failed
        proc.kill()
        proc.wait()


def test_terminate_stops_the_container(stage) -> None:
    attempt, start = stage
    proc = start()
    wait_for(lambda: (attempt / "up").exists(), "the container to start")
    assert len(containers_on(attempt)) == 1
    proc.terminate()
    assert proc.wait(timeout=60) == 143  # the stage's own exit code, through the client
    assert (attempt / "terminated").read_text() == "TERM"
    wait_for(lambda: not containers_on(attempt), "the container to be removed (--rm)", 30)


def test_orphaned_container_is_removed_before_the_attempt_is_reused(stage) -> None:
    attempt, start = stage
    first = start()
    wait_for(lambda: (attempt / "up").exists(), "the first container to start")
    orphan = containers_on(attempt)
    os.kill(first.pid, signal.SIGKILL)  # the orchestrator and its client die; the stage lives
    first.wait()
    assert containers_on(attempt) == orphan

    (attempt / "up").unlink()
    second = start()
    assert orphan[0] not in containers_on(attempt)  # gone before the new one was started
    wait_for(lambda: (attempt / "up").exists(), "the second container to start")
    assert len(containers_on(attempt)) == 1
    second.kill()
    second.wait(timeout=60)
    wait_for(lambda: not containers_on(attempt), "the killed container to be removed", 30)
