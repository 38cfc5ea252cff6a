"""The whole pipeline under `--runtime docker` (all three images): same outputs as under
`--runtime local`, stage
failures named and resumed, clear errors when the engine or an image is missing.

Run as CI runs it (root, HM_DOCKER_TESTS=1). The local side uses the dev venvs under HM_VENVS
(default <repo>/.venvs) and never rebuilds them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest
from docker_helpers import REPO, orchestrator
from recipe_helpers import dump_toml, one_run_recipes

from hm_shared.predictions import read_predictions
from orchestrator import images
from orchestrator.datadir import DataDir
from orchestrator.recipes import DEFAULT_RECIPES
from orchestrator.records import read_record, read_trace
from orchestrator.runtimes import RuntimeConfig
from orchestrator.runtimes.local import LocalRuntime

VENVS = Path(os.environ.get("HM_VENVS", REPO / ".venvs"))
SMOKE = ["--topk", "20", "--profile", "smoke"]
MODELS = ["B", "C", "U", "ES", "X", "D"]
# Tolerance 0: the two runtimes must agree bit for bit. Same wheels (one lock, one wheelhouse),
# same CPU, the host's OpenBLAS kernel choice passed into the containers (compose.yaml), one
# thread for fastText, seeded torch and paddle. Equal cache keys for the average and ensemble
# stages already require bit-identical train outputs; any difference is a real one.
PREDICTION_GLOBS = ("runs/*/*/*/predictions/*.csv", "preds/*/*.csv", "ensemble/FIN_*.csv")


def prediction_files(data: Path) -> list[str]:
    work = data / "work"
    return sorted(
        p.relative_to(work).as_posix() for pattern in PREDICTION_GLOBS for p in work.glob(pattern)
    )


def records(data: Path) -> dict[str, dict]:
    folder = data / "work" / "state" / "records"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def output(done) -> str:
    return (
        f"exit {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n"
        f"{done.stderr[-4000:]}"
    )


@pytest.fixture(scope="module")
def venvs() -> Path:
    runtime = LocalRuntime(RuntimeConfig(repo=REPO, venvs=VENVS))
    stale = [env for env in ("extract", "torch", "paddle") if not runtime.is_current(env)]
    if stale:
        # A test never rebuilds the shared venvs: `./hm test` builds them before the suites.
        pytest.fail(
            f"the local venvs {', '.join(str(VENVS / e) for e in stale)} are missing or "
            "built from another lock: run `orchestrator envs build extract torch paddle`",
            pytrace=False,
        )
    return VENVS


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.usefixtures("docker_ready")
def test_docker_run_matches_local_run(make_data, venvs: Path, tmp_path: Path) -> None:
    # The project's B, C, U, ES, X and D recipes with one run each, ES reading U's variant without
    # its second box set: one feature variant to extract (a smoke extraction is most of this
    # test's time; X50 and D50 read U50's), every environment's image exercised (torch for B,
    # C's CLIP embedding, U, X and D, with X's task pre-training; paddle for ES).
    recipes = tmp_path / "recipes.toml"
    table = tomllib.loads(one_run_recipes(DEFAULT_RECIPES, MODELS))
    assert {table["models"][m]["runs"][0]["features"] for m in ("U", "X", "D")} == {"vgattr5050"}
    (ernie,) = table["models"]["ES"]["runs"]
    ernie["features"] = table["models"]["U"]["runs"][0]["features"]
    del ernie["extra_features"]
    table["extract"] = {ernie["features"]: table["extract"][ernie["features"]]}
    recipes.write_text(dump_toml(table))
    local, docker = make_data("local"), make_data("docker")
    args = ["run", "--recipes", str(recipes), "--models", ",".join(MODELS), *SMOKE]
    args += ["--venvs", str(venvs)]
    done = orchestrator([*args, "--runtime", "local", "--data", str(local)])
    assert done.returncode == 0, output(done)
    done = orchestrator([*args, "--runtime", "docker", "--data", str(docker)])
    assert done.returncode == 0, output(done)

    # The same work has the same cache key under both runtimes (data_root is not hashed), every
    # containerised stage recorded the image it ran in, and the features and X's pre-trained
    # weights are bit-identical.
    mine, theirs = records(local), records(docker)
    assert mine.keys() == theirs.keys()
    for slug, record in theirs.items():
        assert record["status"] == "done", slug
        assert record["key"] == mine[slug]["key"], slug
        if record["kind"] in ("extract", "embed", "pretrain", "train"):
            env = record["key_parts"]["env"]
            assert (record["runtime"], record["image"]) == ("docker", images.image_id(env)), slug
        if record["kind"] in ("prepare", "extract", "embed", "pretrain"):
            assert record["output_hash"] == mine[slug]["output_hash"], slug
    assert any(r["kind"] == "extract" for r in theirs.values())  # U read region features
    assert any(r["kind"] == "embed" for r in theirs.values())  # C read CLIP embeddings

    files = prediction_files(local)
    assert files == prediction_files(docker)
    assert {f.split("/")[1] for f in files if f.startswith("runs/")} == set(MODELS)
    assert any(r["kind"] == "pretrain" for r in theirs.values())  # X's task pre-training
    paddle = [r for r in theirs.values() if r["key_parts"]["env"] == "paddle"]
    assert len(paddle) == 2 and {r["kind"] for r in paddle} == {"train"}
    assert {f"ensemble/FIN_{s}.csv" for s in ("dev_seen", "test_seen", "test_unseen")} <= set(files)
    for name in files:
        a = read_predictions(local / "work" / name)
        b = read_predictions(docker / "work" / name)
        assert a.ids.tolist() == b.ids.tolist(), name
        np.testing.assert_array_equal(b.proba, a.proba, err_msg=name)
        np.testing.assert_array_equal(b.label, a.label, err_msg=name)

    # orchestrator predict under docker (issue 16): the run's test_unseen memes as new ones get
    # exactly the run's final probabilities; the predict stages ran in the images
    memes = [json.loads(line) for line in (docker / "work/prepared/test_unseen.jsonl").open()]
    jsonl = tmp_path / "memes.jsonl"
    jsonl.write_text(
        "".join(json.dumps({**m, "img": str(docker / "hm" / m["img"])}) + "\n" for m in memes)
    )
    out = tmp_path / "scores.csv"
    predict = ["predict", "--recipes", str(recipes), "--models", ",".join(MODELS), *SMOKE]
    done = orchestrator(
        [
            *predict,
            "--runtime",
            "docker",
            "--data",
            str(docker),
            "--input",
            str(jsonl),
            "--out",
            str(out),
        ]
    )
    assert done.returncode == 0, output(done)
    scores = read_predictions(out)
    final = read_predictions(docker / "work/ensemble/FIN_test_unseen.csv")
    assert sorted(scores.ids.tolist()) == sorted(final.ids.tolist())
    by_id = dict(zip(final.ids.tolist(), final.proba.tolist(), strict=True))
    assert [by_id[i] for i in scores.ids.tolist()] == scores.proba.tolist()
    ran = [r for r in records(docker).values() if r["kind"] == "predict"]
    assert len(ran) == len(MODELS)
    assert {(r["runtime"], r["image"]) for r in ran} == {
        ("docker", images.image_id(env)) for env in {r["key_parts"]["env"] for r in ran}
    }


def recipes_with_bad_b_value(path: Path) -> str:
    """The project's recipe file with a bad value in B's smoke table: a known name (the plan-time
    check lets it through), a value hm_torch refuses when the stage starts."""
    text = path.read_text()
    bad, count = re.subn(
        r"^\[models\.B\.smoke\].*$", "\\g<0>\nlog_every = 0", text, count=1, flags=re.MULTILINE
    )
    assert count == 1, f"{path} has no [models.B.smoke] table"
    return bad


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.usefixtures("docker_ready")
def test_failed_container_names_the_stage_and_the_rerun_resumes(make_data, tmp_path: Path) -> None:
    data = DataDir(make_data("data"))
    recipes = tmp_path / "recipes.toml"
    # hm_torch rejects the value: the container exits non-zero (SpecError).
    recipes.write_text(recipes_with_bad_b_value(DEFAULT_RECIPES))
    args = [
        "run",
        "--recipes",
        str(recipes),
        "--models",
        "B",
        *SMOKE,
        "--runtime",
        "docker",
        "--data",
        str(data.root),
    ]
    done = orchestrator(args)
    assert done.returncode == 2, output(done)  # StageFailed, with the stage's class: a bad spec
    failed = [r for r in records(data.root).values() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["stage"].startswith("train/B/B42/")
    stage, log = failed[0]["stage"], data.root / failed[0]["log"]
    assert f"stage {stage} failed" in done.stderr and str(log) in done.stderr
    assert "train param log_every must be >= 1, got 0" in log.read_text()
    prepared = read_record(data, "prepare")
    assert prepared is not None and prepared.status == "done"

    recipes.write_text(DEFAULT_RECIPES.read_text())  # the fix
    rows = len(read_trace(data.trace))
    done = orchestrator(args)
    assert done.returncode == 0, output(done)
    ran = {row["stage"]: row["cached"] for row in read_trace(data.trace)[rows:]}
    assert ran["prepare"] == "1"  # resumed after the finished stage, not from scratch
    assert ran[stage] == "0" and read_record(data, "prepare").started == prepared.started
    assert {r["status"] for r in records(data.root).values()} == {"done"}
    for split in ("dev_seen", "test_seen", "test_unseen"):
        assert read_predictions(data.work / "ensemble" / f"FIN_{split}.csv").ids.size > 0


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_missing_image_names_the_fix(make_data) -> None:
    data = make_data("data")
    tag = "no-such-tag-for-tests"
    done = orchestrator(
        ["run", "--models", "B", *SMOKE, "--runtime", "docker", "--data", str(data)],
        env={"HM_IMAGE_TAG": tag},
    )
    assert done.returncode == 2, output(done)  # RuntimeUnavailable
    assert f"hm-torch:{tag} is not built" in done.stderr and "./hm images" in done.stderr
    assert not (data / "work" / "prepared").exists()  # checked before any stage ran


def test_missing_engine_names_the_fix(make_data) -> None:
    # No engine needed: DOCKER_HOST points at a socket nobody listens on.
    data = make_data("data")
    done = orchestrator(
        ["run", "--models", "B", *SMOKE, "--runtime", "docker", "--data", str(data)],
        env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert done.returncode == 2, output(done)
    assert ("no Docker engine answers" in done.stderr and "dockerd" in done.stderr) or (
        "docker client is not installed" in done.stderr
    )
    assert not (data / "work" / "prepared").exists()


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_gpus_without_the_container_toolkit_are_refused_before_any_stage(
    make_data, tmp_path: Path
) -> None:
    # A stand-in nvidia-smi lists one GPU; this real engine has no NVIDIA runtime and no hook,
    # so the daemon could not hand the GPU to a container: said before anything runs.
    info = subprocess.run(
        ["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True
    )
    if "nvidia" in info.stdout or shutil.which("nvidia-container-runtime-hook"):
        pytest.skip("this engine can hand GPUs to containers")
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho '0, GPU-5a1f0c2e-0000-4b1e-9c1d-000000000000'\n")
    smi.chmod(0o755)
    data = make_data("data")
    args = ["run", "--models", "B", *SMOKE, "--runtime", "docker", "--gpus", "0"]
    done = orchestrator(
        [*args, "--data", str(data)],
        env={"PATH": f"{smi.parent}:{os.environ['PATH']}"},
    )
    assert done.returncode == 2, output(done)
    assert "the Docker engine cannot hand GPUs to containers" in done.stderr
    assert "nvidia-container-toolkit" in done.stderr and "Traceback" not in done.stderr
    assert not (data / "work").exists()  # before the lock, before any stage
