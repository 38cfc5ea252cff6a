"""The stage graph of `orchestrator predict`: copies of the run's stages over the new memes."""

from __future__ import annotations

import json
from graphlib import TopologicalSorter
from pathlib import Path

import pytest

from hm_shared.errors import HmDataError
from orchestrator.predict import PredictInput, predict_stages
from orchestrator.recipes import DEFAULT_RECIPES, load_recipes
from orchestrator.stages import build_stages

MODELS = ("B", "C", "ES", "U")


def _graphs(tmp_path: Path):
    run = build_stages(load_recipes(DEFAULT_RECIPES), MODELS, "smoke", topk=20)
    (tmp_path / "memes").mkdir()
    source = PredictInput.of(tmp_path / "memes")
    return run, source, predict_stages(run, MODELS, source, "tesseract")


def test_every_traindev_fit_gets_one_predict_stage_over_copied_extract_and_embed_stages(
    tmp_path: Path,
) -> None:
    run, source, stages = _graphs(tmp_path)
    by_id = {s.id: s for s in run + stages}
    p = f"predict/{source.tag}"
    base = f"work/predict/{source.tag}"
    run_ids = {s.id for s in run}
    extracts = sorted(s.id.removeprefix(p + "/") for s in stages if s.kind in ("extract", "embed"))
    assert extracts == sorted(s.id for s in run if s.kind in ("extract", "embed"))
    fits = sorted(s.id for s in run if s.kind == "train" and s.run.fit == "traindev")
    predicts = sorted(s.id for s in stages if s.kind == "predict")
    assert len(predicts) == len(fits) and all(s.startswith(f"{p}/run/") for s in predicts)
    assert {s.output.split("/")[2] for s in stages} == {source.tag}  # all under work/predict/<tag>
    # every producer is a stage of the run or of predict: the graph is closed and acyclic
    TopologicalSorter({s: by_id[s].deps for s in by_id}).prepare()
    assert not any(s.id in run_ids for s in stages)

    intake = by_id[f"{p}/intake"]
    assert (intake.env, intake.output) == ("host", f"{base}/memes")
    assert (
        intake.inputs["input"].path == str(source.folder)
        and intake.inputs["input"].producer is None
    )
    assert intake.params == {"jsonl": None, "ocr": "tesseract"}

    extract = by_id[f"{p}/extract/attr"]
    assert extract.output == f"{base}/features/attr"
    assert extract.params == by_id["extract/attr"].params
    assert extract.inputs["prepared"].producer == intake.id
    assert (extract.inputs["hm"].path, extract.inputs["hm"].keyed_by) == (intake.output, "prepared")

    fit = by_id["train/U/U36/traindev"]
    u = by_id[f"{p}/run/U/U36"]
    assert (u.kind, u.env) == ("predict", fit.env)
    assert u.params == fit.params
    assert u.run == fit.run.model_copy(update={"predict": ("predict",), "valid": None})
    assert u.inputs["features"].path == f"{base}/features/attr/vgattr3636"
    assert u.inputs["features"].producer == f"{p}/extract/attr"
    assert (u.inputs["fit"].path, u.inputs["fit"].producer) == (fit.output, fit.id)
    assert (u.inputs["run_prepared"].path, u.inputs["run_prepared"].producer) == (
        "work/prepared",
        "prepare",
    )
    assert u.inputs["prepared"].producer == intake.id

    b = next(s for s in stages if s.id.startswith(f"{p}/run/B/"))
    assert (b.inputs["hm"].path, b.inputs["hm"].keyed_by) == (intake.output, "prepared")
    c = next(s for s in stages if s.id.startswith(f"{p}/run/C/"))
    assert c.inputs["embeddings"].path == f"{base}/embeddings/clip"
    assert c.inputs["embeddings"].producer == f"{p}/embed/clip"
    assert "train_fit" in c.inputs  # C's traindev schedule input stays the run's
    for stage in (s for s in stages if s.kind == "predict"):  # ES's extra_features too
        fit_inputs = by_id[stage.inputs["fit"].producer].inputs
        for name in ("features", "extra_features"):
            if name in fit_inputs:
                moved = f"{base}/" + fit_inputs[name].path.removeprefix("work/")
                assert stage.inputs[name].path == moved, (stage.id, name)

    scores = by_id[f"{p}/scores"]
    assert scores.inputs["ensemble"].producer == "ensemble"
    assert {n for n in scores.inputs if n.startswith("model:")} == {f"model:{m}" for m in MODELS}
    assert scores.inputs["reference:U"].producer == "average/U"
    assert scores.inputs["model:U"].producer == f"{p}/average/U"
    assert set(by_id[f"{p}/average/U"].inputs) == {
        f"run:{s.run.run}:predict" for s in stages if s.id.startswith(f"{p}/run/U/")
    }


def test_an_input_is_named_by_its_path_and_a_jsonl_is_keyed_by_the_images_it_names(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rows = [{"img": "../pics/2.png"}, {"img": "pics/1.png", "text": "t"}, "not a meme", {}]
    (tmp_path / "a" / "m.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows) + "\n{broken\n", encoding="utf-8"
    )
    folder = PredictInput.of(tmp_path / "a")
    jsonl = PredictInput.of(tmp_path / "a" / "m.jsonl")
    assert (folder.jsonl, folder.files) == (None, None)
    assert jsonl.folder == tmp_path / "a" and jsonl.jsonl == "m.jsonl"
    assert jsonl.files == ("m.jsonl", "../pics/2.png", "pics/1.png")
    tags = {folder.tag, jsonl.tag, PredictInput.of(tmp_path / "b").tag}
    assert len(tags) == 3 and all(len(t) == 12 for t in tags)
    assert PredictInput.of(tmp_path / "a" / ".." / "a").tag == folder.tag


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing", "not found; expected a folder"),
        ("memes.csv", "expected a folder of images or a .jsonl"),
    ],
)
def test_an_input_that_is_neither_a_folder_nor_a_jsonl_is_an_error(
    tmp_path: Path, name: str, message: str
) -> None:
    (tmp_path / "memes.csv").write_text("id,text\n")
    with pytest.raises(HmDataError, match=message):
        PredictInput.of(tmp_path / name)
