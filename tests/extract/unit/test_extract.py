import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from torch.testing import assert_close

from hm_extract.extract import (
    ImageItem,
    UnreadableImageError,
    cli,
    extract_images,
    list_images,
    pending_images,
    prepared_images,
    run_extraction,
)
from hm_shared.errors import HmDataError, SpecError
from hm_shared.features import FeatureStore

ODD_SIZES = ((37, 251), (120, 90), (64, 64), (301, 97))  # as the conftest writes them


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
    summary = extract_images(tiny_attr, images, out, min_boxes=5, max_boxes=12, batch_size=3)
    assert summary.extracted == 4 and summary.already_present == 0
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
    extract_images(tiny_attr, images[:2], out, 5, 12)
    summary = extract_images(tiny_attr, images, out, 5, 12, batch_size=2)
    assert (summary.extracted, summary.already_present) == (2, 2)
    again = extract_images(tiny_attr, images, out, 5, 12)
    assert (again.extracted, again.already_present) == (0, 4)
    assert len(FeatureStore(out)) == 4


def test_batch_size_does_not_change_the_store(tiny_attr, images, tmp_path) -> None:
    extract_images(tiny_attr, images, tmp_path / "one", 5, 12, batch_size=1)
    extract_images(tiny_attr, images, tmp_path / "four", 5, 12, batch_size=4)
    one, four = FeatureStore(tmp_path / "one"), FeatureStore(tmp_path / "four")
    for image_id in one.ids():
        a, b = one[image_id], four[image_id]
        assert np.array_equal(a.object_ids, b.object_ids)
        assert_close(np.array(a.features), np.array(b.features), rtol=1e-4, atol=1e-4)
        assert_close(np.array(a.boxes), np.array(b.boxes), rtol=1e-4, atol=1e-3)


def test_plain_weights_store_zero_attributes(tiny_plain, images, tmp_path) -> None:
    extract_images(tiny_plain, images[:1], tmp_path / "store", 5, 12)
    regions = FeatureStore(tmp_path / "store")["00001"]
    assert (np.asarray(regions.attr_ids) == 0).all()
    assert (np.asarray(regions.attr_conf) == 0).all()


def test_unreadable_image_is_named_or_skipped(tiny_attr, images, tmp_path) -> None:
    broken = tmp_path / "img" / "00009.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    items = [*images[:2], ImageItem("00009", broken), images[2]]
    with pytest.raises(UnreadableImageError, match="00009") as info:
        extract_images(tiny_attr, items, tmp_path / "store", 5, 12)
    assert str(broken) in str(info.value) and "--skip-unreadable" in str(info.value)
    summary = extract_images(tiny_attr, items, tmp_path / "store", 5, 12, skip_unreadable=True)
    assert [s["id"] for s in summary.skipped] == ["00009"]
    skipped = json.loads((tmp_path / "store" / "skipped.json").read_text())
    assert skipped[0]["path"] == str(broken) and skipped[0]["error"]
    store = FeatureStore(tmp_path / "store")
    assert "00009" not in store and len(store) == 3

    # a rerun neither decodes the unchanged broken file again nor builds the detector for it
    assert pending_images(items, tmp_path / "store", skip_unreadable=True) == []
    built: list[int] = []
    again = run_extraction(
        items, tmp_path / "store", lambda: built.append(1) or tiny_attr, 5, 12, 1, True, "x"
    )
    assert built == [] and again.already_present == 3 and len(again.skipped) == 1
    # once the user replaces the file, it is tried again
    shutil.copyfile(images[0].path, broken)
    assert pending_images(items, tmp_path / "store", skip_unreadable=True) == [items[2]]
    extract_images(tiny_attr, items, tmp_path / "store", 5, 12, skip_unreadable=True)
    assert "00009" in FeatureStore(tmp_path / "store")


def test_bad_box_counts_are_refused(tiny_attr, images, tmp_path) -> None:
    with pytest.raises(SpecError, match="min_boxes"):
        extract_images(tiny_attr, images, tmp_path / "store", 50, 10)


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
