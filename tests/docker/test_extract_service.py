"""The extract service of compose.yaml run directly, as a user would: `docker compose run --rm
extract …` over a data directory given by DATA_DIR, as the user HOST_UID:HOST_GID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from docker_helpers import REPO, compose_run

from hm_shared.features import FeatureStore

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

VARIANT = "vgattr3636"  # 36 boxes per image, attribute detector
SMOKE = ["--variant", VARIANT, "--profile", "smoke", "--device", "cpu"]
OTHER_UID = OTHER_GID = 4242  # a user that exists nowhere: only the numbers matter


def owners(root: Path) -> set[tuple[int, int]]:
    """(uid, gid) of every file and directory under `root`, `root` included."""
    return {(p.lstat().st_uid, p.lstat().st_gid) for p in [root, *root.rglob("*")]}


@pytest.mark.slow
def test_extract_service_writes_the_feature_store(make_data) -> None:
    data = make_data("data")
    uid, gid = os.getuid(), os.getgid()
    done = compose_run("extract", [*SMOKE, "--topk", "20"], data, uid, gid)
    assert done.returncode == 0, done.stderr[-3000:]

    # its own place, never an orchestrator output path (work/features/<variant>), whose next
    # promotion would have replaced this store with the stage's own
    store_dir = data / "work" / "direct" / "features" / VARIANT
    assert not (data / "work" / "features").exists()
    store = FeatureStore(store_dir)
    first = sorted(p.stem for p in (data / "hm" / "img").glob("*.png"))[:20]
    assert store.ids() == first  # --topk: the first 20 images by file name, ids = stems
    for image_id in first:
        item = store[image_id]
        assert item.boxes.shape == (36, 4) and item.features.shape == (36, 2048)
        assert np.isfinite(item.features).all()
        x1, y1, x2, y2 = item.boxes.T
        assert (x1 >= 0).all() and (y1 >= 0).all()
        assert (x2 <= item.image_w).all() and (y2 <= item.image_h).all()
        assert (x2 >= x1).all() and (y2 >= y1).all()
    # written by the invoking user (root in CI), not by the image's default user 65534
    assert owners(data / "work") == {(uid, gid)}


@pytest.mark.slow
def test_files_written_by_a_non_root_user_are_theirs(make_data) -> None:
    data = make_data("data", owner=(OTHER_UID, OTHER_GID))
    done = compose_run("extract", [*SMOKE, "--topk", "2"], data, OTHER_UID, OTHER_GID)
    assert done.returncode == 0, done.stderr[-3000:]

    assert len(FeatureStore(data / "work" / "direct" / "features" / VARIANT)) == 2
    assert owners(data / "work") == {(OTHER_UID, OTHER_GID)}


def test_extract_without_arguments_extracts_the_default_variants(make_data) -> None:
    # compose.yaml's first example: `docker compose run --rm extract` extracts the default
    # variants from /data/hm/img. With no weights in data/weights (the full profile) that must
    # stop on the missing detector file, naming it, before anything is written.
    data = make_data("data")
    done = compose_run("extract", [], data, os.getuid(), os.getgid())
    assert done.returncode == 3, done.stderr[-3000:]  # HmDataError (MissingWeightsError)
    assert "faster_rcnn_from_caffe" in done.stderr
    assert not (data / "work").exists()


def test_a_container_user_that_cannot_write_is_told_to_export_host_uid(make_data) -> None:
    # HOST_UID/HOST_GID not those of DATA_DIR's owner (root here), as when a user forgets to
    # export them: one line saying what to export, no traceback
    data = make_data("data")
    done = compose_run("extract", [*SMOKE, "--topk", "1"], data, OTHER_UID, OTHER_GID)
    assert done.returncode == 5, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert (
        "Permission denied; make it readable and writable by the user running this (uid "
        f"{OTHER_UID})" in done.stderr
    )
    assert "export HOST_UID=$(id -u) HOST_GID=$(id -g)" in done.stderr
    assert not (data / "work").exists()


def _containers_named(name: str) -> list[str]:
    found = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"name=^{name}$"], capture_output=True, text=True
    )
    return found.stdout.split()


def test_hm_extract_stops_its_container_on_sigterm(make_data) -> None:
    # `docker compose run` without a TTY leaves its container running when the client gets
    # SIGTERM; `./hm extract` names the container and stops it.
    data = make_data("data")
    proc = subprocess.Popen(
        [str(REPO / "hm"), "extract", *SMOKE],
        env={**os.environ, "DATA_DIR": str(data)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    name = f"hm-extract-{proc.pid}"
    store = data / "work" / "direct" / "features" / VARIANT
    deadline = time.monotonic() + 300
    while not (_containers_named(name) and store.is_dir()):  # extracting by now
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        assert time.monotonic() < deadline, "the extract container never started"
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 143  # the container's own exit: stopped by SIGTERM
    deadline = time.monotonic() + 60
    while _containers_named(name):
        assert time.monotonic() < deadline, f"container {name} still exists"
        time.sleep(0.5)
