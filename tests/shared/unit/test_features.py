import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hm_shared.errors import HmDataError
from hm_shared.features import (
    DatasetIds,
    FeatureStore,
    FeatureStoreWriter,
    RegionFeatures,
    UnknownImageError,
)

DIM = 16


def make_item(image_id: str, n: int, seed: int = 0, dim: int = DIM) -> RegionFeatures:
    number = int(image_id) if image_id.isdigit() else 7
    rng = np.random.default_rng([seed, n, len(image_id), number])
    xy = rng.uniform(0, 50, (n, 2)).astype(np.float32)
    return RegionFeatures(
        image_id=image_id,
        image_h=480,
        image_w=640,
        boxes=np.concatenate([xy, xy + rng.uniform(1, 40, (n, 2)).astype(np.float32)], axis=1),
        features=rng.standard_normal((n, dim)).astype(np.float32),
        object_ids=rng.integers(0, 1600, n),
        object_conf=rng.random(n, dtype=np.float32),
        attr_ids=rng.integers(0, 400, n),
        attr_conf=rng.random(n, dtype=np.float32),
    )


ARRAYS = ("boxes", "features", "object_ids", "object_conf", "attr_ids", "attr_conf")


def assert_same(a: RegionFeatures, b: RegionFeatures) -> None:
    assert (a.image_id, a.image_h, a.image_w) == (b.image_id, b.image_h, b.image_w)
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name  # bitwise


def write_store(root: Path, items: list[RegionFeatures]) -> None:
    with FeatureStoreWriter(root, DIM) as writer:
        for item in items:
            writer.add(item)


def test_write_then_read_random_access_is_bitwise(tmp_path: Path) -> None:
    items = [make_item(f"{i:05d}", n) for i, n in enumerate([3, 0, 7, 1, 36])]
    write_store(tmp_path / "s", items)
    store = FeatureStore(tmp_path / "s")
    assert len(store) == 5 and store.feature_dim == DIM
    assert store.ids() == [it.image_id for it in items]
    assert "00002" in store and "2" not in store and 2 not in store
    for item in reversed(items):
        got = store[item.image_id]
        assert_same(got, item)
        assert got.num_boxes == item.num_boxes
        assert not got.features.flags.writeable  # a view into the read-only map
    meta = json.loads((tmp_path / "s" / "store.json").read_text())
    assert meta == {"format_version": 1, "feature_dim": DIM, "dtype": "float32"}
    assert (tmp_path / "s" / "features.f32").stat().st_size == 47 * DIM * 4


def test_item_arrays_are_views_not_copies(tmp_path: Path) -> None:
    write_store(tmp_path / "s", [make_item("00001", 4), make_item("00002", 5)])
    got = FeatureStore(tmp_path / "s")["00002"]
    assert not got.features.flags.owndata and got.features.base is not None


def test_integer_and_float_inputs_are_converted(tmp_path: Path) -> None:
    item = make_item("00001", 3)
    wide = RegionFeatures(
        "00001", np.int64(480), 640, item.boxes.astype(np.float64), item.features,
        item.object_ids.astype(np.int32), item.object_conf, item.attr_ids, item.attr_conf,
    )  # fmt: skip
    write_store(tmp_path / "s", [wide])
    got = FeatureStore(tmp_path / "s")["00001"]
    assert got.boxes.dtype == np.float32 and got.object_ids.dtype == np.int64
    assert got.object_ids.tolist() == item.object_ids.tolist()


def test_unknown_id_is_a_keyerror_naming_store_and_id(tmp_path: Path) -> None:
    write_store(tmp_path / "s", [make_item("00001", 2)])
    store = FeatureStore(tmp_path / "s")
    with pytest.raises(UnknownImageError, match=r"s: no features for image id '08291'") as info:
        store["08291"]
    assert isinstance(info.value, KeyError) and isinstance(info.value, HmDataError)
    assert str(tmp_path / "s") in str(info.value)


def test_store_survives_pickling_for_spawned_workers(tmp_path: Path) -> None:
    write_store(tmp_path / "s", [make_item("00001", 2)])
    store = FeatureStore(tmp_path / "s")
    data = pickle.dumps(store)
    assert len(data) < 1000  # reopened by path, the maps are not copied
    assert_same(pickle.loads(data)["00001"], store["00001"])


def test_index_of_12k_images_opens_and_finds_any_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The open cost is measured in bench/bench_features.py; here: the index is complete and
    # lookups by id land on the right rows.
    monkeypatch.setattr(FeatureStoreWriter, "AUTO_FLUSH_IMAGES", 100_000)  # one fsync round
    item = make_item("00000", 1, dim=4)
    with FeatureStoreWriter(tmp_path / "s", 4) as writer:
        for i in range(12_000):
            features = np.full((1, 4), i, dtype=np.float32)
            writer.add(dataclasses.replace(item, image_id=f"{i:05d}", features=features))
    store = FeatureStore(tmp_path / "s")
    assert len(store) == 12_000
    for i in (0, 6_543, 11_999):
        assert store[f"{i:05d}"].features[0, 0] == i


_KILLED_WRITER = """
import os, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_features import make_item, DIM
from hm_shared.features import FeatureStoreWriter
writer = FeatureStoreWriter(Path({root!r}), DIM)
for i in range(5):
    writer.add(make_item(f"{{i:05d}}", i + 1))
writer.flush()
for i in range(5, 8):
    writer.add(make_item(f"{{i:05d}}", i + 1))
os._exit(9)  # killed: no flush, no close
"""


def test_resume_after_kill_before_flush_has_no_duplicates(tmp_path: Path) -> None:
    root = tmp_path / "s"
    code = _KILLED_WRITER.format(tests=str(Path(__file__).parent), root=str(root))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    rows_flushed = sum(range(1, 6))
    assert (root / "features.f32").stat().st_size > rows_flushed * DIM * 4  # uncommitted tail
    assert len(FeatureStore(root)) == 5  # a reader sees only what the index covers
    with FeatureStoreWriter(root, DIM) as writer:
        assert len(writer) == 5 and "00004" in writer and "00005" not in writer
        for name in ("features.f32", "boxes.f32", "object_ids.i64"):
            per_row = {"features.f32": DIM * 4, "boxes.f32": 16, "object_ids.i64": 8}[name]
            assert (root / name).stat().st_size == rows_flushed * per_row  # tail dropped
        for i in range(8):
            if f"{i:05d}" not in writer:
                writer.add(make_item(f"{i:05d}", i + 1))
    store = FeatureStore(root)
    assert store.ids() == [f"{i:05d}" for i in range(8)]
    for i in range(8):
        assert_same(store[f"{i:05d}"], make_item(f"{i:05d}", i + 1))
    assert (root / "features.f32").stat().st_size == sum(range(1, 9)) * DIM * 4


def test_resume_drops_half_row_left_by_a_kill_mid_write(tmp_path: Path) -> None:
    root = tmp_path / "s"
    write_store(root, [make_item("00001", 3)])
    with open(root / "features.f32", "ab") as handle:  # half of the next image's features
        handle.write(b"\x01" * (DIM * 4 * 2 + 6))
    with open(root / "boxes.f32", "ab") as handle:
        handle.write(b"\x02" * 10)
    assert_same(FeatureStore(root)["00001"], make_item("00001", 3))
    with FeatureStoreWriter(root, DIM) as writer:
        writer.add(make_item("00002", 4))
    store = FeatureStore(root)
    assert_same(store["00001"], make_item("00001", 3))
    assert_same(store["00002"], make_item("00002", 4))  # offsets not shifted by the half row


def test_failed_add_leaves_no_partial_row(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with FeatureStoreWriter(root, DIM) as writer:
        writer.add(make_item("00001", 2))
        bad = make_item("00002", 3)
        with pytest.raises(HmDataError, match="features has shape"):
            writer.add(RegionFeatures(**{**bad.__dict__, "features": bad.features[:, :4]}))
        writer.add(make_item("00003", 1))
    assert FeatureStore(root).ids() == ["00001", "00003"]
    assert_same(FeatureStore(root)["00003"], make_item("00003", 1))


def test_context_exit_on_error_keeps_completed_rows(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with pytest.raises(RuntimeError), FeatureStoreWriter(root, DIM) as writer:
        writer.add(make_item("00001", 2))
        raise RuntimeError("detector crashed")
    assert FeatureStore(root).ids() == ["00001"]


def test_adding_an_id_twice_is_an_error(tmp_path: Path) -> None:
    with FeatureStoreWriter(tmp_path / "s", DIM) as writer:
        writer.add(make_item("00001", 2))
        with pytest.raises(HmDataError, match="'00001' is already in the store"):
            writer.add(make_item("00001", 2))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_id": "a\tb"}, "image id without tabs"),
        ({"image_id": ""}, "non-empty image id"),
        ({"image_h": 0}, "image_h = 0; expected a positive int"),
        ({"image_w": 2.5}, "image_w = 2.5"),
        ({"boxes": np.zeros((3, 5), np.float32)}, r"boxes has shape \(3, 5\); expected \(3, 4\)"),
        ({"object_ids": np.zeros(3, np.float32)}, "object_ids has dtype float32; expected an int"),
        ({"attr_conf": np.zeros(2, np.float32)}, r"attr_conf has shape \(2,\); expected \(3,\)"),
        ({"features": np.full((3, DIM), np.nan, np.float32)}, "features holds NaN"),
    ],
)
def test_bad_items_are_refused_with_the_image_named(
    tmp_path: Path, change: dict, message: str
) -> None:
    item = make_item("00007", 3)
    with FeatureStoreWriter(tmp_path / "s", DIM) as writer:
        with pytest.raises(HmDataError, match=message) as info:
            writer.add(RegionFeatures(**{**item.__dict__, **change}))
        assert str(tmp_path / "s") in str(info.value)
        assert len(writer) == 0
    assert (tmp_path / "s" / "features.f32").stat().st_size == 0


def test_second_writer_on_the_same_store_is_refused(tmp_path: Path) -> None:
    with FeatureStoreWriter(tmp_path / "s", DIM), pytest.raises(HmDataError, match="another"):
        FeatureStoreWriter(tmp_path / "s", DIM)
    FeatureStoreWriter(tmp_path / "s", DIM).close()  # released on close


_FORKING_WRITER = """
import os, sys, time
from hm_shared.features import FeatureStoreWriter
writer = FeatureStoreWriter(sys.argv[1], 16)
child = os.fork()  # as a DataLoader worker is forked while the stage writes
if child == 0:
    print(os.getpid(), flush=True)  # after the fork hooks ran, as a worker's first batch is
    time.sleep(120)
    os._exit(0)
time.sleep(120)
"""


def test_a_killed_writer_frees_its_store_though_its_forked_child_lives(tmp_path: Path) -> None:
    # the extract stage SIGKILLed: its DataLoader workers outlive it for a few seconds; the
    # rerun must get the store at once, not "another process is writing"
    root = tmp_path / "s"
    proc = subprocess.Popen(
        [sys.executable, "-c", _FORKING_WRITER, str(root)], stdout=subprocess.PIPE, text=True
    )
    child = int(proc.stdout.readline())
    try:
        proc.kill()
        proc.wait()
        os.kill(child, 0)  # still alive, holding a copy of every fd it inherited but the lock's
        FeatureStoreWriter(root, DIM).close()
    finally:
        os.kill(child, 9)


def test_reopening_with_another_feature_dim_is_refused(tmp_path: Path) -> None:
    write_store(tmp_path / "s", [make_item("00001", 1)])
    with pytest.raises(HmDataError, match=r"store\.json: store holds feature_dim 16, writer asked"):
        FeatureStoreWriter(tmp_path / "s", 2048)


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(HmDataError, match=r"not a feature store \(no store.json\).*import-tsv"):
        FeatureStore(tmp_path)


def test_index_missing(tmp_path: Path) -> None:
    write_store(tmp_path / "s", [make_item("00001", 1)])
    (tmp_path / "s" / "index.npy").unlink()
    with pytest.raises(HmDataError, match=r"index.npy: index missing"):
        FeatureStore(tmp_path / "s")


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"not numpy at all"),
        lambda p: p.write_bytes(p.read_bytes()[:-20]),
        lambda p: np.save(p, np.arange(3)),
        lambda p: _rewrite_index(p, row=5),
    ],
    ids=["garbage", "truncated", "wrong-dtype", "rows-not-contiguous"],
)
def test_corrupt_index(tmp_path: Path, damage) -> None:
    write_store(tmp_path / "s", [make_item("00001", 1), make_item("00002", 2)])
    damage(tmp_path / "s" / "index.npy")
    with pytest.raises(HmDataError, match=r"index.npy: corrupt index"):
        FeatureStore(tmp_path / "s")
    with pytest.raises(HmDataError, match=r"index.npy: corrupt index"):
        FeatureStoreWriter(tmp_path / "s", DIM)


def _rewrite_index(path: Path, row: int) -> None:
    index = np.load(path)
    index["row"][1] = row
    with open(path, "wb") as handle:
        np.save(handle, index)


def test_version_mismatch(tmp_path: Path) -> None:
    write_store(tmp_path / "s", [make_item("00001", 1)])
    meta_path = tmp_path / "s" / "store.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(HmDataError, match=r"store\.json: store format_version 99, this code read"):
        FeatureStore(tmp_path / "s")


@pytest.mark.parametrize("name", ["features.f32", "attr_conf.f32"])
def test_data_file_shorter_than_index(tmp_path: Path, name: str) -> None:
    write_store(tmp_path / "s", [make_item("00001", 3), make_item("00002", 2)])
    path = tmp_path / "s" / name
    os.truncate(path, path.stat().st_size - 4)
    with pytest.raises(HmDataError, match=rf"{name}: data file holds \d+ bytes but the index"):
        FeatureStore(tmp_path / "s")
    with pytest.raises(HmDataError, match=rf"{name}: data file holds .* cannot be resumed"):
        FeatureStoreWriter(tmp_path / "s", DIM)


def test_dataset_ids_resolve_int_like_and_path_keys(tmp_path: Path) -> None:
    ids = DatasetIds(["08291", "00042", "12345"])
    assert ids.resolve("8291") == "08291"
    assert ids.resolve("08291") == "08291"
    assert ids.resolve("img/00042.png") == "00042"
    assert ids.resolve("42") == "00042"
    assert ids.resolve("99999") is None
    assert ids.resolve("81054 (1)") is None


def test_dataset_ids_from_folder_jsonl_and_text(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    for stem in ("01235", "08291"):
        (tmp_path / "img" / f"{stem}.png").write_bytes(b"")
    (tmp_path / "img" / "notes.txt").write_text("x")
    assert DatasetIds.from_path(tmp_path / "img").ids == {"01235", "08291"}
    rows = [{"id": 1235, "img": "img/01235.png", "text": "a"}, {"id": 8291, "text": "b"}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert DatasetIds.from_path(tmp_path / "train.jsonl").ids == {"01235", "8291"}
    (tmp_path / "ids.txt").write_text("01235\n\n08291\n")
    assert DatasetIds.from_path(tmp_path / "ids.txt").ids == {"01235", "08291"}
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n[1]\n')
    with pytest.raises(HmDataError, match=r"bad.jsonl:2: expected a JSON object with img or id"):
        DatasetIds.from_path(tmp_path / "bad.jsonl")
    with pytest.raises(HmDataError, match="the same number"):
        DatasetIds(["0042", "00042"])


def test_resume_removes_an_index_temp_file_left_by_a_kill(tmp_path: Path) -> None:
    write_store(tmp_path / "s", [make_item("00001", 1)])
    stale = tmp_path / "s" / ".index.npy.k1ll3d.tmp"
    stale.write_bytes(b"half an index")
    assert FeatureStore(tmp_path / "s").ids() == ["00001"]  # readers never look at it
    FeatureStoreWriter(tmp_path / "s", DIM).close()
    assert not stale.exists()
