"""Atomic writes: all or nothing, no temp file left behind, and the mode a plain open() gives."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hm_shared.io import atomic_open, atomic_write_text


def test_write_replaces_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "FIN_dev_seen.csv"
    atomic_write_text(target, "old\n")
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_failed_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "preds.csv"
    atomic_write_text(target, "complete\n")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "complete\n"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask_like_open(tmp_path: Path, umask: int, mode: int) -> None:
    target = tmp_path / "report.html"
    code = (
        f"import os; os.umask({umask}); from hm_shared.io import atomic_write_text; "
        f"atomic_write_text({str(target)!r}, 'x'); open({str(target)!r} + '.plain', 'w').close()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert stat.S_IMODE(os.stat(f"{target}.plain").st_mode) == mode
