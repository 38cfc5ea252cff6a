"""`orchestrator predict` end to end (issue 16), local runtime, smoke profile, one run a model:

1. `orchestrator run --models B,U` trains the run predict uses: B reads the pictures, U region
   features. (tests/docker/test_pipeline_docker.py predicts with B, C, U, ES, X and D under
   --runtime docker: the paddle predict stage and C's CLIP embeddings, to the same exactness.)
2. predict on the run's own test_unseen memes (a jsonl) gives exactly FIN_test_unseen.csv, and
   each model exactly its seed average there; the same command again runs nothing.
3. predict on new synthetic memes (another seed), a folder with a stray file, texts by OCR:
   scores, texts and the page; `--ocr none` names the memes without text.
4. predict killed during its extraction resumes: the rerun detects only the images not yet
   committed.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from recipe_helpers import one_run_recipes

from hm_shared.features import FeatureStore
from hm_shared.synthetic import generate
from orchestrator.datadir import DataDir
from orchestrator.predict import PredictInput
from orchestrator.records import read_trace

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
VENVS = Path(os.environ.get("HM_VENVS", REPO / ".venvs"))
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")
MODELS = "B,U"
SELECTION = ["--models", MODELS, "--profile", "smoke", "--topk", "20"]


def _cli(tmp: Path, *args: str) -> list[str]:
    return [
        ORCHESTRATOR,
        *args,
        *SELECTION,
        "--recipes",
        str(tmp / "recipes.toml"),
        "--data",
        str(tmp / "data"),
        "--venvs",
        str(VENVS),
    ]


def _orchestrator(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cli(tmp, *args), capture_output=True, text=True, timeout=1800)


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def _ran(tmp: Path, since: int) -> list[str]:
    trace = read_trace(DataDir(tmp / "data").trace)[since:]
    return sorted(r["stage"] for r in trace if r["cached"] == "0")


def _trace_len(tmp: Path) -> int:
    return len(read_trace(DataDir(tmp / "data").trace))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("predict")
    recipes = one_run_recipes(REPO / "orchestrator/orchestrator/recipes.toml", MODELS.split(","))
    (tmp / "recipes.toml").write_text(recipes)
    result = _orchestrator(tmp, "run", "--synthetic", "--jobs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp


def test_predict_on_a_split_of_the_run_gives_exactly_its_final_predictions(trained: Path) -> None:
    data = trained / "data"
    memes = [json.loads(line) for line in (data / "work/prepared/test_unseen.jsonl").open()]
    inputs = trained / "again"
    inputs.mkdir()
    with (inputs / "memes.jsonl").open("w") as handle:  # ids as integers, as some releases
        for m in memes:
            row = {"id": int(m["id"]), "img": f"../data/hm/{m['img']}", "text": m["text"]}
            handle.write(json.dumps(row) + "\n")
    out = trained / "scores" / "again.csv"
    since = _trace_len(trained)
    first = _orchestrator(
        trained, "predict", "--input", str(inputs / "memes.jsonl"), "--out", str(out), "--per-model"
    )
    assert first.returncode == 0, first.stderr[-3000:]
    ran = _ran(trained, since)
    assert not [s for s in ran if not s.startswith("predict/")], ran  # the run is not touched
    assert len([s for s in ran if "/run/" in s]) == 2  # one predict stage per fit
    rows = _rows(out)
    assert rows[0] == ["id", "proba", "label", "B", "U"]
    final = _rows(data / "work/ensemble/FIN_test_unseen.csv")
    assert sorted(r[:3] for r in rows[1:]) == sorted(final[1:])  # the very same floats
    for column, model in enumerate(("B", "U"), start=3):
        averaged = {r[0]: r[1] for r in _rows(data / f"work/preds/{model}/test_unseen.csv")[1:]}
        assert {r[0]: r[column] for r in rows[1:]} == averaged, model
    texts = _rows(out.with_suffix(".texts.csv"))
    assert texts[1:] == [[m["id"], m["text"], "given"] for m in memes]
    since = _trace_len(trained)
    again = _orchestrator(trained, "predict", "--input", str(inputs / "memes.jsonl"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 stage(s) ran" in again.stdout and _ran(trained, since) == []


def _new_memes(folder: Path, seed: int, count: int) -> list[str]:
    generate(folder.parent / f"synthetic-{seed}", seed=seed)
    images = sorted((folder.parent / f"synthetic-{seed}" / "img").iterdir())[:count]
    folder.mkdir()
    for image in images:
        shutil.copy(image, folder / image.name)
    return [image.stem for image in images]


def test_predict_scores_new_memes_reading_their_text_by_ocr(trained: Path) -> None:
    folder = trained / "new"
    ids = _new_memes(folder, seed=1, count=6)
    (folder / "README.txt").write_text("memes from the moderation queue")
    refused = _orchestrator(trained, "predict", "--input", str(folder), "--ocr", "none")
    assert refused.returncode == 3
    assert f"6 meme(s) have no text and --ocr is none: {ids[0]} (" in refused.stderr
    out = trained / "scores" / "new.csv"
    result = _orchestrator(trained, "predict", "--input", str(folder), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "skipped 1 file(s) of the input: README.txt (not an image format (.txt))" in result.stdout
    )
    assert "6 text(s) read by tesseract" in result.stdout
    rows = _rows(out)
    assert rows[0] == ["id", "proba", "label"] and sorted(r[0] for r in rows[1:]) == ids
    threshold = json.loads((trained / "data/work/ensemble/ensemble.json").read_text())["threshold"]
    for _, proba, label in rows[1:]:
        assert 0.0 <= float(proba) <= 1.0 and int(label) == int(float(proba) >= threshold)
    texts = _rows(out.with_suffix(".texts.csv"))[1:]
    assert [t[2] for t in texts] == ["ocr"] * 6 and any(t[1] for t in texts)
    page = out.with_suffix(".html").read_text()
    assert page.count("<tr><td") == 6 and page.count("data:image/jpeg;base64,") == 6
    shown = [page.index(f'alt="{r[0]}"') for r in sorted(rows[1:], key=lambda r: -float(r[1]))]
    assert shown == sorted(shown)  # highest score first


def test_predict_killed_during_extraction_resumes(trained: Path) -> None:
    # enough memes that the stage's first 5 s commit comes before its last image: with 24 a
    # fast machine detected them all first, and the kill then only cut the final bookkeeping
    folder = trained / "queue"
    ids = _new_memes(folder, seed=2, count=80)
    lines = [json.dumps({"img": f"{i}.png", "text": f"caption {n}"}) for n, i in enumerate(ids)]
    (folder / "memes.jsonl").write_text("\n".join(lines) + "\n")
    command = _cli(trained, "predict", "--input", str(folder / "memes.jsonl"))
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    attempts = trained / "data/work/.attempts"
    tag = PredictInput.of(folder / "memes.jsonl").tag  # this input's stages only
    deadline = time.monotonic() + 600
    while True:  # until one store of a predict extract attempt holds committed rows
        stores = [p.parent for p in attempts.glob(f"predict-{tag}-extract-*/*/*/store.json")]
        if any(len(FeatureStore(s)) > 0 for s in stores):
            break
        assert proc.poll() is None, "predict ended before its extraction committed a row"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    since = _trace_len(trained)
    resumed = _orchestrator(trained, "predict", "--input", str(folder / "memes.jsonl"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ran = _ran(trained, since)
    assert not any(s.endswith("/intake") for s in ran)  # done before the kill: cached
    detected = []
    for stage in (s for s in ran if "/extract/" in s):  # predict/<tag>/extract/<checkpoint>
        checkpoint = stage.rsplit("/", 1)[1]
        stats = trained / f"data/work/predict/{tag}/features/{checkpoint}/stats.json"
        detected.append(json.loads(stats.read_text())["detector_images"])
    assert detected and all(n <= len(ids) for n in detected)
    assert min(detected) < len(ids)  # the rows committed before the kill were not redone


def test_predict_with_models_the_run_did_not_train_names_the_command_that_trains_them(
    trained: Path,
) -> None:
    # the run blended B,U: neither model alone has an ensemble of its own
    for models in ("B", "U"):
        command = _cli(trained, "predict", "--input", str(trained / "data/hm/img"))
        command[command.index(MODELS)] = models
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 3, result.stderr
        assert f"the run of {models} (smoke profile) is not finished here" in result.stderr
        assert (
            f"`orchestrator run --models {models} --profile smoke --topk 20 --data" in result.stderr
        )
