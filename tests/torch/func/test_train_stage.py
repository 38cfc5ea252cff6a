"""`python -m hm_torch train --spec FILE` as the orchestrator runs it: a real subprocess on a
prepared synthetic dataset, its outputs, and its exit codes on bad input."""

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
import torch
from safetensors.torch import load_file, save_file
from spec_helpers import make_spec

from hm_shared.dataset import read_prepared
from hm_shared.predictions import read_predictions
from hm_torch.models.baseline import RESNET152_URL

SMOKE = {
    "backbone": "small_cnn",
    "small_cnn_width": 4,
    "image_size": 32,
    "text_dim": 16,
    "fasttext_bucket": 20000,
    "vision_dim": 8,
    "language_dim": 8,
    "fusion_dim": 8,
    "lr": 1e-3,
    "epochs": 2,
    "batch_size": 8,
    "early_stopping": 2,
    "balance": "sampler",
    "checkpoint_every": 1,
    "log_every": 1,
}


def _spec(
    root: Path,
    name: str,
    params: dict[str, Any],
    inputs: dict[str, str] | None = None,
    profile: str = "smoke",
    run: dict[str, Any] | None = None,
) -> Path:
    stage = make_spec(
        f"train/B/{name}/train",
        root,
        kind="train",
        env="torch",
        output=f"work/.attempts/{name}",
        profile=profile,
        inputs=inputs if inputs is not None else {"prepared": "work/prepared", "hm": "hm"},
        recipe=params,
        run={
            "model": "B",
            "run": "B42",
            "seed": 42,
            "fit": "train",
            "predict": ["dev_seen", "test_seen"],
            "valid": "dev_seen",
            **(run or {}),
        },
    )
    path = root / "specs" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    stage.write(path)
    return path


def _command(spec: Path, verb: str = "train") -> list[str]:
    return [sys.executable, "-m", "hm_torch", verb, "--spec", str(spec)]


def _run(spec: Path, verb: str = "train") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(spec, verb),
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_train_stage_writes_predictions_weights_log_metrics(tiny_data: Path) -> None:
    result = _run(_spec(tiny_data, "ok", SMOKE))
    assert result.returncode == 0, result.stderr
    out = tiny_data / "work" / ".attempts" / "ok"
    for split in ("dev_seen", "test_seen"):
        preds = read_predictions(out / "predictions" / f"{split}.csv")
        memes = read_prepared(tiny_data / "work" / "prepared" / f"{split}.jsonl")
        assert preds.ids.tolist() == [m.id for m in memes]
        assert ((preds.proba >= 0) & (preds.proba <= 1)).all()
        assert ((preds.proba >= 0.5) == (preds.label == 1)).all()
    weights = load_file(out / "model.safetensors")
    assert weights["classifier.weight"].shape == (2, 8)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("loss" in r and "lr" in r for r in log)
    assert any("dev_auroc" in r for r in log)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["dev_seen"]) >= {"auroc", "accuracy", "loss"}
    assert "test_seen" not in metrics  # unlabelled
    assert not (out / "checkpoint").exists()
    assert sorted(p.name for p in out.iterdir()) == [
        "log.jsonl",
        "metrics.json",
        "model.safetensors",
        "predictions",
    ]


@pytest.mark.slow
def test_killed_stage_resumes_to_the_same_weights(tiny_data: Path) -> None:
    params = {**SMOKE, "epochs": 3}  # both branches: fastText vectors are reproducible too
    whole = _run(_spec(tiny_data, "whole", params))
    assert whole.returncode == 0, whole.stderr

    spec = _spec(tiny_data, "killed", params)
    checkpoint = tiny_data / "work" / ".attempts" / "killed" / "checkpoint" / "last.pt"
    process = subprocess.Popen(
        _command(spec),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the stage ended before it could be killed"
    assert checkpoint.exists()

    resumed = _run(spec)
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(tiny_data / "work" / ".attempts" / "whole" / "model.safetensors")
    b = load_file(tiny_data / "work" / ".attempts" / "killed" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    whole_csv = tiny_data / "work" / ".attempts" / "whole" / "predictions" / "dev_seen.csv"
    killed_csv = tiny_data / "work" / ".attempts" / "killed" / "predictions" / "dev_seen.csv"
    assert whole_csv.read_text() == killed_csv.read_text()


@pytest.mark.parametrize(
    ("name", "params", "run", "code", "message"),
    [
        ("letter", {}, {"model": "Q"}, 2, "model 'Q' is not a model of hm_torch; valid: ['B'"),
        ("param", {"fusion_size": 3}, {}, 2, "unknown model B param(s) ['fusion_size']"),
        ("seed", {"seed": 3}, {}, 2, "unknown model B param(s) ['seed']"),  # the run's
        ("fit", {}, {"fit": "dev"}, 2, "run.fit\n  Input should be 'train' or 'traindev'"),
        ("split", {}, {"predict": ["dev_nope"]}, 3, "dev_nope.jsonl: prepared split 'dev_nope'"),
    ],
)
def test_bad_spec_exits_with_its_code(
    tiny_data: Path,
    name: str,
    params: dict[str, Any],
    run: dict[str, Any],
    code: int,
    message: str,
) -> None:
    params = {**SMOKE, "epochs": 1, **params}
    spec = tiny_data / "specs" / f"bad-{name}.json"
    if name == "fit":  # a spec the orchestrator cannot write: edit a good one
        raw = json.loads(_spec(tiny_data, f"bad-{name}", params).read_text())
        spec.write_text(json.dumps(raw | {"run": raw["run"] | run}))
    else:
        spec = _spec(tiny_data, f"bad-{name}", params, run=run)
    result = _run(spec)
    assert result.returncode == code, result.stderr
    assert message in result.stderr


def test_missing_resnet_weights_exit_3_naming_file_and_url(tiny_data: Path) -> None:
    (tiny_data / "weights").mkdir(exist_ok=True)
    params = {**SMOKE, "backbone": "resnet152", "checkpoint": "resnet152-f82ba261.pth"}
    weight = {"weights:resnet152-f82ba261.pth": "weights/resnet152-f82ba261.pth"}
    inputs = {"prepared": "work/prepared", "hm": "hm", **weight}
    result = _run(_spec(tiny_data, "noweights", params, inputs, profile="full"))
    assert result.returncode == 3, result.stderr
    assert str(tiny_data / "weights/resnet152-f82ba261.pth") in result.stderr
    assert RESNET152_URL in result.stderr


def test_unreadable_spec_exits_2(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text("{not json")
    result = _run(spec)
    assert result.returncode == 2
    assert f"{spec}: cannot read stage spec" in result.stderr


def _predict_spec(root: Path, name: str, fit: str) -> Path:
    # `orchestrator predict`'s stage: the fit's params, the memes to score as `prepared`
    stage = make_spec(
        f"predict/tag/run/B/{name}",
        root,
        kind="predict",
        env="torch",
        output=f"work/.attempts/{name}",
        inputs={
            "prepared": "work/prepared",
            "run_prepared": "work/prepared",
            "hm": "hm",
            "fit": fit,
        },
        recipe=SMOKE,
        run={"model": "B", "run": "B42", "seed": 42, "fit": "train", "predict": ["test_seen"]},
    )
    path = root / "specs" / f"{name}.json"
    stage.write(path)
    return path


def test_predict_stage_scores_as_the_fit_did_and_refuses_weights_of_another_model(
    tiny_data: Path,
) -> None:
    assert _run(_spec(tiny_data, "fit", SMOKE)).returncode == 0
    spec = _predict_spec(tiny_data, "scored", "work/.attempts/fit")
    result = _run(spec, verb="predict")
    assert result.returncode == 0, result.stderr
    attempts = tiny_data / "work" / ".attempts"
    fit = (attempts / "fit/predictions/test_seen.csv").read_bytes()
    assert (attempts / "scored/predictions/test_seen.csv").read_bytes() == fit  # same bytes
    assert not (attempts / "scored/model.safetensors").exists()  # nothing trained

    weights = load_file(attempts / "fit/model.safetensors")
    weights["head.weight"] = weights.pop("classifier.weight")
    other = attempts / "other"
    other.mkdir()
    save_file(weights, other / "model.safetensors")
    spec = _predict_spec(tiny_data, "refused", "work/.attempts/other")
    result = _run(spec, verb="predict")
    assert result.returncode == 3, result.stderr
    assert f"{other / 'model.safetensors'}: the weights do not fit the model" in result.stderr
    assert "missing ['classifier.weight'], unexpected ['head.weight']" in result.stderr
