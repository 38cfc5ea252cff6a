"""The real hm_shared prepare stage driven by the orchestrator on a small handwritten dataset:
content-hash caching of the dataset, reasons, failures named with their log, through the API and
the CLI exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from orchestrator import api
from orchestrator.cache import output_problems
from orchestrator.datadir import DataDir
from orchestrator.errors import StageFailed
from orchestrator.executor import Executor
from orchestrator.plan import plan
from orchestrator.progress import RunProgress
from orchestrator.records import read_record, read_trace
from orchestrator.runtimes import RuntimeConfig
from orchestrator.runtimes.local import LocalRuntime

REPO = Path(__file__).resolve().parents[3]
VENVS = Path(os.environ.get("HM_VENVS", REPO / ".venvs"))
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")
SPLITS = {"train": 0, "dev_seen": 100, "dev_unseen": 200, "test_seen": 300, "test_unseen": 400}


def write_dataset(hm: Path, per_split: int = 6) -> None:
    (hm / "img").mkdir(parents=True)
    for split, offset in SPLITS.items():
        rows = []
        for i in range(per_split):
            meme = f"{offset + i:05d}"
            Image.new("RGB", (8, 8), (i * 20, offset % 255, 7)).save(hm / "img" / f"{meme}.png")
            rows.append(
                {"id": int(meme), "img": f"img/{meme}.png", "text": f"meme {meme}", "label": i % 2}
            )
        (hm / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _prepare_only(data: Path) -> tuple[api.Settings, list]:
    settings = api.Settings(data=data, venvs=VENVS)
    _, stages = api.select_stages(settings, api.Selection("B", "smoke", topk=4))
    return settings, [s for s in stages if s.id == "prepare"]


def _run_prepare(data: Path) -> tuple[list[str], list[str], dict[str, str]]:
    settings, stages = _prepare_only(data)
    dd = DataDir(data)
    hashes = api.fingerprints(settings, dd, stages)
    records = {s.id: read_record(dd, s.slug) for s in stages}
    planned = plan(stages, records, hashes, output_problems(dd.root, stages, records))
    reasons = {p.stage.id: p.reason for p in planned}
    with RunProgress(len(planned), Console(file=open(os.devnull, "w"))) as progress:
        outcome = Executor(dd, api.runtime_resolver(settings), hashes, progress).execute(planned)
    return outcome.executed, outcome.cached, reasons


def test_prepare_runs_caches_and_sees_dataset_changes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_dataset(data / "hm")
    executed, _, reasons = _run_prepare(data)
    assert executed == ["prepare"] and reasons["prepare"] == "no record"
    prepared = data / "work/prepared"
    assert (prepared / "traindev.jsonl").is_file() and (prepared / "dev_seen.jsonl").is_file()
    assert json.loads((prepared / "summary.json").read_text())["topk"] == 4
    assert "=== " in (data / "work/state/logs/prepare.log").read_text()
    assert (data / "work/state/hashes.json").is_file()

    executed, cached, reasons = _run_prepare(data)
    assert (executed, cached, reasons["prepare"]) == ([], ["prepare"], "cached")

    train = data / "hm/train.jsonl"
    os.utime(train, ns=(1, 1))  # a new mtime with the same content: re-hashed, still cached
    assert _run_prepare(data)[1] == ["prepare"]

    train.write_text(train.read_text().replace("meme 00001", "meme one"))
    executed, _, reasons = _run_prepare(data)
    assert executed == ["prepare"] and reasons["prepare"] == "input hm changed"
    rows = read_trace(data / "work/state/trace.tsv")
    assert [r["cached"] for r in rows] == ["0", "1", "1", "0"]
    assert all(r["runtime"] == "local" for r in rows)


def test_bad_dataset_fails_the_stage_naming_its_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_dataset(data / "hm")
    dev = data / "hm/dev_seen.jsonl"
    dev.write_text(dev.read_text().replace('"label": 1', '"label": 7', 1))
    with pytest.raises(StageFailed) as info:
        _run_prepare(data)
    log = data / "work/state/logs/prepare.log"
    assert f"stage prepare failed (exit 3); log: {log}" in str(info.value)
    assert "dev_seen.jsonl:2: label 7 is not 0 or 1" in str(info.value)
    assert read_record(DataDir(data), "prepare").status == "failed"
    assert not (data / "work/prepared").exists()


def test_cli_failure_exit_code_and_skipped_dependents(tmp_path: Path) -> None:
    if not LocalRuntime(RuntimeConfig(repo=REPO, venvs=VENVS)).is_current("torch"):
        pytest.fail(
            f"{VENVS / 'torch/hm-env.json'} is not current: ask the lead (tests never "
            "rebuild the dev venvs)"
        )
    data = tmp_path / "data"
    write_dataset(data / "hm")
    (data / "hm/test_seen.jsonl").write_text("not json\n")
    proc = subprocess.run(
        [
            ORCHESTRATOR,
            "run",
            "--models",
            "B",
            "--profile",
            "smoke",
            "--data",
            str(data),
            "--venvs",
            str(VENVS),
            "--on-error",
            "keep-going",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stderr  # the stage's class: bad data
    assert "Error: stage prepare failed (exit 3); log: " in proc.stderr
    assert "test_seen.jsonl:1:" in proc.stderr
    assert "  train/B/B42/train (prepare did not complete)" in proc.stderr
    assert "report (" in proc.stderr
