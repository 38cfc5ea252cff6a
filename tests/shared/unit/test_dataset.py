"""The released-dataset reader and the prepared-jsonl contract: every bad input names file:line."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from hm_shared.dataset import (
    SPLITS,
    Meme,
    load_dataset,
    read_prepared,
    read_prepared_split,
    read_split,
    write_prepared,
)
from hm_shared.errors import HmDataError


def _train_line_error(make_hm, line2, *, check_images=True, **kwargs) -> str:
    """Dataset whose train.jsonl line 2 is `line2`; the message of reading that split."""
    rows = make_hm.default_rows()["train"]
    rows[1] = line2
    root = make_hm({"train": rows}, **kwargs)
    with pytest.raises(HmDataError) as info:
        read_split(root / "train.jsonl", root, check_images=check_images, require_label=True)
    message = str(info.value)
    assert message.startswith(f"{root / 'train.jsonl'}:2: "), message
    assert info.value.line == 2
    return message


def test_meme_is_frozen_and_serialises_to_the_prepared_row() -> None:
    meme = Meme("08291", "img/08291.png", "look", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        meme.label = 1  # type: ignore[misc]
    assert meme.as_row() == {"id": "08291", "img": "img/08291.png", "text": "look", "label": None}


def test_load_dataset_reads_every_split(make_hm) -> None:
    data = load_dataset(make_hm())
    assert tuple(data) == SPLITS
    assert [m.id for m in data["train"]] == [f"{i:05d}" for i in range(1, 9)]
    assert data["train"][0] == Meme("00001", "img/00001.png", "meme number 00001", 1)
    assert all(m.label is None for m in data["test_seen"] + data["test_unseen"])
    assert {m.label for m in data["dev_seen"]} == {0, 1}


def test_integer_ids_lose_the_leading_zero_but_the_id_is_the_image_stem(make_hm) -> None:
    rows = [
        {"id": 8291, "img": "img/08291.png", "label": 1, "text": "a"},
        {"id": 10423, "img": "img/10423.png", "label": 0, "text": "b"},
        {"id": "00042", "img": "img/00042.png", "label": 0, "text": "c"},
    ]
    root = make_hm({"train": rows})
    memes = read_split(root / "train.jsonl", root)
    assert [m.id for m in memes] == ["08291", "10423", "00042"]
    assert all(isinstance(m.id, str) for m in memes)


def test_drivendata_escaped_slash_and_extra_keys_are_accepted(make_hm) -> None:
    line = '{"id":8291,"img":"img\\/08291.png","label":0,"text":"x","extra":1}'
    root = make_hm({"train": [line]}, extra_images={"08291"})
    assert read_split(root / "train.jsonl", root) == [Meme("08291", "img/08291.png", "x", 0)]


def test_test_labels_may_be_absent_or_null_or_given(make_hm) -> None:
    rows = [
        make_hm.row("00031", None),
        make_hm.row("00032", 0) | {"label": None},
        make_hm.row("00033", 1),
    ]
    root = make_hm({"test_seen": rows})
    assert [m.label for m in load_dataset(root)["test_seen"]] == [None, None, 1]


def test_blank_lines_are_skipped_and_line_numbers_stay_true(make_hm) -> None:
    root = make_hm({"train": [make_hm.row("00001"), "", "   ", "{not json"]})
    with pytest.raises(HmDataError, match=r"train\.jsonl:4: malformed JSON"):
        read_split(root / "train.jsonl", root)


@pytest.mark.parametrize(
    ("line2", "expected"),
    [
        ('{"id": "00002", "img": "img/00002.png", "text": "x", "label": 0', "malformed JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"id": "00002", "img": "img/00002.png", "label": 0}', "missing field(s) text"),
        ('{"text": "x", "label": 0}', "missing field(s) id, img"),
        (
            '{"id": 2.0, "img": "img/00002.png", "text": "x", "label": 0}',
            "field id must be an integer or a string, got float",
        ),
        (
            '{"id": true, "img": "img/00002.png", "text": "x", "label": 0}',
            "field id must be an integer or a string, got bool",
        ),
        ('{"id": "00002", "img": 2, "text": "x", "label": 0}', "field img must be a string"),
        (
            '{"id": "00002", "img": "00002.png", "text": "x", "label": 0}',
            "is not a file name under img/",
        ),
        (
            '{"id": "00002", "img": "/abs/img/00002.png", "text": "x", "label": 0}',
            "is not a file name under img/",
        ),
        (
            '{"id": "00002", "img": "img/00002.png", "text": null, "label": 0}',
            "field text must be a string, got NoneType",
        ),
        (
            '{"id": "00002", "img": "img/00002.png", "text": "x", "label": 2}',
            "label 2 is not 0 or 1",
        ),
        (
            '{"id": "00002", "img": "img/00002.png", "text": "x", "label": "1"}',
            "field label must be the integer 0 or 1, got '1'",
        ),
        (
            '{"id": "00002", "img": "img/00002.png", "text": "x", "label": true}',
            "field label must be the integer 0 or 1, got True",
        ),
        (
            '{"id": "00002", "img": "img/00002.png", "text": "x", "label": 0.0}',
            "field label must be the integer 0 or 1",
        ),
        ('{"id": "00002", "img": "img/00002.png", "text": "x"}', "missing label"),
        (
            '{"id": 3, "img": "img/00002.png", "text": "x", "label": 0}',
            "id 3 does not match the image name img/00002; expected the image stem '00002' or the "
            "integer 2",
        ),
        ('{"id": "2x", "img": "img/00002.png", "text": "x", "label": 0}', "id '2x' does not match"),
        (
            '{"id": "00001", "img": "img/00001.png", "text": "x", "label": 0}',
            "duplicate id 00001 (first on line 1)",
        ),
    ],
)
def test_bad_rows_name_file_and_line(make_hm, line2: str, expected: str) -> None:
    assert expected in _train_line_error(make_hm, line2)


def test_a_text_beyond_the_limit_is_refused_naming_the_meme(make_hm) -> None:
    from hm_shared.dataset import MAX_TEXT_CHARS

    at_limit = json.dumps(
        {"id": "00002", "img": "img/00002.png", "text": "a" * MAX_TEXT_CHARS, "label": 0}
    )
    rows = make_hm.default_rows()["train"]
    rows[1] = at_limit
    root = make_hm({"train": rows})
    memes = read_split(root / "train.jsonl", root, check_images=False, require_label=True)
    assert len(memes[1].text) == MAX_TEXT_CHARS  # the limit itself is accepted
    over = at_limit.replace('"a', '"ab', 1)
    message = _train_line_error(make_hm, over, check_images=False)
    assert "train.jsonl:2" in message
    assert f"meme 00002: text of {MAX_TEXT_CHARS + 1:,} characters; expected at most" in message


def test_missing_image_names_file_line_and_image(make_hm) -> None:
    message = _train_line_error(make_hm, make_hm.row("00099", 0), skip_images={"00099"})
    assert re.search(r"image .*img/00099\.png not found", message)


def test_missing_image_is_fine_without_image_checks(make_hm) -> None:
    root = make_hm({"train": [make_hm.row("00099")]}, skip_images={"00099"})
    assert [m.id for m in read_split(root / "train.jsonl", root, check_images=False)] == ["00099"]


@pytest.mark.parametrize(
    "damage",
    [lambda b: b"not a png at all", lambda b: b[:40], lambda b: b[:-20] + b"\x00" * 20],
    ids=["garbage", "truncated", "bad-crc"],
)
def test_unreadable_image_names_file_and_line(make_hm, damage) -> None:
    root = make_hm()
    image = root / "img/00002.png"
    image.write_bytes(damage(image.read_bytes()))
    with pytest.raises(HmDataError) as info:
        read_split(root / "train.jsonl", root)
    message = str(info.value)
    assert message.startswith(f"{root / 'train.jsonl'}:2: image {image} is not a readable image")


def test_invalid_utf8_names_file_and_line(make_hm) -> None:
    root = make_hm()
    path = root / "train.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"meme", b"m\xffme")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(HmDataError, match=r"train\.jsonl:3: not valid UTF-8"):
        read_split(path, root)


def test_utf8_bom_and_non_ascii_text_are_read(make_hm) -> None:
    root = make_hm()
    path = root / "train.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps(make_hm.row("00001", 0, "caf\u00e9 \u2603"), ensure_ascii=False).encode()
    )
    assert read_split(path, root)[0].text == "caf\u00e9 \u2603"


def test_empty_split_is_an_error(make_hm) -> None:
    root = make_hm({"dev_seen": []})
    with pytest.raises(HmDataError, match=r"dev_seen\.jsonl: no memes"):
        load_dataset(root)


def test_missing_split_file_is_named(make_hm) -> None:
    root = make_hm(omit={"dev_unseen", "test_unseen"})
    with pytest.raises(HmDataError) as info:
        load_dataset(root)
    assert str(info.value).startswith(
        f"{root}: missing split file(s) dev_unseen.jsonl, test_unseen.jsonl"
    )


def test_missing_img_dir_is_named(make_hm) -> None:
    root = make_hm()
    for image in (root / "img").iterdir():
        image.unlink()
    (root / "img").rmdir()
    with pytest.raises(HmDataError, match=re.escape(f"{root}: no img/ directory")):
        load_dataset(root)


def test_missing_dataset_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(HmDataError, match=re.escape(f"{tmp_path / 'nope'}: dataset directory")):
        load_dataset(tmp_path / "nope")


def test_read_split_of_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HmDataError, match=re.escape(f"{tmp_path / 'x.jsonl'}: file not found")):
        read_split(tmp_path / "x.jsonl", tmp_path)


def test_labels_required_only_in_labelled_splits(make_hm) -> None:
    rows = make_hm.default_rows()["dev_unseen"]
    rows[3] = make_hm.row("00022", None)
    root = make_hm({"dev_unseen": rows})
    with pytest.raises(HmDataError, match=r"dev_unseen\.jsonl:4: missing label"):
        load_dataset(root)


def test_prepared_round_trip(tmp_path: Path) -> None:
    memes = [
        Meme("08291", "img/08291.png", "caf\u00e9", 1),
        Meme("00001", "img/00001.png", "", None),
    ]
    path = tmp_path / "prepared" / "dev_seen.jsonl"
    write_prepared(path, memes)
    assert read_prepared(path) == memes
    assert json.loads(path.read_text().splitlines()[1]) == {
        "id": "00001",
        "img": "img/00001.png",
        "text": "",
        "label": None,
    }
    assert [p.name for p in path.parent.iterdir()] == ["dev_seen.jsonl"]  # no temp file left


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": 1, "img": "img/00001.png", "text": "x", "label": 0}', "id must be a string"),
        ('{"id": "00001", "img": "img/00001.png", "text": "x"}', "missing field label"),
        (
            '{"id": "00002", "img": "img/00001.png", "text": "x", "label": 0}',
            "id '00002' does not match img",
        ),
        (
            '{"id": "00001", "img": "img/00001.png", "text": "x", "label": 5}',
            "label 5 is not 0 or 1",
        ),
        ('{"id": "00001", "img": "img/00001.png", "text": 3, "label": 0}', "text must be a string"),
        ('{"id": "00000", "img": "img/00000.png", "text": "x", "label": 0}', "duplicate id 00000"),
        ("nonsense", "malformed JSON"),
    ],
)
def test_bad_prepared_rows_name_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"id": "00000", "img": "img/00000.png", "text": "x", "label": 0}\n' + line)
    with pytest.raises(HmDataError) as info:
        read_prepared(path)
    assert str(info.value).startswith(f"{path}:2: ")
    assert expected in str(info.value)


def test_a_prepared_split_is_read_by_name_and_an_absent_one_names_what_is_there(
    tmp_path: Path,
) -> None:
    memes = [Meme("00001", "img/00001.png", "a", 1), Meme("00002", "img/00002.png", "b", None)]
    write_prepared(tmp_path / "dev_seen.jsonl", memes)
    assert read_prepared_split(tmp_path, "dev_seen") == memes
    with pytest.raises(
        HmDataError, match=r"nope\.jsonl: prepared split 'nope' not found; present: \['dev_seen'\]"
    ):
        read_prepared_split(tmp_path, "nope")
