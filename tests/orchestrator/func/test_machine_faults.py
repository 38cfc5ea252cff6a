"""Faults of the machine, not of the data, through the real CLI: a read-only data dir or attempts
folder, a full disk, a dataset the user cannot read. Each is one line naming the path and what
to do, with its documented exit code (architecture §6), never a traceback.

Real mounts (tmpfs, read-only bind mounts) and a real unprivileged user (`nobody`, through
setpriv): root reads and writes through permission bits, so those faults need another user.
Where this machine does not allow mounting or switching users the test says so and skips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hm_shared.synthetic import generate

ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")
NOBODY = 65534
SMOKE = ["--models", "B", "--topk", "4", "--profile", "smoke"]


def _sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True)


@contextlib.contextmanager
def _mount(target: Path, *args: str) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    done = _sh("mount", *args, str(target))
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip()}); CI runs as root and can")
    try:
        yield target
    finally:
        _sh("umount", "-l", str(target))


def _dataset(hm: Path) -> None:
    sizes = {"train": 8, "dev_seen": 4, "dev_unseen": 2, "test_seen": 2, "test_unseen": 2}
    generate(hm, seed=1, sizes=sizes)


def _cli(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    prefix = []
    if user is not None:
        prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    return subprocess.run(
        [*prefix, ORCHESTRATOR, *args], capture_output=True, text=True, timeout=300, cwd="/"
    )


def _one_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("Error: ")]
    return line


def test_a_read_only_data_dir_is_named(tmp_path: Path) -> None:
    with _mount(tmp_path / "data", "-t", "tmpfs", "-o", "size=64m", "tmpfs") as data:
        _dataset(data / "hm")
        assert _sh("mount", "-o", "remount,ro", str(data)).returncode == 0
        line = _one_line(_cli("run", *SMOKE, "--data", str(data)), 5)
        assert line.startswith(f"Error: {data / 'work'}")
        assert "Read-only file system; the file system is read-only: use a data directory" in line


def test_a_read_only_attempts_folder_is_named_and_nothing_is_left_running(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _dataset(data / "hm")
    attempts = data / "work" / ".attempts"
    with _mount(attempts, "--bind", str(attempts.parent / ".attempts")):
        assert _sh("mount", "-o", "remount,bind,ro", str(attempts)).returncode == 0
        line = _one_line(_cli("run", *SMOKE, "--data", str(data)), 5)
        assert line.startswith(f"Error: {attempts / 'prepare'}: Read-only file system;")
        # the lock went with the process: the next orchestrator is not told it is in use
        assert "in use" not in _cli("status", "--data", str(data)).stderr


def test_a_full_disk_while_writing_hashes_json_is_named(tmp_path: Path) -> None:
    with _mount(tmp_path / "data", "-t", "tmpfs", "-o", "size=2m", "tmpfs") as data:
        _dataset(data / "hm")
        (data / "work" / "state").mkdir(parents=True)
        # every free block taken
        with open(data / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 4096)
        line = _one_line(_cli("plan", *SMOKE, "--data", str(data)), 5)
        assert line.startswith(f"Error: {data / 'work/state/hashes.json'}: No space left")
        assert "the disk is full: free space" in line
        assert not list((data / "work" / "state").iterdir())  # no temp file left behind


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder every user can reach (pytest's own tmp is under root's, mode 0700)."""
    point = Path(tempfile.mkdtemp(prefix="hm-faults-"))
    point.chmod(0o755)
    try:
        with _mount(point, "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs") as root:
            if _cli("--help", user=NOBODY).returncode != 0:
                pytest.skip("the unprivileged user cannot run this checkout's orchestrator")
            yield root
    finally:
        point.rmdir()


@pytest.mark.parametrize("what", ["image", "folder"])
def test_a_dataset_the_user_cannot_read_is_named(shared_tmp: Path, what: str) -> None:
    data = shared_tmp / "data"
    _dataset(data / "hm")
    for path in [data, *data.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    if what == "image":
        unreadable = sorted((data / "hm" / "img").iterdir())[0]
        os.chown(unreadable, 0, 0)
        unreadable.chmod(0o600)
        expected = "cannot read it (Permission denied); expected a file readable"
    else:
        unreadable = data / "hm" / "img"
        os.chown(unreadable, 0, 0)
        unreadable.chmod(0o700)
        expected = "cannot list this folder (Permission denied); expected a folder readable"
    for verb in ("plan", "run"):
        line = _one_line(_cli(verb, *SMOKE, "--data", str(data), user=NOBODY), 3)
        assert (
            line == f"Error: {unreadable}: {expected} by the user running the orchestrator "
            f"(uid {NOBODY})"
        )
    shutil.rmtree(data)
