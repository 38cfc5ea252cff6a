import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from torch.testing import assert_close

from hm_extract.cli import cli
from hm_extract.config import VARIANTS
from hm_extract.extract import StoreTarget, extract_images, pending_images, run_extraction
from hm_extract.images import ImageItem, UnreadableImageError, list_images, prepared_images
from hm_shared.errors import HmDataError, SpecError
from hm_shared.features import FeatureStore

ODD_SIZES = ((37, 251), (120, 90), (64, 64), (301, 97))  # as the conftest writes them


def single(out: Path, min_boxes: int = 5, max_boxes: int = 12) -> list[StoreTarget]:
    """The per-variant path: one store per detector pass."""
    return [StoreTarget("v", out, min_boxes, max_boxes)]


def store_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def images(tmp_path: Path, write_images) -> list[ImageItem]:
    write_images(tmp_path / "img")
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    return list_images(tmp_path / "img")


def test_list_images_sorted_by_name(images: list[ImageItem], tmp_path: Path) -> None:
    assert [i.image_id for i in images] == ["00001", "00002", "00003", "00004"]
    (tmp_path / "img" / "00001.jpg").write_bytes(b"")
    with pytest.raises(HmDataError, match="00001"):
        list_images(tmp_path / "img")
    with pytest.raises(HmDataError, match="not found"):
        list_images(tmp_path / "nowhere")


def test_prepared_images_are_the_union_of_the_splits(tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    rows = {"train": ["00002", "00001"], "dev_seen": ["00003"], "traindev": ["00002", "00003"]}
    for split, ids in rows.items():
        lines = [json.dumps({"id": i, "img": f"img/{i}.png", "text": "t", "label": 0}) for i in ids]
        (prepared / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    items = prepared_images(prepared, tmp_path / "hm")
    assert [i.image_id for i in items] == ["00002", "00001", "00003"]
    assert items[0].path == tmp_path / "hm" / "img" / "00002.png"
    with pytest.raises(HmDataError, match="prepare stage"):
        prepared_images(tmp_path / "hm", tmp_path / "hm")


def test_store_holds_every_image_within_box_bounds(tiny_attr, images, tmp_path) -> None:
    out = tmp_path / "store"
    summary = extract_images(tiny_attr, images, single(out), batch_size=3)
    assert (summary.detected, summary.added, summary.already_present) == (4, {"v": 4}, {"v": 0})
    store = FeatureStore(out)
    assert sorted(store.ids()) == ["00001", "00002", "00003", "00004"]
    assert store.feature_dim == 128
    for item, (h, w) in zip(images, ODD_SIZES, strict=True):
        regions = store[item.image_id]
        assert (regions.image_h, regions.image_w) == (h, w)
        assert 5 <= regions.num_boxes <= 12  # min_boxes reached: enough distinct proposals
        assert (regions.boxes[:, [0, 2]] <= w).all() and (regions.boxes[:, [1, 3]] <= h).all()
        assert (regions.boxes >= 0).all()
        assert (regions.object_ids < 20).all() and (regions.attr_ids < 10).all()


def test_rerun_extracts_nothing_and_resume_never_duplicates(tiny_attr, images, tmp_path) -> None:
    out = tmp_path / "store"
    extract_images(tiny_attr, images[:2], single(out))
    summary = extract_images(tiny_attr, images, single(out), batch_size=2)
    assert (summary.detected, summary.added, summary.already_present) == (2, {"v": 2}, {"v": 2})
    again = extract_images(tiny_attr, images, single(out))
    assert (again.detected, again.added, again.already_present) == (0, {"v": 0}, {"v": 4})
    assert len(FeatureStore(out)) == 4


def test_batch_size_does_not_change_the_store(tiny_attr, images, tmp_path) -> None:
    extract_images(tiny_attr, images, single(tmp_path / "one"), batch_size=1)
    extract_images(tiny_attr, images, single(tmp_path / "four"), batch_size=4)
    one, four = FeatureStore(tmp_path / "one"), FeatureStore(tmp_path / "four")
    for image_id in one.ids():
        a, b = one[image_id], four[image_id]
        assert np.array_equal(a.object_ids, b.object_ids)
        assert_close(np.array(a.features), np.array(b.features), rtol=1e-4, atol=1e-4)
        assert_close(np.array(a.boxes), np.array(b.boxes), rtol=1e-4, atol=1e-3)


def test_plain_weights_store_zero_attributes(tiny_plain, images, tmp_path) -> None:
    extract_images(tiny_plain, images[:1], single(tmp_path / "store"))
    regions = FeatureStore(tmp_path / "store")["00001"]
    assert (np.asarray(regions.attr_ids) == 0).all()
    assert (np.asarray(regions.attr_conf) == 0).all()


def test_unreadable_image_is_named_or_skipped(tiny_attr, images, tmp_path) -> None:
    broken = tmp_path / "img" / "00009.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    items = [*images[:2], ImageItem("00009", broken), images[2]]
    with pytest.raises(UnreadableImageError, match="00009") as info:
        extract_images(tiny_attr, items, single(tmp_path / "store"))
    assert str(broken) in str(info.value) and "--skip-unreadable" in str(info.value)
    summary = extract_images(tiny_attr, items, single(tmp_path / "store"), skip_unreadable=True)
    assert [s["id"] for s in summary.skipped] == ["00009"]
    skipped = json.loads((tmp_path / "store" / "skipped.json").read_text())
    assert skipped[0]["path"] == str(broken) and skipped[0]["error"]
    store = FeatureStore(tmp_path / "store")
    assert "00009" not in store and len(store) == 3

    # a rerun neither decodes the unchanged broken file again nor builds the detector for it
    assert pending_images(items, single(tmp_path / "store"), skip_unreadable=True) == []
    built: list[int] = []
    again = run_extraction(
        items, single(tmp_path / "store"), lambda: built.append(1) or tiny_attr, 1, True, "x"
    )
    assert built == [] and again.already_present == {"v": 3} and len(again.skipped) == 1
    # once the user replaces the file, it is tried again
    shutil.copyfile(images[0].path, broken)
    assert pending_images(items, single(tmp_path / "store"), skip_unreadable=True) == [items[2]]
    extract_images(tiny_attr, items, single(tmp_path / "store"), skip_unreadable=True)
    assert "00009" in FeatureStore(tmp_path / "store")


def test_bad_box_counts_are_refused(tiny_attr, images, tmp_path) -> None:
    with pytest.raises(SpecError, match="min_boxes"):
        extract_images(tiny_attr, images, single(tmp_path / "store", 50, 10))


def test_cli_without_variant_checks_every_default_weights_file_first(
    images, tmp_path: Path, capsys
) -> None:
    # `docker compose run extract` with no arguments: all six variants, full profile. Without the
    # upstream pickles it must stop before writing anything, naming the missing file.
    out = tmp_path / "features"
    code = cli(["--images", str(images[0].path.parent), "--weights", str(tmp_path / "x.pkl")])
    assert code == 3
    err = capsys.readouterr().err
    assert "faster_rcnn_from_caffe_attr.pkl" in err and "vgattr3636" in err
    assert not out.exists()


def test_cli_refuses_one_out_for_several_variants(images, tmp_path: Path, capsys) -> None:
    args = ["--images", str(images[0].path.parent), "--out", str(tmp_path / "store")]
    code = cli([*args, "--variant", "vg5050", "--variant", "vgattr3636", "--profile", "smoke"])
    assert code == 2
    assert "exactly one --variant" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def _all_variants(folder: Path, weights: str) -> list[StoreTarget]:
    return [
        StoreTarget(v.name, folder / v.name, v.min_boxes, v.max_boxes)
        for v in VARIANTS.values()
        if v.weights == weights
    ]


@pytest.mark.parametrize("weights", ["attr", "plain"])
def test_one_pass_gives_the_stores_of_one_pass_per_variant(
    tiny_attr, tiny_plain, images, tmp_path, weights
) -> None:
    detector = tiny_attr if weights == "attr" else tiny_plain
    shared = _all_variants(tmp_path / "shared", weights)
    summary = extract_images(detector, images, shared, batch_size=2)
    assert summary.detected == len(images)  # one detector pass for every variant
    for target in shared:
        alone = tmp_path / "alone" / target.name
        extract_images(detector, images, single(alone, target.min_boxes, target.max_boxes), 2)
        assert store_bytes(target.out_dir) == store_bytes(alone), target.name
        assert summary.added[target.name] == len(images)


def test_a_store_left_behind_by_a_kill_catches_up_without_duplicates(
    tiny_attr, images, tmp_path
) -> None:
    # a kill between two stores' commits: vgattr3636 holds three images, vgattr5050 two
    targets = _all_variants(tmp_path / "resumed", "attr")[:2]
    extract_images(tiny_attr, images[:3], targets[:1])
    extract_images(tiny_attr, images[:2], targets[1:])
    summary = extract_images(tiny_attr, images, targets)
    assert summary.detected == 2  # 00003 (one store lacks it) and 00004
    assert summary.added == {targets[0].name: 1, targets[1].name: 2}
    clean = _all_variants(tmp_path / "clean", "attr")[:2]
    extract_images(tiny_attr, images, clean)
    for resumed, fresh in zip(targets, clean, strict=True):
        assert store_bytes(resumed.out_dir) == store_bytes(fresh.out_dir)


def test_targets_must_be_distinct_stores(tiny_attr, images, tmp_path) -> None:
    twice = [StoreTarget("a", tmp_path / "s", 5, 12), StoreTarget("b", tmp_path / "s", 5, 12)]
    with pytest.raises(SpecError, match="share one store"):
        extract_images(tiny_attr, images, twice)
