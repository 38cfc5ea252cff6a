"""Helpers of the Docker tests: run a Compose service or the orchestrator CLI like a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestrator import images

REPO = Path(__file__).resolve().parents[2]
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")
COMPOSE_FILE = REPO / "compose.yaml"


def engine_problem() -> str | None:
    """Why no Docker engine with Compose v2 answers here, or None when both do."""
    try:
        images.check_docker()
    except images.DockerUnavailable as exc:
        return str(exc)
    return None


def compose_run(
    service: str, args: Sequence[str], data: Path, uid: int, gid: int, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    """`docker compose run --rm -T <service> ARGS` over `data`, as the docker runtime runs it.

    The checked-out hm_shared and hm_<service> are mounted over the image's copies (as the
    runtime does), so the code under test is the checkout's and the image gives the environment.
    """
    cmd = [
        "docker",
        "compose",
        "-f",
        str(COMPOSE_FILE),
        "run",
        "--rm",
        "-T",
        "-v",
        f"{REPO / 'shared'}:/opt/src/shared:ro",
        "-v",
        f"{REPO / 'containers' / service}:/opt/src/containers/{service}:ro",
        service,
        *args,
    ]
    env = {**os.environ, "DATA_DIR": str(data), "HOST_UID": str(uid), "HOST_GID": str(gid)}
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def orchestrator(
    args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 3000
) -> subprocess.CompletedProcess[str]:
    """Run the `orchestrator` CLI of this interpreter's venv; stdout and stderr kept apart."""
    return subprocess.run(
        [ORCHESTRATOR, *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
