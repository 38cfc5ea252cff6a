"""Fixtures of the Docker tests: the skip/fail policy, the built images, data directories.

Tests marked `docker` need a Docker engine, Compose v2 and the images `./hm images` builds.
Without an engine they are skipped, unless HM_DOCKER_TESTS=1 (CI): then they fail, so a CI
machine that lost its engine cannot pass silently. With an engine, a missing image always fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from docker_helpers import engine_problem

from orchestrator import images

STAGE_IMAGES = ("extract", "torch", "paddle")  # every image runs a stage in these tests


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("docker")]
    if not marked or os.environ.get("HM_DOCKER_TESTS") == "1":
        return  # in CI a missing engine must fail in the `docker_ready` fixture, not skip
    problem = engine_problem()
    if problem is None:
        return
    skip = pytest.mark.skip(
        reason=f"no Docker engine ({problem.splitlines()[0]}); "
        "HM_DOCKER_TESTS=1 turns this into a failure"
    )
    for item in marked:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """Fail (never skip) unless the engine, Compose v2 and the three images are there."""
    problem = engine_problem()
    if problem is not None:
        pytest.fail(f"the Docker tests need a running engine: {problem}", pytrace=False)
    missing = [images.image_name(env) for env in STAGE_IMAGES if images.image_id(env) is None]
    if missing:
        pytest.fail(
            f"image(s) {', '.join(missing)} not built: run `./hm images` first", pytrace=False
        )


@pytest.fixture
def make_data(tmp_path: Path, synthetic_hm: Path) -> Callable[..., Path]:
    """`make_data(name, owner=None)`: a data dir holding a copy of the synthetic dataset in hm/.

    A copy, not a link: the bind mount shows the container only what is under the data dir.
    `owner=(uid, gid)` chowns the data dir itself (hm/ stays read-only and root's), as when a
    non-root user runs the pipeline on a directory they own.
    """

    def make(name: str, owner: tuple[int, int] | None = None) -> Path:
        root = tmp_path / name
        root.mkdir()
        shutil.copytree(synthetic_hm, root / "hm")
        if owner is not None:
            os.chown(root, *owner)
        return root

    return make
