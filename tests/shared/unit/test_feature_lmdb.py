import os
import pickle
import subprocess
import sys
from pathlib import Path

import lmdb
import numpy as np
import pytest

from hm_shared.errors import HmDataError
from hm_shared.feature_lmdb import export_lmdb, import_lmdb, read_lmdb, write_lmdb
from hm_shared.features import DatasetIds, FeatureStore, FeatureStoreWriter, RegionFeatures
from hm_shared.safe_pickle import UnsafePickleError, restricted_loads

DIM = 16


def make_item(image_id: str, n: int, classes: int = 1600) -> RegionFeatures:
    rng = np.random.default_rng([n, int(image_id)])
    return RegionFeatures(
        image_id=image_id,
        image_h=int(rng.integers(100, 900)),
        image_w=int(rng.integers(100, 900)),
        boxes=rng.uniform(0, 99, (n, 4)).astype(np.float32),
        features=rng.standard_normal((n, DIM)).astype(np.float32),
        object_ids=rng.integers(0, classes, n),
        object_conf=rng.random(n, dtype=np.float32),
        attr_ids=np.zeros(n, np.int64),  # the MMF layout has no attributes
        attr_conf=np.zeros(n, np.float32),
    )


ITEMS = [make_item(f"{i:05d}", n) for i, n in [(1235, 3), (8291, 0), (42, 7), (10000, 1)]]


def store_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.name != "writer.lock"}


def make_store(root: Path, items: list[RegionFeatures]) -> Path:
    with FeatureStoreWriter(root, DIM) as writer:
        for item in items:
            writer.add(item)
    return root


def write_raw_lmdb(path: Path, entries: dict[bytes, bytes]) -> Path:
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for key, value in entries.items():
            txn.put(key, value)
    env.close()
    return path


def mmf_value(key: str, n: int, classes: int = 20) -> dict:
    """A value as MMF's extraction + lmdb_conversion wrote it (softmax scores, fewer num_boxes)."""
    rng = np.random.default_rng(int(key))
    logits = rng.standard_normal((n, classes)).astype(np.float32)
    cls_prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {
        "feature_path": key,
        "features": rng.random((n, DIM), dtype=np.float32),
        "image_height": np.int64(300),  # numpy ints, as some extractors saved them
        "image_width": 500,
        "num_boxes": n - 2,
        "objects": cls_prob.argmax(axis=1),
        "cls_prob": cls_prob,
        "bbox": rng.uniform(0, 300, (n, 4)).astype(np.float32),
    }


def test_export_import_round_trip_is_lossless(tmp_path: Path) -> None:
    original = make_store(tmp_path / "a", ITEMS)
    assert export_lmdb(original, tmp_path / "a.lmdb") == 4
    summary = import_lmdb(tmp_path / "a.lmdb", tmp_path / "b", feature_dim=DIM)
    assert (summary.added, summary.problems) == (4, [])
    assert store_files(tmp_path / "b") == store_files(original)  # bitwise, index included


def test_exported_layout_is_mmfs(tmp_path: Path) -> None:
    export_lmdb(make_store(tmp_path / "a", ITEMS), tmp_path / "a.lmdb", num_classes=1600)
    assert {p.name for p in (tmp_path / "a.lmdb").iterdir()} == {"data.mdb", "lock.mdb"}
    env = lmdb.open(str(tmp_path / "a.lmdb"), readonly=True, lock=False)
    with env.begin() as txn:
        keys = pickle.loads(txn.get(b"keys"))  # our own file: plain pickle is fine here
        assert keys == [b"01235", b"08291", b"00042", b"10000"]
        for key, item in zip(keys, ITEMS, strict=True):
            value = pickle.loads(txn.get(key))
            assert set(value) == {"feature_path", "features", "image_height", "image_width",
                                  "num_boxes", "objects", "cls_prob", "bbox"}  # fmt: skip
            assert value["feature_path"] == item.image_id
            assert (value["image_height"], value["image_width"]) == (item.image_h, item.image_w)
            assert value["num_boxes"] == item.num_boxes
            assert value["features"].dtype == np.float32
            np.testing.assert_array_equal(value["features"], item.features)
            np.testing.assert_array_equal(value["bbox"], item.boxes)
            assert value["cls_prob"].shape == (item.num_boxes, 1600)
            if item.num_boxes:
                np.testing.assert_array_equal(value["cls_prob"].argmax(axis=1), item.object_ids)
                np.testing.assert_array_equal(value["cls_prob"].max(axis=1), item.object_conf)
    env.close()


def test_export_without_cls_prob_and_refuses_existing_output(tmp_path: Path) -> None:
    store = make_store(tmp_path / "a", ITEMS)
    export_lmdb(store, tmp_path / "a.lmdb", num_classes=None)
    back = list(read_lmdb(tmp_path / "a.lmdb", DIM))
    assert all(not b.object_conf.any() for b in back)
    with pytest.raises(HmDataError, match="already exists"):
        export_lmdb(store, tmp_path / "a.lmdb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "a.lmdb"]  # no temp dir left


def test_export_grows_the_map_when_needed(tmp_path: Path, monkeypatch) -> None:
    from hm_shared import feature_lmdb

    real_open = lmdb.open
    monkeypatch.setattr(
        feature_lmdb.lmdb,
        "open",
        lambda p, **kw: real_open(
            p,
            **{
                **kw,
                "map_size": 64 * 1024 if "readonly" not in kw else kw.get("map_size", 1 << 20),
            },
        ),
    )
    items = [make_item(f"{i:05d}", 30, classes=40) for i in range(40)]  # ~200 kB of cls_prob
    write_lmdb(items, tmp_path / "g.lmdb", num_classes=40)
    assert [b.image_id for b in read_lmdb(tmp_path / "g.lmdb", DIM)] == [i.image_id for i in items]


def test_mmf_written_lmdb_with_integer_keys_maps_to_stems(tmp_path: Path) -> None:
    values = {key: mmf_value(key, 6) for key in ["1235", "8291", "99999"]}
    entries = {k.encode(): pickle.dumps(v, protocol=3) for k, v in values.items()}
    entries[b"keys"] = pickle.dumps([k.encode() for k in values], protocol=3)
    path = write_raw_lmdb(tmp_path / "detectron.lmdb", entries)
    ids = DatasetIds(["01235", "08291", "00042"])
    summary = import_lmdb(path, tmp_path / "s", feature_dim=DIM, dataset_ids=ids)
    assert (summary.added, summary.unknown_ids) == (2, 1)
    assert "key '99999' is not in the dataset" in str(summary)
    store = FeatureStore(tmp_path / "s")
    assert store.ids() == ["01235", "08291"]
    got, value = store["01235"], values["1235"]
    assert (got.image_h, got.image_w, got.num_boxes) == (300, 500, 6)  # all rows kept
    np.testing.assert_array_equal(got.features, value["features"])
    np.testing.assert_array_equal(got.boxes, value["bbox"])
    np.testing.assert_array_equal(got.object_ids, value["objects"])
    np.testing.assert_array_equal(got.object_conf, value["cls_prob"].max(axis=1))
    assert not got.attr_ids.any() and not got.attr_conf.any()
    kept = list(read_lmdb(path, DIM))  # without a dataset: the keys as written
    assert [k.image_id for k in kept] == ["1235", "8291", "99999"]


def test_two_keys_for_one_image_keep_the_first(tmp_path: Path) -> None:
    entries = {b"1235": pickle.dumps(mmf_value("1235", 3)),
               b"01235": pickle.dumps(mmf_value("1235", 4))}  # fmt: skip
    entries[b"keys"] = pickle.dumps(list(entries))
    path = write_raw_lmdb(tmp_path / "d.lmdb", entries)
    summary = import_lmdb(path, tmp_path / "s", DIM, DatasetIds(["01235"]))
    assert (summary.added, summary.duplicates) == (1, 1)
    assert FeatureStore(tmp_path / "s")["01235"].num_boxes == 3


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_value_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    good = pickle.dumps(mmf_value("1235", 2))
    evil = pickle.dumps({**mmf_value("8291", 2), "features": Evil(marker)})
    path = write_raw_lmdb(
        tmp_path / "evil.lmdb",
        {b"01235": good, b"08291": evil, b"keys": pickle.dumps([b"01235", b"08291"])},
    )
    with pytest.raises(
        UnsafePickleError,
        match=r"evil\.lmdb: key '08291': refused to load global "
        r"(posix|os)\.system",
    ):
        import_lmdb(path, tmp_path / "s", DIM)
    assert not marker.exists()
    assert FeatureStore(tmp_path / "s").ids() == ["01235"]  # the good one before it is kept


def test_malicious_keys_list_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write_raw_lmdb(tmp_path / "evil.lmdb", {b"keys": pickle.dumps([Evil(marker)])})
    with pytest.raises(UnsafePickleError, match=r"evil\.lmdb: key b'keys': refused"):
        list(read_lmdb(path))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({b"x": b"1"}, r"no b'keys' entry; expected MMF's feature LMDB layout"),
        ({b"keys": pickle.dumps({"a": 1})}, r"key b'keys' holds dict; expected a list"),
        ({b"keys": pickle.dumps([b"1235"])}, r"key '1235' is listed under b'keys' but absent"),
        ({b"keys": pickle.dumps([b"1"]), b"1": b"garbage"}, r"key '1': not a readable pickle"),
        (
            {b"keys": pickle.dumps([b"1"]), b"1": pickle.dumps([1, 2])},
            r"key '1' holds list; expected a dict",
        ),
        (
            {b"keys": pickle.dumps([b"1"]), b"1": pickle.dumps({"features": 1})},
            r"key '1': missing \['bbox', 'image_height', 'image_width'\]",
        ),
        (
            {
                b"keys": pickle.dumps([b"1"]),
                b"1": pickle.dumps({**mmf_value("1", 4), "bbox": np.zeros((3, 4), np.float32)}),
            },
            r"key '1': features has 4 rows, bbox 3, objects 4",
        ),
        (
            {
                b"keys": pickle.dumps([b"1"]),
                b"1": pickle.dumps({**mmf_value("1", 4), "image_width": "500"}),
            },
            r"key '1': image_width = '500'; expected an int",
        ),
        (
            {
                b"keys": pickle.dumps([b"1"]),
                b"1": pickle.dumps({**mmf_value("1", 4), "features": np.zeros((4, 8), np.float32)}),
            },
            r"key '1'.*features has shape \(4, 8\); expected \(4, 16\)",
        ),
        (
            {
                b"keys": pickle.dumps([b"1"]),
                b"1": pickle.dumps({**mmf_value("1", 4), "objects": np.full(4, 50)}),
            },
            r"key '1': objects reach 50 but cls_prob has 20 columns",
        ),
    ],
    ids=[
        "no-keys",
        "keys-not-list",
        "absent",
        "garbage",
        "not-dict",
        "missing-fields",
        "row-mismatch",
        "bad-size",
        "feature-dim",
        "objects-range",
    ],
)
def test_bad_lmdb_names_file_and_key(tmp_path: Path, entries: dict, message: str) -> None:
    path = write_raw_lmdb(tmp_path / "bad.lmdb", entries)
    with pytest.raises(HmDataError, match=rf"bad\.lmdb.*{message}"):
        list(read_lmdb(path, DIM))


def test_missing_lmdb(tmp_path: Path) -> None:
    with pytest.raises(HmDataError, match=r"nope\.lmdb: feature LMDB not found"):
        list(read_lmdb(tmp_path / "nope.lmdb"))


def test_cli_import_lmdb_with_ids_from_image_folder(tmp_path: Path) -> None:
    export_lmdb(make_store(tmp_path / "a", ITEMS), tmp_path / "a.lmdb")
    (tmp_path / "img").mkdir()
    for it in ITEMS[:3]:
        (tmp_path / "img" / f"{it.image_id}.png").write_bytes(b"")
    run = [sys.executable, "-m", "hm_shared.feature_io"]
    proc = subprocess.run([*run, "import-lmdb", str(tmp_path / "a.lmdb"), str(tmp_path / "s"),
                           "--feature-dim", str(DIM), "--ids", str(tmp_path / "img")],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "3 images added" in proc.stdout and "1 not in the dataset" in proc.stdout
    proc = subprocess.run([*run, "export-lmdb", str(tmp_path / "s"), str(tmp_path / "a.lmdb")],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 3 and "a.lmdb: already exists" in proc.stderr


# restricted_loads is shared with the detector-weights loader: its own contract.


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_restricted_loads_admits_arrays_and_containers(protocol: int) -> None:
    obj = {
        "model": {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "n": np.int64(7)},
        "f": np.asfortranarray(np.ones((2, 3))), "rec": np.zeros(2, [("a", "<i8"), ("b", "<f4")]),
        "misc": [b"bytes", "text", (1, 2.5, None, True), {3}, frozenset({4}), 1 + 2j],
    }  # fmt: skip
    back = restricted_loads(pickle.dumps(obj, protocol=protocol))
    assert back["model"]["w"].tobytes() == obj["model"]["w"].tobytes()
    assert back["model"]["n"] == 7 and back["f"].flags.f_contiguous
    assert back["rec"].dtype == obj["rec"].dtype and back["misc"] == obj["misc"]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_restricted_loads_refuses_code_and_object_arrays(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafePickleError, match=r"w\.pkl: refused to load global"):
        restricted_loads(pickle.dumps({"x": Evil(marker)}, protocol=protocol), source="w.pkl")
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match="holds Python objects"):
        restricted_loads(pickle.dumps(np.array([1, "a"], dtype=object), protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"refused to load global builtins\.eval"):
        restricted_loads(b"cbuiltins\neval\n(S'1+1'\ntR.")


def test_entries_without_info_fields_are_skipped_and_listed(tmp_path: Path) -> None:
    # an extraction that died between writing an entry's features and its info, or a stray
    # key: the import goes on and names each such key
    no_info = {k: v for k, v in mmf_value("42", 4).items() if k not in ("bbox", "image_height")}
    entries = {
        b"08291": pickle.dumps(mmf_value("8291", 5)),
        b"00042": pickle.dumps(no_info),
        b"00007": pickle.dumps([1, 2, 3]),
        b"01235": pickle.dumps(mmf_value("1235", 3)),
        b"keys": pickle.dumps([b"08291", b"00042", b"00007", b"01235"]),
    }
    path = write_raw_lmdb(tmp_path / "partial.lmdb", entries)
    summary = import_lmdb(path, tmp_path / "s", feature_dim=DIM)
    assert (summary.added, summary.incomplete) == (2, 2)
    assert summary.problems == [
        f"{path}: key '00042': missing ['bbox', 'image_height']; expected MMF's info fields; "
        "skipped",
        f"{path}: key '00007' holds list; expected a dict; skipped",
    ]
    assert "2 incomplete entries skipped" in str(summary)
    assert FeatureStore(tmp_path / "s").ids() == ["08291", "01235"]
