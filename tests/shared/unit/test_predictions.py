from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from hm_shared.errors import HmDataError
from hm_shared.predictions import (
    Predictions,
    align,
    join_by_id,
    read_predictions,
    write_predictions,
)


def test_round_trip_keeps_leading_zeros_and_exact_floats(tmp_path: Path) -> None:
    proba = [1 / 3, 0.1 + 0.2, 5e-324, 1.0, 0.0, np.nextafter(0.5, 1.0)]
    ids = ("00001", "08291", "10423", "00420", "99999", "012345")
    preds = Predictions(ids, proba, [0, 0, 0, 1, 0, 1], source="mem")
    path = tmp_path / "preds" / "dev_seen.csv"
    write_predictions(path, preds)
    back = read_predictions(path)
    assert back.ids.tolist() == list(ids)
    assert back.proba.tolist() == [float(p) for p in proba]  # bit-exact, not just close
    assert back.label.tolist() == [0, 0, 0, 1, 0, 1]
    assert back.source == str(path)
    assert path.read_text().splitlines()[0] == "id,proba,label"
    assert [p.name for p in path.parent.iterdir()] == ["dev_seen.csv"]  # no temp file left


def _bad(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "preds" / "U" / "dev_seen.csv"
    path.parent.mkdir(parents=True)
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("id,prob,label\n08291,0.5,1\n", 1, "expected header id,proba,label"),
        ("", 1, "expected header id,proba,label"),
        (
            "id,proba,label\n00001,0.1,0\n00002,0.2,0\n00003,0.3,0\n08291,1.7,1\n",
            5,
            "Expected proba in [0, 1], got 1.7 for id 08291",
        ),
        ("id,proba,label\n08291,-0.1,1\n", 2, "Expected proba in [0, 1], got -0.1"),
        ("id,proba,label\n08291,nan,1\n", 2, "Expected proba in [0, 1], got nan"),
        ("id,proba,label\n08291,0.5,2\n", 2, "expected label 0 or 1, got '2' for id 08291"),
        ("id,proba,label\n08291,0.5,1.0\n", 2, "expected label 0 or 1, got '1.0'"),
        ("id,proba,label\n08291,high,1\n", 2, "expected a number for proba, got 'high'"),
        ("id,proba,label\n08291,0.5\n", 2, "expected 3 fields id,proba,label, got 2"),
        ("id,proba,label\n,0.5,1\n", 2, "empty id"),
        (
            "id,proba,label\n08291,0.5,1\n10423,0.4,0\n08291,0.6,1\n",
            4,
            "duplicate id 08291 (first on line 2)",
        ),
    ],
    ids=[
        "header",
        "empty",
        "proba-1.7",
        "negative",
        "nan",
        "label-2",
        "label-float",
        "non-numeric",
        "short-row",
        "empty-id",
        "duplicate",
    ],
)
def test_bad_csv_names_file_and_line(tmp_path: Path, body: str, line: int, message: str) -> None:
    path = _bad(tmp_path, body)
    with pytest.raises(HmDataError) as info:
        read_predictions(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert message in str(info.value)
    assert info.value.line == line


def test_header_only_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = _bad(tmp_path, "id,proba,label\n")
    with pytest.raises(HmDataError, match="header but no rows") as info:
        read_predictions(path)
    assert str(path) in str(info.value)


def test_blank_lines_and_bom_are_tolerated(tmp_path: Path) -> None:
    path = _bad(tmp_path, "\ufeffid,proba,label\r\n08291,0.25,0\r\n\r\n")
    assert read_predictions(path).proba.tolist() == [0.25]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ids": [8291, 10423]}, "expected ids as strings"),
        ({"proba": [0.5, 1.5]}, "Expected proba in [0, 1], got 1.5 for id 10423"),
        ({"proba": [0.5, float("nan")]}, "Expected proba in [0, 1], got nan"),
        ({"label": [0, 2]}, "expected label 0 or 1, got 2 for id 10423"),
        ({"label": [0.0, 1.0]}, "expected integer labels"),
        ({"ids": ["08291", "08291"]}, "duplicate ids ['08291']"),
        ({"proba": [0.5]}, "expected as many ids, probas and labels, got 2, 1, 2"),
    ],
)
def test_constructor_validates(kwargs: dict, message: str) -> None:
    fields = {"ids": ["08291", "10423"], "proba": [0.5, 0.5], "label": [0, 1]} | kwargs
    with pytest.raises(HmDataError) as info:
        Predictions(**fields, source="preds/U/dev_seen.csv")
    assert str(info.value).startswith("preds/U/dev_seen.csv: ")
    assert message in str(info.value)


def test_arrays_are_read_only() -> None:
    preds = Predictions(("1",), [0.5], [1])
    with pytest.raises(ValueError, match="read-only"):
        preds.proba[0] = 0.9


def test_align_and_join_follow_ids_not_rows() -> None:
    a = Predictions(("03", "01", "02"), [0.3, 0.1, 0.2], [0, 0, 0], source="a.csv")
    b = Predictions(("01", "02", "03"), [0.91, 0.92, 0.93], [1, 1, 1], source="b.csv")
    c = Predictions(("02", "03", "01"), [0.52, 0.53, 0.51], [1, 1, 1], source="c.csv")
    assert align(a, b)[1].ids.tolist() == ["03", "01", "02"]
    assert_allclose(align(a, b)[1].proba, [0.93, 0.91, 0.92])
    ids, matrix = join_by_id([a, b, c])
    assert ids.tolist() == ["03", "01", "02"]
    assert_allclose(matrix, [[0.3, 0.93, 0.53], [0.1, 0.91, 0.51], [0.2, 0.92, 0.52]])


def test_mismatched_ids_name_both_files_and_some_ids() -> None:
    a = Predictions(("00001", "00002", "00003"), [0.1, 0.2, 0.3], [0, 0, 0], source="preds/U.csv")
    b = Predictions(("00001", "00002", "00007"), [0.1, 0.2, 0.3], [0, 0, 0], source="preds/O.csv")
    with pytest.raises(HmDataError) as info:
        join_by_id([a, b])
    text = str(info.value)
    assert "ids differ between preds/U.csv and preds/O.csv" in text
    assert "1 only in preds/U.csv (00003)" in text
    assert "1 only in preds/O.csv (00007)" in text


def test_different_lengths_are_a_mismatch() -> None:
    a = Predictions(("1", "2"), [0.1, 0.2], [0, 0], source="a.csv")
    b = Predictions(("1",), [0.1], [0], source="b.csv")
    with pytest.raises(HmDataError, match=r"1 only in a.csv \(2\)"):
        align(a, b)
