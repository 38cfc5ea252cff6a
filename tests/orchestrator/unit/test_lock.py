import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import LockedError
from orchestrator.lock import DataLock

HOLD = """
import sys, time
from pathlib import Path
from orchestrator.lock import DataLock
lock = DataLock(Path(sys.argv[1]), Path(sys.argv[2]))
lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def hold_lock(lock: Path, root: Path) -> subprocess.Popen[str]:
    """A second process that holds the lock until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock), str(root)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_holder_gets_locked_error_naming_pid(tmp_path: Path) -> None:
    lock = tmp_path / "work" / "state" / "lock"
    holder = hold_lock(lock, tmp_path)
    try:
        with pytest.raises(LockedError) as info:
            DataLock(lock, tmp_path).acquire()
        assert f"PID {holder.pid}" in str(info.value)
        assert str(tmp_path) in str(info.value)
        assert info.value.exit_code == 4
    finally:
        holder.kill()
        holder.wait()
    with DataLock(lock, tmp_path):  # the kernel released it with the dead process
        assert lock.read_text().strip().isdigit()


def test_lock_is_reentrant_after_release(tmp_path: Path) -> None:
    lock = DataLock(tmp_path / "lock", tmp_path)
    with lock:
        pass
    with lock:
        pass
