"""The embedded synthetic dataset appears in data/hm all at once, or not at all."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.api import ensure_dataset
from orchestrator.datadir import DataDir

GENERATE = """
import sys
from pathlib import Path
from orchestrator.api import ensure_dataset
from orchestrator.datadir import DataDir
ensure_dataset(DataDir(Path(sys.argv[1])), print)
"""


def test_generation_killed_midway_leaves_no_partial_dataset(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    (tmp_path / "hm").mkdir()
    proc = subprocess.Popen([sys.executable, "-c", GENERATE, str(tmp_path)])
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".hm.partial-*/img/*.png")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not data.has_dataset()  # nothing half-written is taken for the user's dataset

    assert ensure_dataset(data, lambda _: None)
    assert sorted(p.name for p in data.hm.glob("*.jsonl")) == [
        "dev_seen.jsonl",
        "dev_unseen.jsonl",
        "test_seen.jsonl",
        "test_unseen.jsonl",
        "train.jsonl",
    ]
    assert not list(tmp_path.glob(".hm.partial-*"))  # the killed attempt's folder is gone
    assert not ensure_dataset(data, lambda _: None)  # present now: left alone
