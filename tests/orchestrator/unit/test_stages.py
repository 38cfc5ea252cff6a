from graphlib import TopologicalSorter
from pathlib import Path

from hm_shared.spec import RunSpec
from orchestrator.recipes import DEFAULT_RECIPES, load_recipes
from orchestrator.stages import build_stages, required_weights


def test_graph_shares_extract_between_models(tiny_recipes: Path) -> None:
    stages = build_stages(load_recipes(tiny_recipes), ("U", "O"), "smoke", topk=20)
    ids = [s.id for s in stages]
    # one stage per detector checkpoint: U and O read two attr variants, no run a plain one
    extracts = [i for i in ids if i.startswith("extract/")]
    assert extracts == ["extract/attr"]
    assert ids[0] == "prepare" and ids[-2:] == ["ensemble", "report"]
    by_id = {s.id: s for s in stages}
    order = list(TopologicalSorter({s.id: s.deps for s in stages}).static_order())
    assert (
        order.index("extract/attr")
        < order.index("pretrain/O/O50")
        < order.index("train/O/O50/train")
    )
    assert by_id["train/O/O50/traindev"].deps == ["extract/attr", "prepare", "pretrain/O/O50"]
    assert by_id["train/O/O50/traindev"].inputs["features"].path == "work/features/attr/vgattr5050"
    pretrain = by_id["pretrain/O/O50"]
    assert pretrain.run == RunSpec(model="O", run="O50", seed=50, features="vgattr5050")
    assert pretrain.params["epochs"] == 1
    assert by_id["train/O/O50/train"].run.valid == "dev_seen"
    assert by_id["train/O/O50/traindev"].run.valid is None  # dev_seen is in traindev
    assert by_id["prepare"].run is None and by_id["average/U"].run is None
    assert by_id["prepare"].params == {"topk": 20}
    assert set(by_id["average/U"].inputs) == {
        "run:U36:train",
        "run:U36:traindev",
        "run:U50:train",
        "run:U50:traindev",
    }
    report = by_id["report"].inputs
    assert set(report) == {"prepared", "ensemble", "model:U", "model:O", "timings"}
    assert report["timings"].run_facts and "timings" not in by_id["report"].keyed_inputs


def test_extract_stage_contract(tiny_recipes: Path) -> None:
    stages = build_stages(load_recipes(tiny_recipes), ("U",), "full")
    extract = next(s for s in stages if s.id == "extract/attr")
    assert (extract.env, extract.verb, extract.output) == (
        "extract",
        "extract",
        "work/features/attr",
    )
    assert {k: v.path for k, v in extract.inputs.items()} == {
        "prepared": "work/prepared",
        "hm": "hm",
        "weights:faster_rcnn_from_caffe_attr.pkl": "weights/faster_rcnn_from_caffe_attr.pkl",
    }
    assert extract.params["detector"] == "faster_rcnn_from_caffe_attr.pkl"
    smoke = next(
        s
        for s in build_stages(load_recipes(tiny_recipes), ("U",), "smoke")
        if s.id == "extract/attr"
    )
    assert "detector" not in smoke.params and set(smoke.inputs) == {"prepared", "hm"}
    # every attr variant of the recipes, not only the ones U reads: a model added later that
    # needs another one runs no detector pass
    assert extract.params == {
        "detector": "faster_rcnn_from_caffe_attr.pkl",
        "weights": "attr",
        "variants": {
            "vgattr3636": {"min_boxes": 36, "max_boxes": 36},
            "vgattr5050": {"min_boxes": 50, "max_boxes": 50},
        },
    }
    assert extract.needs_accelerator
    smoke = build_stages(load_recipes(tiny_recipes), ("U",), "smoke")
    assert "weights" not in next(s for s in smoke if s.id == "extract/attr").inputs


def test_one_extract_stage_per_checkpoint_for_the_shipped_recipes() -> None:
    recipes = load_recipes(DEFAULT_RECIPES)
    every = [
        s for s in build_stages(recipes, tuple(recipes.models), "smoke") if s.kind == "extract"
    ]
    assert [(s.id, sorted(s.params["variants"])) for s in every] == [
        ("extract/attr", ["vgattr10100", "vgattr3636", "vgattr5050", "vgattr7272"]),
        ("extract/plain", ["vg10100", "vg5050"]),
    ]
    # U alone: three attr variants read, one detector checkpoint, one stage
    u_only = [s.id for s in build_stages(recipes, ("U",), "smoke") if s.kind == "extract"]
    assert u_only == ["extract/attr"]


def test_stages_are_keyed_by_what_they_read() -> None:
    # prepare hashes all of data/hm; extract and B read images of the prepared memes, keyed by
    # prepared (its images.json); the region models read features, not data/hm at all
    stages = {s.id: s for s in build_stages(load_recipes(DEFAULT_RECIPES), ("B", "U"), "smoke")}
    assert stages["prepare"].keyed_inputs.keys() == {"hm"}
    for sid in ("extract/attr", "train/B/B42/train"):
        assert stages[sid].inputs["hm"].keyed_by == "prepared", sid
        assert "hm" not in stages[sid].keyed_inputs and "prepared" in stages[sid].keyed_inputs
    assert "hm" not in stages["train/U/U50/train"].inputs


def test_train_params_merge_by_profile(tiny_recipes: Path) -> None:
    recipes = load_recipes(tiny_recipes)
    smoke = {s.id: s for s in build_stages(recipes, ("U",), "smoke")}
    full = {s.id: s for s in build_stages(recipes, ("U",), "full")}
    assert smoke["train/U/U36/train"].params["epochs"] == 1
    assert full["train/U/U36/train"].params["epochs"] == 5
    # the full tables (the model's, the run's) hold what only the released files give
    assert full["train/U/U36/train"].params["checkpoint"] == "uniter-large.pt"
    assert full["train/U/U50/train"].params["vocab"] == "vocab.txt"
    assert "vocab" not in full["train/U/U36/train"].params
    assert not {"checkpoint", "vocab"} & set(smoke["train/U/U50/train"].params)
    run50 = full["train/U/U50/traindev"]
    assert run50.params["lr"] == 2e-5  # per-run override wins
    assert run50.run == RunSpec(
        model="U",
        run="U50",
        seed=50,
        fit="traindev",
        predict=("test_seen", "test_unseen"),
        valid=None,
        features="vgattr5050",
    )
    # one input per weight file of the recipe, named by it; smoke reads no released file
    assert full["train/U/U36/train"].inputs["weights:uniter-large.pt"].path == (
        "weights/uniter-large.pt"
    )
    assert not [n for n in smoke["train/U/U36/train"].inputs if n.startswith("weights")]


def test_required_weights_lists_detector_and_model_files(tiny_recipes: Path) -> None:
    stages = build_stages(load_recipes(tiny_recipes), ("U",), "full")
    files = [w.file for w in required_weights(stages)]
    assert files == ["faster_rcnn_from_caffe_attr.pkl", "uniter-large.pt"]


def test_traindev_fit_has_no_validation_split_and_no_early_stopping() -> None:
    from orchestrator.recipes import DEFAULT_RECIPES

    stages = {s.id: s for s in build_stages(load_recipes(DEFAULT_RECIPES), ("B",), "full")}
    train, traindev = stages["train/B/B42/train"], stages["train/B/B42/traindev"]
    assert (train.run.valid, train.params["early_stopping"]) == ("dev_seen", 3)
    assert (traindev.run.valid, traindev.params["early_stopping"]) == (None, 0)


def test_train_and_pretrain_stages_pass_the_recipe_params_alone() -> None:
    # the run (model, seed, fit, splits, variants) is the spec's `run`: any key the orchestrator
    # added to the params would reach a model as an unknown param
    recipes = load_recipes(DEFAULT_RECIPES)
    for profile in ("smoke", "full"):
        for stage in build_stages(recipes, tuple(recipes.models), profile, topk=None):
            if stage.kind not in ("train", "pretrain"):
                assert stage.run is None, stage.id
                continue
            assert stage.run is not None
            model = recipes.models[stage.run.model]
            (run,) = [r for r in model.runs if r.name == stage.run.run]
            assert (stage.run.seed, stage.run.features) == (run.seed, run.features)
            if stage.kind == "pretrain":
                assert model.pretrain is not None
                own = {**model.pretrain.params, **model.pretrain.smoke, **model.pretrain.full}
            else:
                own = {**model.params, **model.smoke, **model.full, **run.params, **run.full}
            assert set(stage.params) <= set(own), (stage.id, sorted(set(stage.params) - set(own)))


def test_c_reads_one_embed_stage_and_no_region_features() -> None:
    recipes = load_recipes(DEFAULT_RECIPES)
    smoke = {s.id: s for s in build_stages(recipes, ("C",), "smoke")}
    assert not [i for i in smoke if i.startswith("extract/")]
    embed = smoke["embed/clip"]
    assert (embed.kind, embed.env, embed.output) == ("embed", "torch", "work/embeddings/clip")
    assert embed.needs_accelerator and embed.params["tiny"] is True
    assert {k: v.path for k, v in embed.inputs.items()} == {"prepared": "work/prepared", "hm": "hm"}
    assert embed.inputs["hm"].keyed_by == "prepared"
    train, traindev = smoke["train/C/C1/train"], smoke["train/C/C1/traindev"]
    assert "hm" not in train.inputs and train.inputs["embeddings"].producer == "embed/clip"
    # the traindev fit trains the epochs its train fit kept: it waits for that fit
    assert traindev.inputs["train_fit"].producer == "train/C/C1/train"
    assert "train_fit" not in train.inputs
    assert traindev.deps == ["embed/clip", "prepare", "train/C/C1/train"]
    assert (train.params["early_stopping_metric"], traindev.params["early_stopping"]) == (
        "dev_auroc",
        0,
    )
    full = {s.id: s for s in build_stages(recipes, ("C", "B"), "full")}
    assert "weights:clip-vit-large-patch14/model.safetensors" in full["embed/clip"].inputs
    assert not [n for n in full["train/C/C1/train"].inputs if n.startswith("weights")]  # vectors
    assert [s.id for s in build_stages(recipes, ("C", "B"), "full")].count("embed/clip") == 1
