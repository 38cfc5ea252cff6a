"""`python -m hm_extract` as real processes: the stage on a spec, and the direct CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from spec_helpers import make_spec

from hm_shared.features import FeatureStore

pytestmark = pytest.mark.slow  # full-size detector (smoke input sizes) in subprocesses

SIZES = ((37, 251), (120, 90), (64, 64))


def _data_root(tmp_path: Path, write_images, sizes: tuple[tuple[int, int], ...] = SIZES) -> Path:
    root = tmp_path / "data"
    ids = write_images(root / "hm" / "img", sizes)
    write_images(root / "hm" / "img", ((50, 50),), first_id=99)  # in no split: not extracted
    prepared = root / "work" / "prepared"
    prepared.mkdir(parents=True)
    splits = {
        "train": ids[:2],
        "dev_seen": ids[2:],
        "dev_unseen": [],
        "test_seen": [ids[0]],
        "test_unseen": [],
    }
    for split, split_ids in splits.items():
        rows = [
            json.dumps({"id": i, "img": f"img/{i}.png", "text": "x", "label": 0}) for i in split_ids
        ]
        (prepared / f"{split}.jsonl").write_text("".join(r + "\n" for r in rows))
    (root / "weights").mkdir()
    return root


ATTEMPT = "work/.attempts/extract-attr/k1"
DETECTOR = "faster_rcnn_from_caffe_attr.pkl"
ATTR_VARIANTS = {
    "vgattr3636": {"min_boxes": 36, "max_boxes": 36},
    "vgattr10100": {"min_boxes": 10, "max_boxes": 100},
}


def _spec(root: Path, profile: str = "smoke", output: str = ATTEMPT) -> Path:
    """The orchestrator's spec of the stage: the full profile names the released pickle."""
    detector = {f"weights:{DETECTOR}": f"weights/{DETECTOR}"}
    spec = make_spec(
        "extract/attr",
        root,
        output=output,
        inputs={"prepared": "work/prepared", "hm": "hm", **(detector if profile == "full" else {})},
        params={
            "weights": "attr",
            "variants": ATTR_VARIANTS,
            **({"detector": DETECTOR} if profile == "full" else {}),
        },
        profile=profile,
    )
    path = root / f"spec-{profile}-{Path(output).name}.json"
    spec.write(path)
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hm_extract", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_stage_writes_every_store_in_one_pass_and_a_rerun_detects_nothing(
    tmp_path: Path, write_images
) -> None:
    root = _data_root(tmp_path, write_images)
    spec = _spec(root)
    first = _run("extract", "--spec", str(spec))
    assert first.returncode == 0, first.stderr
    assert "detector pass over 3 of 3 images" in first.stderr
    attempt = root / ATTEMPT
    stats = json.loads((attempt / "stats.json").read_text())
    assert stats == {
        "weights": "attr",
        "variants": ["vgattr10100", "vgattr3636"],
        "images": 3,
        "detector_images": 3,
    }
    for variant, boxes in ATTR_VARIANTS.items():
        store = FeatureStore(attempt / variant)
        assert sorted(store.ids()) == ["00001", "00002", "00003"]
        for image_id, (h, w) in zip(("00001", "00002", "00003"), SIZES, strict=True):
            regions = store[image_id]
            assert (regions.image_h, regions.image_w) == (h, w)
            assert 1 <= regions.num_boxes <= boxes["max_boxes"]
            assert regions.features.shape[1] == 2048
            assert (np.asarray(regions.boxes[:, 2]) <= w).all()
            assert (np.asarray(regions.attr_conf) > 0).all()  # attribute weights: attributes
    second = _run("extract", "--spec", str(spec))
    assert second.returncode == 0, second.stderr
    assert "detector pass over 0 of 3 images" in second.stderr
    assert "vgattr3636 added 0, already present 3" in second.stderr
    assert json.loads((attempt / "stats.json").read_text())["detector_images"] == 3
    assert len(FeatureStore(attempt / "vgattr3636")) == 3


def test_full_profile_without_weights_names_file_and_url(tmp_path: Path, write_images) -> None:
    root = _data_root(tmp_path, write_images)
    result = _run("extract", "--spec", str(_spec(root, "full")))
    assert result.returncode == 3
    assert "faster_rcnn_from_caffe_attr.pkl" in result.stderr
    assert "http://nlp.cs.unc.edu/models/faster_rcnn_from_caffe_attr.pkl" in result.stderr


def test_cli_names_every_missing_detector_file(tmp_path: Path) -> None:
    (tmp_path / "hm" / "img").mkdir(parents=True)
    args = ["--variant", "vgattr3636", "--variant", "vg5050", "--variant", "vgattr10100"]
    result = subprocess.run(
        [sys.executable, "-m", "hm_extract", *args, "--profile", "full", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HM_DATA": str(tmp_path)},
    )
    assert result.returncode == 3, result.stderr
    assert "2 detector weights file(s) not found" in result.stderr
    weights = tmp_path / "weights"
    attr = "faster_rcnn_from_caffe_attr.pkl from http://nlp.cs.unc.edu/models/faster_rcnn_from_caffe_attr.pkl"
    plain = (
        "faster_rcnn_from_caffe.pkl from http://nlp.cs.unc.edu/models/faster_rcnn_from_caffe.pkl"
    )
    assert (
        f"{weights / 'faster_rcnn_from_caffe_attr.pkl'}  (variants vgattr3636, vgattr10100; {attr})"
        in (result.stderr)
    )
    assert f"{weights / 'faster_rcnn_from_caffe.pkl'}  (variants vg5050; {plain})" in result.stderr


def test_cli_skips_unreadable_images(tmp_path: Path, write_images) -> None:
    images = tmp_path / "img"
    write_images(images, ((40, 70), (90, 33)))
    (images / "00000.png").write_bytes(b"garbage")  # first by name: the failing run stops early
    out = tmp_path / "vg5050"
    result = _run(
        "--variant",
        "vg5050",
        "--images",
        str(images),
        "--out",
        str(out),
        "--profile",
        "smoke",
        "--device",
        "cpu",
        "--skip-unreadable",
    )
    assert result.returncode == 0, result.stderr
    assert sorted(FeatureStore(out).ids()) == ["00001", "00002"]
    assert (np.asarray(FeatureStore(out)["00001"].attr_ids) == 0).all()
    assert [s["id"] for s in json.loads((out / "skipped.json").read_text())] == ["00000"]
    failing = _run(
        "--variant",
        "vg5050",
        "--images",
        str(images),
        "--out",
        str(tmp_path / "x"),
        "--profile",
        "smoke",
        "--device",
        "cpu",
    )
    assert failing.returncode == 3 and "00000.png" in failing.stderr
    assert "--skip-unreadable" in failing.stderr


def test_a_stage_killed_mid_pass_resumes_to_the_stores_of_an_unbroken_run(
    tmp_path: Path, write_images
) -> None:
    # SIGKILL once the first commit is on disk, rerun: only the images not committed go
    # through the detector again, and every store equals an unbroken run's. The killed process
    # commits after every batch (COMMIT_EVERY_S = 0, set in that process only): with the
    # stage's 5 s a fast machine detected all 40 images before its first commit.
    sizes = tuple((90 + 7 * i, 160 - 3 * i) for i in range(40))
    root = _data_root(tmp_path, write_images, sizes)
    spec = _spec(root)
    every_batch = (
        "import runpy, sys; import hm_extract.extract as e; e.COMMIT_EVERY_S = 0.0; "
        "sys.argv = ['hm_extract', *sys.argv[1:]]; "
        "runpy.run_module('hm_extract', run_name='__main__', alter_sys=True)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", every_batch, "extract", "--spec", str(spec)],
        stderr=subprocess.DEVNULL,
    )
    store = root / ATTEMPT / "vgattr3636"
    deadline = time.monotonic() + 300
    # store.json is written last when a store is created: until then it is not a store yet
    while not ((store / "store.json").is_file() and len(FeatureStore(store)) > 0):
        assert proc.poll() is None, "the stage ended before its first commit"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    committed = len(FeatureStore(root / ATTEMPT / "vgattr3636"))
    assert 0 < committed < 40
    resumed = _run("extract", "--spec", str(spec))
    assert resumed.returncode == 0, resumed.stderr
    stats = json.loads((root / ATTEMPT / "stats.json").read_text())
    assert stats["detector_images"] == 40 - committed  # the killed run wrote no stats
    clean = _run("extract", "--spec", str(_spec(root, output="work/.attempts/extract-attr/k2")))
    assert clean.returncode == 0, clean.stderr
    for variant in ATTR_VARIANTS:
        for name in ("index.npy", "features.f32", "boxes.f32", "attr_ids.i64"):
            a = (root / ATTEMPT / variant / name).read_bytes()
            b = (root / "work/.attempts/extract-attr/k2" / variant / name).read_bytes()
            assert a == b, (variant, name)
