import base64
import csv
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from hm_shared.errors import HmDataError
from hm_shared.feature_tsv import (
    TSV_FIELDS,
    encode_row,
    export_tsv,
    import_tsv,
    read_tsv,
    write_tsv,
)
from hm_shared.features import DatasetIds, FeatureStore, FeatureStoreWriter, RegionFeatures

DIM = 16
FIELDNAMES = ["img_id", "img_h", "img_w", "objects_id", "objects_conf",
              "attrs_id", "attrs_conf", "num_boxes", "boxes", "features"]  # fmt: skip


def make_item(image_id: str, n: int, dim: int = DIM) -> RegionFeatures:
    rng = np.random.default_rng([n, int(image_id)])
    return RegionFeatures(
        image_id=image_id,
        image_h=int(rng.integers(100, 900)),
        image_w=int(rng.integers(100, 900)),
        boxes=rng.uniform(0, 99, (n, 4)).astype(np.float32),
        features=rng.standard_normal((n, dim)).astype(np.float32),
        object_ids=rng.integers(0, 1600, n),
        object_conf=rng.random(n, dtype=np.float32),
        attr_ids=rng.integers(0, 400, n),
        attr_conf=rng.random(n, dtype=np.float32),
    )


ITEMS = [make_item(f"{i:05d}", n) for i, n in [(1235, 3), (8291, 0), (42, 7), (10000, 1)]]
ARRAYS = ("boxes", "features", "object_ids", "object_conf", "attr_ids", "attr_conf")


def assert_same(a: RegionFeatures, b: RegionFeatures) -> None:
    assert (a.image_id, a.image_h, a.image_w) == (b.image_id, b.image_h, b.image_w)
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x.dtype, x.shape, x.tobytes()) == (y.dtype, y.shape, y.tobytes()), name


def make_store(root: Path, items: list[RegionFeatures]) -> Path:
    with FeatureStoreWriter(root, DIM) as writer:
        for item in items:
            writer.add(item)
    return root


def store_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.name != "writer.lock"}


def upstream_style_reader(path: Path) -> list[dict]:
    """Written from the format description alone: csv, base64, np.frombuffer."""
    csv.field_size_limit(sys.maxsize)
    rows = []
    with open(path, newline="") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            item = dict(zip(FIELDNAMES, row, strict=True))
            n = int(item["num_boxes"])
            decode = [
                ("objects_id", np.int64, (n,)),
                ("objects_conf", np.float32, (n,)),
                ("attrs_id", np.int64, (n,)),
                ("attrs_conf", np.float32, (n,)),
                ("boxes", np.float32, (n, 4)),
                ("features", np.float32, (n, DIM)),
            ]
            for key, dtype, shape in decode:
                item[key] = np.frombuffer(base64.b64decode(item[key]), dtype=dtype).reshape(shape)
            rows.append(item)
    return rows


def upstream_style_writer(path: Path, items: list[RegionFeatures]) -> None:
    """What py-bottom-up-attention did: csv.DictWriter, tab, text mode, no header."""
    with open(path, "w") as handle:
        writer = csv.DictWriter(handle, delimiter="\t", fieldnames=FIELDNAMES)
        for it in items:
            writer.writerow({
                "img_id": it.image_id, "img_h": it.image_h, "img_w": it.image_w,
                "objects_id": base64.b64encode(it.object_ids).decode(),
                "objects_conf": base64.b64encode(it.object_conf).decode(),
                "attrs_id": base64.b64encode(it.attr_ids).decode(),
                "attrs_conf": base64.b64encode(it.attr_conf).decode(),
                "num_boxes": it.num_boxes,
                "boxes": base64.b64encode(it.boxes).decode(),
                "features": base64.b64encode(it.features).decode(),
            })  # fmt: skip


def test_our_tsv_reads_back_with_an_independent_reader(tmp_path: Path) -> None:
    export_tsv(make_store(tmp_path / "s", ITEMS), tmp_path / "hm.tsv")
    rows = upstream_style_reader(tmp_path / "hm.tsv")
    assert [r["img_id"] for r in rows] == [it.image_id for it in ITEMS]
    for row, it in zip(rows, ITEMS, strict=True):
        assert (int(row["img_h"]), int(row["img_w"])) == (it.image_h, it.image_w)
        assert row["num_boxes"] == str(it.num_boxes)
        np.testing.assert_array_equal(row["objects_id"], it.object_ids)
        np.testing.assert_array_equal(row["objects_conf"], it.object_conf)
        np.testing.assert_array_equal(row["attrs_id"], it.attr_ids)
        np.testing.assert_array_equal(row["attrs_conf"], it.attr_conf)
        np.testing.assert_array_equal(row["boxes"], it.boxes)
        np.testing.assert_array_equal(row["features"], it.features)


def test_our_writer_is_byte_identical_to_upstreams(tmp_path: Path) -> None:
    upstream_style_writer(tmp_path / "up.tsv", ITEMS)
    write_tsv(ITEMS, tmp_path / "ours.tsv")
    assert (tmp_path / "ours.tsv").read_bytes() == (tmp_path / "up.tsv").read_bytes()
    assert (tmp_path / "ours.tsv").read_bytes().count(b"\r\n") == len(ITEMS)


def test_export_import_round_trip_is_lossless(tmp_path: Path) -> None:
    original = make_store(tmp_path / "a", ITEMS)
    export_tsv(original, tmp_path / "a.tsv")
    summary = import_tsv(tmp_path / "a.tsv", tmp_path / "b", feature_dim=DIM)
    assert (summary.added, summary.duplicates, summary.problems) == (4, 0, [])
    assert store_files(tmp_path / "b") == store_files(original)  # bitwise, index included
    export_tsv(tmp_path / "b", tmp_path / "b.tsv")
    assert (tmp_path / "b.tsv").read_bytes() == (tmp_path / "a.tsv").read_bytes()
    back = list(read_tsv(tmp_path / "a.tsv", DIM))
    for got, it in zip(back, ITEMS, strict=True):
        assert_same(got, it)


def test_upstream_file_with_lf_endings_and_blank_lines_reads(tmp_path: Path) -> None:
    body = b"\n".join(encode_row(it).rstrip(b"\r\n") for it in ITEMS[:2]) + b"\n\n"
    (tmp_path / "lf.tsv").write_bytes(body)
    got = list(read_tsv(tmp_path / "lf.tsv", DIM))
    assert [g.image_id for g in got] == ["01235", "08291"]


def test_rows_with_upstreams_extra_box_keep_num_boxes(tmp_path: Path) -> None:
    item = make_item("00007", 3)
    extra_feature = np.ones((1, DIM), np.float32)
    fields = encode_row(item).rstrip(b"\r\n").split(b"\t")
    fields[9] = base64.b64encode(np.concatenate([item.features, extra_feature]))
    lines = [encode_row(ITEMS[0]), b"\t".join(fields) + b"\r\n"]
    (tmp_path / "plus1.tsv").write_bytes(b"".join(lines))
    summary = import_tsv(tmp_path / "plus1.tsv", tmp_path / "s", feature_dim=DIM)
    assert summary.added == 2
    assert summary.problems == [
        f"{tmp_path / 'plus1.tsv'}:2: id '00007' has a buffer with num_boxes+1 entries; "
        "kept the first num_boxes"
    ]
    assert_same(FeatureStore(tmp_path / "s")["00007"], item)


def test_duplicate_rows_from_upstreams_resume_bug_keep_the_last(tmp_path: Path) -> None:
    changed = make_item("01235", 2)  # same id, other content
    write_tsv([ITEMS[0], ITEMS[1], changed, ITEMS[0], changed], tmp_path / "dup.tsv")
    summary = import_tsv(tmp_path / "dup.tsv", tmp_path / "s", feature_dim=DIM)
    assert (summary.added, summary.duplicates) == (2, 3)
    text = str(summary)
    assert "dup.tsv:1: id '01235' is written again at line 5; kept the last" in text
    assert "dup.tsv:4: id '01235' is written again at line 5; kept the last" in text
    # upstream's readers build a dict by image id: the last row wins
    assert_same(FeatureStore(tmp_path / "s")["01235"], changed)
    assert FeatureStore(tmp_path / "s").ids() == ["08291", "01235"]


def test_a_killed_and_resumed_upstream_extraction_imports(tmp_path: Path) -> None:
    # killed while writing 00042's row; the resumed run appended from a fresh line and wrote
    # 00042 again (and another cut-off row, cut inside its features, was followed by a rewrite)
    cut = encode_row(ITEMS[2])[:100] + b"\r\n"
    cut_late = encode_row(ITEMS[0])[:-40] + b"\r\n"
    lines = [encode_row(ITEMS[1]), cut, cut_late, encode_row(ITEMS[2]), encode_row(ITEMS[0])]
    (tmp_path / "resumed.tsv").write_bytes(b"".join(lines))
    summary = import_tsv(tmp_path / "resumed.tsv", tmp_path / "s", feature_dim=DIM)
    assert (summary.added, summary.duplicates) == (3, 0)
    fields = len(cut.split(b"\t"))
    assert summary.problems == [
        f"{tmp_path / 'resumed.tsv'}:2: not a whole row (expected 10 tab-separated fields "
        f"({', '.join(TSV_FIELDS)}), got {fields}); skipped, image '00042' has a whole row at "
        "line 4",
        f"{tmp_path / 'resumed.tsv'}:3: not a whole row (features is not num_boxes 3 x "
        f"{4 * DIM} bytes of base64); skipped, image '01235' has a whole row at line 5",
    ]
    store = FeatureStore(tmp_path / "s")
    assert store.ids() == ["08291", "00042", "01235"]
    for item in ITEMS[:3]:
        assert_same(store[item.image_id], item)


def test_a_cut_off_row_with_no_rewrite_still_stops_the_import(tmp_path: Path) -> None:
    lines = [encode_row(ITEMS[0]), encode_row(ITEMS[2])[:-40] + b"\r\n", encode_row(ITEMS[1])]
    (tmp_path / "cut.tsv").write_bytes(b"".join(lines))
    with pytest.raises(HmDataError, match=r"cut\.tsv:2: image .00042.: features is not base64"):
        import_tsv(tmp_path / "cut.tsv", tmp_path / "s", feature_dim=DIM)


def test_import_resumes_after_a_partial_run(tmp_path: Path) -> None:
    write_tsv(ITEMS[:2], tmp_path / "part.tsv")
    write_tsv(ITEMS, tmp_path / "full.tsv")
    import_tsv(tmp_path / "part.tsv", tmp_path / "s", feature_dim=DIM)
    summary = import_tsv(tmp_path / "full.tsv", tmp_path / "s", feature_dim=DIM)
    assert (summary.added, summary.already_in_store) == (2, 2)
    store = FeatureStore(tmp_path / "s")
    assert store.ids() == [it.image_id for it in ITEMS]


def test_integer_ids_map_to_dataset_stems(tmp_path: Path) -> None:
    lines = [encode_row(it).replace(it.image_id.encode(), str(int(it.image_id)).encode(), 1)
             for it in ITEMS]  # fmt: skip
    (tmp_path / "int.tsv").write_bytes(b"".join(lines))
    ids = DatasetIds(["01235", "08291", "00042"])
    summary = import_tsv(tmp_path / "int.tsv", tmp_path / "s", DIM, dataset_ids=ids)
    assert (summary.added, summary.unknown_ids) == (3, 1)
    assert "int.tsv:4: id '10000' is not in the dataset" in str(summary)
    assert FeatureStore(tmp_path / "s").ids() == ["01235", "08291", "00042"]


def _bad_line(tmp_path: Path, field: int, value: bytes, drop: bool = False) -> Path:
    fields = encode_row(make_item("00009", 2)).rstrip(b"\r\n").split(b"\t")
    if drop:
        del fields[field]
    else:
        fields[field] = value
    path = tmp_path / "bad.tsv"
    path.write_bytes(encode_row(ITEMS[0]) + encode_row(ITEMS[2]) + b"\t".join(fields) + b"\r\n")
    return path


@pytest.mark.parametrize(
    ("field", "value", "drop", "message"),
    [
        (9, b"", True, r"expected 10 tab-separated fields \(img_id, .*features\), got 9"),
        (7, b"two", False, r"num_boxes = b'two'; expected an integer"),
        (1, b"", False, r"img_h = b''; expected an integer"),
        (8, b"AAA*", False, r"image '00009': boxes is not base64"),
        (
            8,
            base64.b64encode(b"\0" * 20),
            False,
            r"image '00009': boxes holds 20 bytes; expected 32 = num_boxes 2 x 16",
        ),
        (
            9,
            base64.b64encode(np.zeros((2, 8), np.float32)),
            False,
            r"features holds 64 bytes; expected 128 .* is feature_dim right\?",
        ),
        (
            4,
            base64.b64encode(np.array([np.nan, 1], np.float32)),
            False,
            r"image '00009': object_conf holds NaN",
        ),
        (0, b"a/b", False, r"without tabs, newlines, quotes or slashes"),
    ],
)
def test_malformed_lines_name_file_and_line(
    tmp_path: Path, field: int, value: bytes, drop: bool, message: str
) -> None:
    path = _bad_line(tmp_path, field, value, drop)
    with pytest.raises(HmDataError, match=rf"bad\.tsv:3: .*{message}"):
        list(read_tsv(path, DIM))
    with pytest.raises(HmDataError, match=rf"bad\.tsv:3: .*{message}"):
        import_tsv(path, tmp_path / "s", DIM)
    assert FeatureStore(tmp_path / "s").ids() == ["01235", "00042"]  # rows before it are kept


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HmDataError, match=r"nope\.tsv: feature TSV not found"):
        list(read_tsv(tmp_path / "nope.tsv"))


def test_import_streams_in_bounded_memory(tmp_path: Path) -> None:
    n, dim, rows = 50, 2048, 40  # ~22 MB of TSV, ~550 kB per line
    item = make_item("00001", n, dim)
    with open(tmp_path / "big.tsv", "wb") as handle:
        for i in range(rows):
            handle.write(encode_row(RegionFeatures(**{**item.__dict__, "image_id": f"{i:05d}"})))
    tracemalloc.start()
    try:
        import_tsv(tmp_path / "big.tsv", tmp_path / "s", feature_dim=dim)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * 550_000, f"peak {peak / 1e6:.1f} MB for a {rows}-line file"
    assert len(FeatureStore(tmp_path / "s")) == rows


def test_cli_round_trip_and_exit_codes(tmp_path: Path) -> None:
    write_tsv(ITEMS, tmp_path / "a.tsv")
    run = [sys.executable, "-m", "hm_shared.feature_io"]
    ok = subprocess.run([*run, "import-tsv", str(tmp_path / "a.tsv"), str(tmp_path / "s"),
                         "--feature-dim", str(DIM)], capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "4 images added" in ok.stdout
    out = subprocess.run([*run, "export-tsv", str(tmp_path / "s"), str(tmp_path / "b.tsv")],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "b.tsv").read_bytes() == (tmp_path / "a.tsv").read_bytes()
    bad = _bad_line(tmp_path, 8, b"AAA*")
    fail = subprocess.run([*run, "import-tsv", str(bad), str(tmp_path / "t"),
                           "--feature-dim", str(DIM)], capture_output=True, text=True)  # fmt: skip
    assert fail.returncode == 3
    assert f"error: {bad}:3: image '00009': boxes is not base64" in fail.stderr
