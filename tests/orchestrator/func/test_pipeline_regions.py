"""End to end with region features, the project's recipes as they are:

1. `orchestrator run --models U,O,V --topk 20 --profile smoke --runtime local` (issue 4, with
   `--jobs 2` to overlap the stages' start-up): every run of U, O and V (3 each), O and V
   pre-trained once per run, per-model seed averages and the ensemble; their five variants come
   from both detector checkpoints: exactly two detector passes per image (issue 12: the
   counter each extract stage records), which also write the sixth variant (`vg10100`).
2. `orchestrator run --models ES,EL …` (issue 5) on the same data directory: the variant new
   to ERNIE-ViL (`vg10100`) is already there: no extract stage, no detector pass.
3. `--models U,O,V,ES,EL,X,D` (issue 11): the two-stream X and D read variants that are
   already extracted: only their stages (X pre-trained once per run), the ensemble and the
   report run, over all seven models.
4. the same command again runs nothing and leaves the stores untouched.
5. `--models C,U` (issue 14): the CLIP embed stage and C's runs, no extraction; then nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hm_shared.dataset import read_prepared
from hm_shared.features import FeatureStore
from hm_shared.predictions import read_predictions
from orchestrator.datadir import DataDir
from orchestrator.recipes import DEFAULT_RECIPES, load_recipes
from orchestrator.records import read_trace
from orchestrator.runtimes import RuntimeConfig
from orchestrator.runtimes.local import LocalRuntime

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
VENVS = Path(os.environ.get("HM_VENVS", REPO / ".venvs"))
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")
SINGLE = ("U", "O", "V")
ERNIE = ("ES", "EL")
TWO_STREAM = ("X", "D")
# variant → (detector checkpoint, boxes per image; 0: 10 to 100)
VARIANTS = {
    "vgattr3636": ("attr", 36),
    "vgattr5050": ("attr", 50),
    "vgattr7272": ("attr", 72),
    "vgattr10100": ("attr", 0),
    "vg5050": ("plain", 50),
    "vg10100": ("plain", 0),
}
SPLITS = ("dev_seen", "test_seen", "test_unseen")
PREPARED = ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen", "traindev", "pretrain")


@pytest.fixture(scope="module")
def venvs() -> Path:
    runtime = LocalRuntime(RuntimeConfig(repo=REPO, venvs=VENVS))
    stale = [env for env in ("extract", "torch", "paddle") if not runtime.is_current(env)]
    if stale:
        pytest.fail(
            f"the venvs {stale} under {VENVS} are missing or stale: run "
            "`orchestrator envs build extract torch paddle` (./hm test does it before the suites)",
            pytrace=False,
        )
    return VENVS


def _run(data: Path, models: tuple[str, ...], venvs: Path) -> subprocess.CompletedProcess[str]:
    cmd = [ORCHESTRATOR, "run", "--models", ",".join(models), "--topk", "20"]
    cmd += ["--profile", "smoke", "--runtime", "local", "--data", str(data)]
    # two stages at once: most of a smoke stage is its process start-up, which overlaps well
    cmd += ["--venvs", str(venvs), "--jobs", "2", "--synthetic"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=3000)


def _ran(data: DataDir, rows: int) -> list[str]:
    return sorted(r["stage"] for r in read_trace(data.trace)[rows:] if r["cached"] == "0")


def _assert_seed_average(data: DataDir, letter: str, runs: list[str]) -> None:
    for split in SPLITS:
        fit = "train" if split == "dev_seen" else "traindev"
        per_run = [
            read_predictions(
                data.work / "runs" / letter / run / fit / "predictions" / f"{split}.csv"
            )
            for run in runs
        ]
        by_id = [dict(zip(p.ids.tolist(), p.proba.tolist(), strict=True)) for p in per_run]
        averaged = read_predictions(data.work / "preds" / letter / f"{split}.csv")
        assert sorted(averaged.ids.tolist()) == sorted(by_id[0])
        for meme, proba in zip(averaged.ids.tolist(), averaged.proba.tolist(), strict=True):
            assert proba == pytest.approx(sum(r[meme] for r in by_id) / len(runs), abs=1e-9)


@pytest.mark.timeout(3000)  # 12 min with one job on an idle 2-core machine: 71 stages
def test_region_models_share_variants_average_seeds_and_rerun_nothing(
    tmp_path: Path, venvs: Path
) -> None:
    recipes = load_recipes(DEFAULT_RECIPES)
    data = DataDir(tmp_path / "data")

    # 1. U, O, V with every upstream run
    done = _run(data.root, SINGLE, venvs)
    assert done.returncode == 0, done.stderr[-5000:]
    ran = _ran(data, 0)
    assert [s for s in ran if s.startswith("extract/")] == ["extract/attr", "extract/plain"]
    for letter in SINGLE:
        runs = [run.name for run in recipes.models[letter].runs]
        assert len(runs) == 3
        for run in runs:
            assert {f"train/{letter}/{run}/train", f"train/{letter}/{run}/traindev"} <= set(ran)
            if letter in ("O", "V"):  # task pre-training, once per run (vilio's bash scripts)
                assert f"pretrain/{letter}/{run}" in ran
        _assert_seed_average(data, letter, runs)
    ensemble = json.loads((data.work / "ensemble" / "ensemble.json").read_text())
    assert sorted(ensemble["inputs"]) == sorted(SINGLE)

    # each store holds every image the prepared splits reference, once
    splits = [data.work / "prepared" / f"{name}.jsonl" for name in PREPARED]
    wanted = sorted({m.id for path in splits if path.is_file() for m in read_prepared(path)})
    for variant, (checkpoint, boxes) in VARIANTS.items():
        store = FeatureStore(data.work / "features" / checkpoint / variant)
        assert sorted(store.ids()) == wanted, variant
        count = len(store[wanted[0]].boxes)
        assert count == boxes if boxes else 10 <= count <= 100, (variant, count)
    # two detector passes per image, one per checkpoint, for all six variants
    passes = {
        checkpoint: json.loads((data.work / "features" / checkpoint / "stats.json").read_text())
        for checkpoint in ("attr", "plain")
    }
    assert {c: (p["images"], p["detector_images"]) for c, p in passes.items()} == {
        "attr": (len(wanted), len(wanted)),
        "plain": (len(wanted), len(wanted)),
    }

    # 2. ERNIE-ViL on the same data dir: its new variant was written by the plain pass
    rows = len(read_trace(data.trace))
    ernie = _run(data.root, ERNIE, venvs)
    assert ernie.returncode == 0, ernie.stderr[-5000:]
    ran = _ran(data, rows)
    assert [s for s in ran if s.startswith("extract/")] == []
    assert "prepare" not in ran
    for letter in ERNIE:
        _assert_seed_average(data, letter, [run.name for run in recipes.models[letter].runs])
    ensemble = json.loads((data.work / "ensemble" / "ensemble.json").read_text())
    assert sorted(ensemble["inputs"]) == sorted(ERNIE)

    # 3. all seven: the five models' stages are cached, X and D run on the stores that exist
    everything = SINGLE + ERNIE + TWO_STREAM
    rows = len(read_trace(data.trace))
    both = _run(data.root, everything, venvs)
    assert both.returncode == 0, both.stderr[-5000:]
    new = []
    for letter in TWO_STREAM:
        runs = [run.name for run in recipes.models[letter].runs]
        assert len(runs) == 3
        new += [f"average/{letter}"]
        new += [f"train/{letter}/{run}/{fit}" for run in runs for fit in ("train", "traindev")]
        new += [f"pretrain/{letter}/{run}" for run in runs if letter == "X"]
        _assert_seed_average(data, letter, runs)
    assert _ran(data, rows) == sorted([*new, "ensemble", "report"])
    ensemble = json.loads((data.work / "ensemble" / "ensemble.json").read_text())
    assert sorted(ensemble["inputs"]) == sorted(everything)  # X and D blended like the rest
    for split in SPLITS:
        assert read_predictions(data.work / "ensemble" / f"FIN_{split}.csv").ids.size > 0

    # 4. a rerun runs nothing: every stage cached, the stores untouched
    stores = [data.work / "features" / c / v for v, (c, _) in VARIANTS.items()]
    stamps = {store: (store / "features.f32").stat().st_mtime_ns for store in stores}
    rows = len(read_trace(data.trace))
    again = _run(data.root, everything, venvs)
    assert again.returncode == 0, again.stderr[-5000:]
    rerun = read_trace(data.trace)[rows:]
    assert rerun and {row["cached"] for row in rerun} == {"1"}
    assert stamps == {store: (store / "features.f32").stat().st_mtime_ns for store in stores}

    # 5. C with U (issue 14): C reads CLIP embeddings, no region features: the embed stage and
    # C's stages run, no extract stage; the traindev fits follow their train fits' schedules
    rows = len(read_trace(data.trace))
    clip = _run(data.root, ("C", "U"), venvs)
    assert clip.returncode == 0, clip.stderr[-5000:]
    runs = [run.name for run in recipes.models["C"].runs]
    assert len(runs) == 5
    new = ["embed/clip", "average/C", "ensemble", "report"]
    new += [f"train/C/{run}/{fit}" for run in runs for fit in ("train", "traindev")]
    assert _ran(data, rows) == sorted(new)
    _assert_seed_average(data, "C", runs)
    store = data.work / "embeddings" / "clip" / "embeddings.safetensors"
    assert store.is_file()
    for run in runs:
        train, traindev = (
            json.loads((data.work / "runs" / "C" / run / fit / "metrics.json").read_text())
            for fit in ("train", "traindev")
        )
        assert traindev["epochs"] == train["best_epoch"] >= 1
    ensemble = json.loads((data.work / "ensemble" / "ensemble.json").read_text())
    assert sorted(ensemble["inputs"]) == ["C", "U"]
    stamp = store.stat().st_mtime_ns
    rows = len(read_trace(data.trace))
    again = _run(data.root, ("C", "U"), venvs)
    assert again.returncode == 0, again.stderr[-5000:]
    assert {row["cached"] for row in read_trace(data.trace)[rows:]} == {"1"}
    assert store.stat().st_mtime_ns == stamp
