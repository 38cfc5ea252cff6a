"""`python -m hm_paddle train --spec …` as a real process on prepared splits and feature stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import write_prepared_split, write_store, xor_memes
from spec_helpers import make_spec

from hm_shared.predictions import read_predictions

DIM = 16
SPLITS = {
    "train": (60, 1, 0),
    "dev_seen": (20, 2, 1000),
    "test_seen": (12, 3, 2000),
    "test_unseen": (12, 4, 3000),
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    main, extra = {}, {}
    for split, (n, seed, first) in SPLITS.items():
        memes = xor_memes(n, seed, DIM, first)
        rows = memes.rows if split != "test_unseen" else [(i, t, None) for i, t, _ in memes.rows]
        write_prepared_split(root / "work/prepared" / f"{split}.jsonl", rows)
        main |= memes.main
        extra |= memes.extra
    train = [
        r for s in ("train", "dev_seen") for r in xor_memes(*SPLITS[s][:2], DIM, SPLITS[s][2]).rows
    ]
    write_prepared_split(root / "work/prepared/traindev.jsonl", train)
    write_store(root / "work/features/vgattr3636", main, DIM)
    write_store(root / "work/features/vgattr10100", extra, DIM)
    return root


def _spec(root: Path, name: str, fit: str, predict: list[str], **params: Any) -> Path:
    spec = make_spec(
        f"train/ES/{name}/{fit}",
        root,
        kind="train",
        env="paddle",
        output=f"work/.attempts/{name}-{fit}/abc",
        inputs={
            "prepared": "work/prepared",
            "features": "work/features/vgattr3636",
            "extra_features": "work/features/vgattr10100",
        },
        run={
            "model": "ES",
            "run": name,
            "seed": 36,
            "fit": fit,
            "predict": predict,
            "valid": "dev_seen",
            "features": "vgattr3636",
            "extra_features": "vgattr10100",
        },
        recipe={
            "size": "tiny",
            "smoke_vocab_size": 100,
            "lr": 1e-3,
            "warmup_steps": 5,
            "batch_size": 8,
            **params,
        },
    )
    path = root / f"{name}-{fit}.spec.json"
    spec.write(path)
    return path


def _command(spec: Path) -> list[str]:
    return [sys.executable, "-m", "hm_paddle", "train", "--spec", str(spec)]


def test_traindev_fit_predicts_both_test_splits(data_root: Path) -> None:
    spec = _spec(data_root, "ES36", "traindev", ["test_seen", "test_unseen"], steps=12, log_every=4)
    done = subprocess.run(_command(spec), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = data_root / "work/.attempts/ES36-traindev/abc"
    for split in ("test_seen", "test_unseen"):
        preds = read_predictions(out / "predictions" / f"{split}.csv")
        assert len(preds) == SPLITS[split][0]
        assert ((preds.proba >= 0) & (preds.proba <= 1)).all()
    assert (out / "model.pdparams").is_file() and (out / "vocab.txt").is_file()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [4, 8, 12]
    assert not (out / "checkpoint").exists()
    assert json.loads((out / "metrics.json").read_text())["device"] == "cpu"


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint(data_root: Path) -> None:
    spec = _spec(
        data_root, "ES72", "train", ["dev_seen"], steps=60, checkpoint_every=5, log_every=5
    )
    out = data_root / "work/.attempts/ES72-train/abc"
    checkpoint = out / "checkpoint/state.pdckpt"
    proc = subprocess.Popen(_command(spec), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # simulated crash mid-training
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert checkpoint.is_file() and not (out / "predictions").exists()
    done = subprocess.run(_command(spec), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    resumed = [e for e in log if e.get("event") == "resumed"]
    assert len(resumed) == 1 and 5 <= resumed[0]["step"] < 60
    steps = [e["step"] for e in log if "loss" in e]
    assert steps == list(range(5, 65, 5))  # every step logged once, none repeated
    preds = read_predictions(out / "predictions/dev_seen.csv")
    assert len(preds) == SPLITS["dev_seen"][0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["dev_seen"]["auroc"] <= 1.0
    assert not checkpoint.exists()


def test_bad_spec_input_exits_with_data_error(data_root: Path) -> None:
    spec = _spec(data_root, "ESbad", "train", ["dev_seen"], steps=2)
    raw = json.loads(spec.read_text())
    raw["inputs"]["features"] = "work/features/absent"
    spec.write_text(json.dumps(raw))
    done = subprocess.run(_command(spec), capture_output=True, text=True, timeout=300)
    assert done.returncode == 3 and "work/features/absent" in done.stderr


def test_misspelt_param_is_a_usage_error_naming_it(data_root: Path) -> None:
    spec = _spec(data_root, "EStypo", "train", ["dev_seen"], steps=2, warmup_step=5)
    done = subprocess.run(_command(spec), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "unknown param(s) ['warmup_step']" in done.stderr and "'warmup_steps'" in done.stderr


def test_cuda_asked_of_the_cpu_build_is_a_clear_error(data_root: Path) -> None:
    # the paddle environment here carries the CPU wheel: a GPU lease must not train on the CPU
    spec = _spec(data_root, "ESgpu", "train", ["dev_seen"], steps=2)
    raw = json.loads(spec.read_text())
    raw["device"] = "cuda"
    spec.write_text(json.dumps(raw))
    done = subprocess.run(_command(spec), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "spec asks for device cuda but this paddle 2.6.2 is a CPU-only build" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (data_root / "work/.attempts/ESgpu-train/abc/checkpoint").exists()  # nothing ran
