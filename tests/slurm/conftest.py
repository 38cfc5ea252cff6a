"""Fixtures of the SLURM tests: a real cluster (`.ci/slurm-up` starts a one-node one).

Tests marked `slurm` submit real jobs. Without a cluster they are skipped, unless
HM_SLURM_TESTS=1 (CI): then they fail, so a CI machine that lost its cluster cannot pass
silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.runtimes import RuntimeConfig
from orchestrator.runtimes.local import LocalRuntime

REPO = Path(__file__).resolve().parents[2]
VENVS = Path(os.environ.get("HM_VENVS", REPO / ".venvs"))


def cluster_problem() -> str | None:
    """Why no SLURM cluster answers here, or None when one does with an idle node."""
    if shutil.which("sinfo") is None:
        return "the SLURM commands are not installed (.ci/slurm-up installs and starts a cluster)"
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"sinfo failed: {done.stderr.strip()[-300:]}"
    if not {"idle", "mixed", "allocated"} & set(done.stdout.split()):
        return f"no usable node (sinfo: {done.stdout.split()})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("HM_SLURM_TESTS") == "1":
        return  # in CI a missing cluster must fail in the `cluster` fixture, not skip
    problem = cluster_problem()
    if problem is None:
        return
    skip = pytest.mark.skip(reason=f"no SLURM cluster ({problem}); HM_SLURM_TESTS=1 fails instead")
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cluster() -> None:
    problem = cluster_problem()
    if problem is not None:
        pytest.fail(f"the SLURM tests need a cluster: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def venvs() -> Path:
    runtime = LocalRuntime(RuntimeConfig(repo=REPO, venvs=VENVS))
    stale = [env for env in ("extract", "torch") if not runtime.is_current(env)]
    if stale:
        pytest.fail(
            f"the venvs {stale} under {VENVS} are missing or stale: run "
            "`orchestrator envs build extract torch` (./hm test does it before the suites)",
            pytrace=False,
        )
    return VENVS


@pytest.fixture(scope="session")
def docker_images() -> None:
    """The Docker engine and the torch image, for the jobs that run stages in containers."""
    done = subprocess.run(
        ["docker", "image", "inspect", "hm-torch:latest"], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.fail(
            "the docker-runtime SLURM test needs a Docker engine and the images: "
            "run `./hm images` first",
            pytrace=False,
        )
