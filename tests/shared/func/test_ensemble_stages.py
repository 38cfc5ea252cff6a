"""average → ensemble → report as real `python -m hm_shared` processes on files in tmp_path."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from spec_helpers import make_spec

from hm_shared.metrics import auroc
from hm_shared.predictions import Predictions, read_predictions, write_predictions

SPLITS = {"dev_seen": 60, "test_seen": 40, "test_unseen": 30}
MODELS = {"U": 2.0, "O": 1.0, "V": 0.3}  # signal strength per model: U best
SEEDS = (1, 2)


def _ids(split: str) -> list[str]:
    offset = {"dev_seen": 1000, "test_seen": 3000, "test_unseen": 6000}[split]
    return [f"{offset + i:05d}" for i in range(SPLITS[split])]  # zero-padded, e.g. "01000"


def _labels(split: str) -> np.ndarray:
    return (np.arange(SPLITS[split]) % 3 == 0).astype(int)  # one third hateful


def _write_runs(root: Path) -> dict[str, dict[str, str]]:
    """Train-stage outputs per model: run:<run>:train has dev_seen, run:<run>:traindev the tests."""
    rng = np.random.default_rng(0)
    inputs: dict[str, dict[str, str]] = {}
    for letter, strength in MODELS.items():
        inputs[letter] = {}
        for seed in SEEDS:
            run = f"{letter}{seed}"
            fits = (("train", ["dev_seen"]), ("traindev", ["test_seen", "test_unseen"]))
            for fit, splits in fits:
                rel = f"work/runs/{letter}/{run}/{fit}"
                for split in splits:
                    logit = strength * _labels(split) + rng.normal(size=SPLITS[split])
                    proba = 1 / (1 + np.exp(-logit))
                    order = rng.permutation(SPLITS[split])  # rows in a different order per run
                    ids = np.array(_ids(split))[order]
                    write_predictions(
                        root / rel / "predictions" / f"{split}.csv",
                        Predictions(ids, proba[order], (proba[order] >= 0.5) * 1),
                    )
                inputs[letter][f"run:{run}:{fit}"] = rel
    return inputs


def _write_prepared(root: Path) -> None:
    rows = [
        {"id": i, "img": f"img/{i}.png", "text": f"text of {i}", "label": int(y)}
        for i, y in zip(_ids("dev_seen"), _labels("dev_seen"), strict=True)
    ]
    path = root / "work/prepared/dev_seen.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run_stage(
    root: Path, kind: str, slug: str, inputs: dict[str, str]
) -> tuple[subprocess.CompletedProcess, Path]:
    spec = make_spec(
        slug, root, kind=kind, env="host", output=f"work/.attempts/{slug}/key", inputs=inputs
    )
    spec_path = root / "specs" / f"{slug}.json"
    spec.write(spec_path)
    proc = subprocess.run(
        [sys.executable, "-m", "hm_shared", kind, "--spec", str(spec_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc, spec.output_dir


def _promote(out: Path, root: Path, rel: str) -> str:
    """What the orchestrator does on success: rename the attempt onto the output path."""
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    out.rename(target)
    return rel


def test_average_ensemble_report_pipeline(tmp_path: Path) -> None:
    runs = _write_runs(tmp_path)
    _write_prepared(tmp_path)
    model_inputs = {}
    for letter, inputs in runs.items():
        proc, out = _run_stage(tmp_path, "average", f"average-{letter}", inputs)
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in out.iterdir()) == [
            "average.json",
            "dev_seen.csv",
            "test_seen.csv",
            "test_unseen.csv",
        ]
        assert sorted(read_predictions(out / "dev_seen.csv").ids.tolist()) == _ids("dev_seen")
        model_inputs[f"model:{letter}"] = _promote(out, tmp_path, f"work/preds/{letter}")

    proc, out = _run_stage(
        tmp_path, "ensemble", "ensemble", model_inputs | {"prepared": "work/prepared"}
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "ensemble.json").read_text())
    assert set(summary["column_auroc"]) == set(MODELS)
    assert max(summary["column_auroc"], key=summary["column_auroc"].get) == "U"
    assert summary["dev_auroc"] >= summary["column_auroc"]["U"]
    assert [len(r["columns"]) for r in summary["rounds"]] == [3, 5]
    assert set(summary["weights"]) == set(summary["rounds"][1]["columns"])
    assert summary["inputs"] == {letter: f"work/preds/{letter}" for letter in MODELS}
    for split, n in SPLITS.items():
        fin = read_predictions(out / f"FIN_{split}.csv")
        assert len(fin) == n and sorted(fin.ids.tolist()) == _ids(split)
        assert (fin.label == (fin.proba >= summary["threshold"])).all()
    dev = read_predictions(out / "FIN_dev_seen.csv")
    labels = dict(zip(_ids("dev_seen"), _labels("dev_seen").tolist(), strict=True))
    y = [labels[i] for i in dev.ids.tolist()]
    assert abs(auroc(y, dev.proba) - summary["dev_auroc"]) < 1e-12
    ensemble_rel = _promote(out, tmp_path, "work/ensemble")

    timings = [
        {
            "stage": "ensemble",
            "kind": "ensemble",
            "runtime": "local",
            "start": "a",
            "end": "b",
            "seconds": 0.5,
            "cached": False,
        }
    ]
    (tmp_path / "work/state").mkdir(parents=True)
    (tmp_path / "work/state/timings.json").write_text(json.dumps(timings))
    proc, out = _run_stage(
        tmp_path,
        "report",
        "report",
        model_inputs
        | {
            "prepared": "work/prepared",
            "ensemble": ensemble_rel,
            "timings": "work/state/timings.json",
        },
    )
    assert proc.returncode == 0, proc.stderr
    page = (out / "index.html").read_text()
    assert page.count("<svg") == len(MODELS) + 1
    assert "<script" not in page and "<td>ensemble</td>" in page


def test_bad_prediction_file_exits_3_naming_file_and_line(tmp_path: Path) -> None:
    runs = _write_runs(tmp_path)
    bad = tmp_path / runs["U"]["run:U1:train"] / "predictions" / "dev_seen.csv"
    lines = bad.read_text().splitlines()
    meme_id = lines[4].split(",")[0]
    lines[4] = f"{meme_id},1.7,1"
    bad.write_text("\n".join(lines) + "\n")
    proc, _ = _run_stage(tmp_path, "average", "average-U", runs["U"])
    assert proc.returncode == 3
    assert f"{bad}:5: Expected proba in [0, 1], got 1.7 for id {meme_id}" in proc.stderr


@pytest.mark.parametrize("missing", ["test_unseen.csv", "prepared"])
def test_ensemble_stage_missing_inputs_exit_3(tmp_path: Path, missing: str) -> None:
    runs = _write_runs(tmp_path)
    _write_prepared(tmp_path)
    model_inputs = {}
    for letter in ("U", "O"):
        proc, out = _run_stage(tmp_path, "average", f"average-{letter}", runs[letter])
        assert proc.returncode == 0, proc.stderr
        model_inputs[f"model:{letter}"] = _promote(out, tmp_path, f"work/preds/{letter}")
    if missing == "prepared":
        (tmp_path / "work/prepared/dev_seen.jsonl").unlink()
    else:
        (tmp_path / "work/preds/O" / missing).unlink()
    proc, _ = _run_stage(
        tmp_path, "ensemble", "ensemble", model_inputs | {"prepared": "work/prepared"}
    )
    assert proc.returncode == 3, proc.stderr
    expected = "dev_seen.jsonl" if missing == "prepared" else "model O has no test_unseen.csv"
    assert expected in proc.stderr
