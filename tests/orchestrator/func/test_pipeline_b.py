"""End to end: `orchestrator run --models B --topk 20 --profile smoke --runtime local` on the
synthetic dataset, with real stage processes in the dev venvs (HM_VENVS, default <repo>/.venvs).

One data directory goes through: a run killed with SIGKILL during training, a rerun interrupted
with SIGINT (exit 130), a rerun that resumes and completes, and a no-op rerun.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from recipe_helpers import dump_toml

from hm_shared.predictions import read_predictions
from orchestrator.cache import output_hash
from orchestrator.datadir import DataDir
from orchestrator.recipes import DEFAULT_RECIPES
from orchestrator.records import read_record, read_trace
from orchestrator.runtimes import RuntimeConfig
from orchestrator.runtimes.local import LocalRuntime

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
VENVS = Path(os.environ.get("HM_VENVS", REPO / ".venvs"))
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")
SPLITS = ("dev_seen", "test_seen", "test_unseen")


@pytest.fixture(scope="module")
def venvs() -> Path:
    runtime = LocalRuntime(RuntimeConfig(repo=REPO, venvs=VENVS))
    if not runtime.is_current("torch"):
        # Never let a test rebuild the shared dev venvs: that is the lead's job.
        pytest.fail(
            f"{VENVS / 'torch' / 'hm-env.json'} is missing or names another lock hash; "
            "run `orchestrator envs build torch` (./hm test does it before the suites)"
        )
    return VENVS


def _recipes(tmp_path: Path) -> Path:
    """The project's recipe for B, with 5 smoke epochs instead of 2: the kill below lands in
    training (after the first epoch's checkpoint) with epochs to spare."""
    full = tomllib.loads(DEFAULT_RECIPES.read_text())
    b = full["models"]["B"]
    b["smoke"] = {**b["smoke"], "epochs": 5}
    path = tmp_path / "recipes.toml"
    path.write_text(dump_toml({"models": {"B": b}}))
    return path


def _start(data: Path, venvs: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [
        ORCHESTRATOR,
        "run",
        "--recipes",
        str(data.parent / "recipes.toml"),
        "--models",
        "B",
        "--topk",
        "20",
        "--profile",
        "smoke",
        "--runtime",
        "local",
        "--data",
        str(data),
        "--venvs",
        str(venvs),
        "--synthetic",  # the data dir does not exist yet
    ]
    with open(log, "ab") as out:
        # its own process group, like a terminal job: signals reach the orchestrator and stages
        # SIGINT back to its default: a background job (`.ci/run &`) inherits it ignored, and
        # Python would then never turn the test's Ctrl-C into KeyboardInterrupt
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def _wait_running(data: DataDir, slug: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        record = read_record(data, slug)
        if record is not None and record.status == "running":
            time.sleep(1.0)  # let the stage write something into its attempt dir
            return
        assert proc.poll() is None, f"orchestrator exited {proc.returncode} before {slug} ran"
        time.sleep(0.1)
    pytest.fail(f"{slug} never started")


def _wait_log(data: DataDir, slug: str, text: str, count: int, proc: subprocess.Popen) -> None:
    """Wait until the stage log holds `text` `count` times (a record still "running" from a
    killed run says nothing about the new run, its log does)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        log = data.log(slug)
        if log.is_file() and log.read_text().count(text) >= count:
            return
        assert proc.poll() is None, f"orchestrator exited {proc.returncode} before {slug} ran"
        time.sleep(0.05)
    pytest.fail(f"{slug}: {text!r} never appeared {count} times in its log")


def _consistent(data: DataDir) -> dict[str, dict]:
    """Every done record's output hash matches its output, and every consumer's key used it."""
    records = {p.stem: json.loads(p.read_text()) for p in (data.state / "records").glob("*.json")}
    hashes = {r["stage"]: r["output_hash"] for r in records.values() if r["status"] == "done"}
    for record in records.values():
        if record["status"] != "done":
            continue
        assert output_hash(data.root / record["output"]) == record["output_hash"], record["stage"]
    return {"records": records, "hashes": hashes}


def test_smoke_pipeline_kill_resume_and_noop(tmp_path: Path, venvs: Path) -> None:
    # a path longer than a terminal line: messages naming it must not be wrapped
    data = DataDir(tmp_path / ("a-data-directory-with-a-long-name-" * 3) / "data")
    log = tmp_path / "orchestrator.log"
    data.root.parent.mkdir(parents=True)
    _recipes(data.root.parent)

    # 1. SIGKILL the whole group once the first training stage has finished an epoch (its
    #    checkpoint is on disk) and trains on: nothing cleans up.
    proc = _start(data.root, venvs, log)
    _wait_running(data, "train-B-B42-train", proc)
    killed = read_record(data, "train-B-B42-train")
    checkpoint = data.root / killed.attempt / "checkpoint" / "last.pt"
    deadline = time.monotonic() + 600
    while not checkpoint.is_file():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_record(data, "train-B-B42-train").status == "running"
    assert (data.root / killed.attempt / "spec.json").is_file()
    assert not (data.root / killed.attempt / "model.safetensors").exists()  # killed mid-training
    assert not (data.root / "work/runs/B/B42/train").exists()
    assert "generating the synthetic dataset" in log.read_text()

    # 2. SIGINT (Ctrl-C) once the next run's stage has resumed: exit 130, the stage's record
    #    stays "running".
    proc = _start(data.root, venvs, log)
    _wait_log(data, "train-B-B42-train", "resuming from", 1, proc)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=180) == 130, log.read_text()[-3000:]
    assert read_record(data, "train-B-B42-train").status == "running"
    assert (data.root / killed.attempt).is_dir()  # same key ⇒ same attempt dir, kept

    # 3. Resume to the end.
    proc = _start(data.root, venvs, log)
    assert proc.wait(timeout=1800) == 0, log.read_text()[-5000:]
    out = log.read_text()
    assert f"final predictions: {data.root / 'work/ensemble'}/" in out
    assert f"report: {data.root / 'work/report/index.html'}" in out
    header = f"attempt {killed.attempt}"
    stage_log = data.log("train-B-B42-train").read_text()
    assert stage_log.count(header) == 3  # one dir, three tries
    resumed_at = [int(e) for e in re.findall(r"resuming from \S+: epoch (\d+),", stage_log)]
    assert resumed_at and 1 <= resumed_at[0] < 5  # picked up mid-training, not started over
    for run in ("B42", "B43"):
        train = data.root / f"work/runs/B/{run}"
        assert read_predictions(train / "train/predictions/dev_seen.csv").ids.size > 0
        for split in ("test_seen", "test_unseen"):
            assert read_predictions(train / f"traindev/predictions/{split}.csv").ids.size > 0
    for split in SPLITS:
        fin = read_predictions(data.root / f"work/ensemble/FIN_{split}.csv")
        averaged = read_predictions(data.root / f"work/preds/B/{split}.csv")
        assert sorted(fin.ids.tolist()) == sorted(averaged.ids.tolist())
    page = (data.root / "work/report/index.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    state = _consistent(data)
    # the timings the executor wrote for the report: one row per other stage
    assert len(json.loads(data.timings.read_text())) == len(state["records"]) - 1
    assert "<td>train/B/B42/train</td><td>train</td><td>local</td>" in page
    assert "timings" not in state["records"]["report"]["key_parts"]["inputs"]  # not content
    assert {r["status"] for r in state["records"].values()} == {"done"}
    devices = {r["stage"]: r["device"] for r in state["records"].values()}
    assert {devices[f"train/B/B4{i}/{fit}"] for i in (2, 3) for fit in ("train", "traindev")} == {
        "cpu"
    }  # what the stage used, from its metrics.json
    assert devices["prepare"] is None
    average = state["records"]["average-B"]
    assert average["key_parts"]["inputs"]["run:B42:train"] == state["hashes"]["train/B/B42/train"]
    assert not any(p.is_dir() and any(p.iterdir()) for p in (data.work / ".attempts").iterdir())

    # 4. A rerun executes nothing.
    rows_before = len(read_trace(data.trace))
    recipes = data.root.parent / "recipes.toml"
    rerun = subprocess.run(
        [
            ORCHESTRATOR,
            "run",
            "--recipes",
            str(data.root.parent / "recipes.toml"),
            "--models",
            "B",
            "--topk",
            "20",
            "--profile",
            "smoke",
            "--data",
            str(data.root),
            "--venvs",
            str(venvs),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "0 stage(s) ran, 8 cached" in rerun.stdout
    new_rows = read_trace(data.trace)[rows_before:]
    assert len(new_rows) == 8 and {r["cached"] for r in new_rows} == {"1"}
    status = subprocess.run(
        [ORCHESTRATOR, "status", "--recipes", str(recipes), "--data", str(data.root)],
        capture_output=True,
        text=True,
    )
    assert "FIN_dev_seen.csv" in status.stdout and status.stdout.count(" done ") == 8

    # 5. A file deleted inside a finished output: `status` says so, and exactly the stages whose
    #    output changed rerun; they come out identical, so their consumers stay cached.
    (data.root / "work/ensemble/FIN_test_unseen.csv").unlink()
    (data.root / "work/prepared/train.jsonl").unlink()
    status = subprocess.run(
        [ORCHESTRATOR, "status", "--recipes", str(recipes), "--data", str(data.root)],
        capture_output=True,
        text=True,
    )
    assert status.stdout.count(" done ") == 6 and status.stdout.count(" changed ") == 2
    assert "output changed: FIN_test_unseen.csv missing" in status.stdout
    rows_before = len(read_trace(data.trace))
    rerun = subprocess.run(rerun.args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "2 stage(s) ran, 6 cached" in rerun.stdout
    ran = {r["stage"] for r in read_trace(data.trace)[rows_before:] if r["cached"] == "0"}
    assert ran == {"prepare", "ensemble"}
    assert read_predictions(data.root / "work/ensemble/FIN_test_unseen.csv").ids.size > 0
    assert _consistent(data)["hashes"] == state["hashes"]

    # 6. Stages depend on what they read: an image of a meme outside the --topk subset changes
    #    → prepare alone reruns (to the same output); an image B reads changes → B retrains.
    used = json.loads((data.root / "work/prepared/images.json").read_text())
    released = {
        json.loads(line)["img"]
        for split in ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen")
        for line in (data.hm / f"{split}.jsonl").read_text().splitlines()
    }
    unused = sorted(set(released) - set(used))[0]
    for image, expected in ((unused, {"prepare"}), (sorted(used)[0], None)):
        with open(data.hm / image, "ab") as handle:
            handle.write(b"\0")  # a PNG with a trailing byte: decoded the same, hashed anew
        rows_before = len(read_trace(data.trace))
        rerun = subprocess.run(rerun.args, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr
        ran = {r["stage"] for r in read_trace(data.trace)[rows_before:] if r["cached"] == "0"}
        if expected:
            assert ran == expected, image
        else:
            assert {"prepare", "train/B/B42/train", "train/B/B43/traindev"} <= ran, image
