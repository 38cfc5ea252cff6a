"""The intake stage of `orchestrator predict`: what a folder or a jsonl of new memes becomes,
and which bad inputs are errors (naming the file) or skipped and listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from hm_shared.dataset import read_prepared
from hm_shared.errors import HmDataError
from hm_shared.intake import INTAKE_FILE, intake
from hm_shared.io import sha256_file


def _image(
    path: Path, colour: tuple[int, int, int] = (200, 30, 30), fmt: str | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path, format=fmt)
    return path


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_jsonl_becomes_a_prepared_split_with_copied_images(tmp_path: Path) -> None:
    src = tmp_path / "in"
    _image(src / "pics/01235.png")
    _image(src / "pics/abc.jpg", (0, 90, 0))
    _image(src / "pics/z9.webp", (0, 0, 90), "WEBP")
    rows = [
        {"id": 1235, "img": "pics/01235.png", "text": "an int id names the zero-padded stem"},
        {"img": "pics/abc.jpg", "text": "no id: the stem"},
        {"id": "z9", "img": "pics/z9.webp", "text": "a string id"},
    ]
    _jsonl(src / "memes.jsonl", rows)
    out = tmp_path / "out"
    memes = intake(src, out, "memes.jsonl", "none")
    assert [(m.id, m.img, m.label) for m in memes] == [
        ("01235", "img/01235.png", None),
        ("abc", "img/abc.jpg", None),
        ("z9", "img/z9.webp", None),
    ]
    assert read_prepared(out / "predict.jsonl") == memes
    hashes = json.loads((out / "images.json").read_text())
    assert hashes == {m.img: sha256_file(out / m.img) for m in memes}
    assert sha256_file(out / "img/abc.jpg") == sha256_file(src / "pics/abc.jpg")
    assert json.loads((out / INTAKE_FILE).read_text())["ocr"] == {"engine": "none", "read": {}}


def test_a_folder_is_read_in_name_order_and_other_files_are_skipped_and_listed(
    tmp_path: Path,
) -> None:
    src = tmp_path / "in"
    for name in ("b.png", "a.PNG", "c.jpeg"):
        _image(src / name)
    (src / "notes.txt").write_text("not a meme")
    (src / "clip.gif").write_bytes(b"GIF89a")
    (src / ".DS_Store").write_bytes(b"\0")
    (src / "sub").mkdir()
    _image(src / "sub" / "d.png")  # subfolders are not read
    out = tmp_path / "out"
    with pytest.raises(HmDataError, match=r"3 meme\(s\) have no text and --ocr is none: a "):
        intake(src, out, None, "none")
    # with texts given through a jsonl over the same folder, the same memes go through
    texts = {"a.PNG": "first", "b.png": "second", "c.jpeg": "third"}
    _jsonl(src / "t.jsonl", [{"img": name, "text": text} for name, text in texts.items()])
    memes = intake(src, out, "t.jsonl", "none")
    assert [(m.id, m.text) for m in memes] == [("a", "first"), ("b", "second"), ("c", "third")]
    assert memes[0].img == "img/a.png"  # the suffix lower-cased


def test_skipped_files_are_written_to_intake_json(tmp_path: Path, monkeypatch) -> None:
    import hm_shared.intake as module

    src = tmp_path / "in"
    _image(src / "m1.png")
    (src / "notes.txt").write_text("x")
    monkeypatch.setattr(module, "read_texts", lambda paths: ["read from the picture"] * len(paths))
    monkeypatch.setattr(module, "tesseract_version", lambda: "5.3.0")
    memes = intake(src, tmp_path / "out", None, "tesseract")
    info = json.loads((tmp_path / "out" / INTAKE_FILE).read_text())
    assert [m.text for m in memes] == ["read from the picture"]
    assert info["skipped"] == [{"file": "notes.txt", "reason": "not an image format (.txt)"}]
    assert info["ocr"] == {
        "engine": "tesseract",
        "version": "5.3.0",
        "read": {"m1": "read from the picture"},
    }


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda src: None, r"no images \(.png, .jpg, .jpeg, .webp\) in it; nothing to predict"),
        (
            lambda src: (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated"),
            r"bad.png: not a readable image",
        ),
        (
            lambda src: (_image(src / "x.png"), _image(src / "x.jpg")),
            r"duplicate id x: also .*x.jpg",
        ),
    ],
    ids=["empty folder", "unreadable image", "duplicate ids"],
)
def test_bad_folders_are_errors_naming_the_file(tmp_path: Path, setup, message: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    setup(src)
    with pytest.raises(HmDataError, match=message):
        intake(src, tmp_path / "out", None, "none")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"img": "a.png", "text": "t"}', "{not json"], r"memes.jsonl:2: malformed JSON"),
        (['{"text": "t"}'], r"memes.jsonl:1: expected an object with \"img\""),
        (['{"img": "a.gif", "text": "t"}'], r"memes.jsonl:1: a.gif: unsupported image format"),
        (['{"img": "missing.png", "text": "t"}'], r"memes.jsonl:1: image .*missing.png not found"),
        (['{"img": "a.png", "text": 3}'], r"memes.jsonl:1: text must be a string"),
        (
            ['{"img": "a.png", "id": "../x", "text": "t"}'],
            r"memes.jsonl:1: id '../x' is not usable",
        ),
        (
            ['{"img": "a.png", "text": "t"}', '{"img": "a.png", "text": "u"}'],
            r"memes.jsonl:2: duplicate id a",
        ),
        (["", "  "], r"no memes in it"),
        (
            ['{"img": "a.png", "text": " "}'],
            r"1 meme\(s\) have no text and --ocr is none: a \(.*memes.jsonl:1\)",
        ),
    ],
    ids=[
        "bad json",
        "no img",
        "gif",
        "missing image",
        "text type",
        "unsafe id",
        "duplicate",
        "empty",
        "blank text",
    ],
)
def test_bad_jsonl_lines_are_errors_naming_file_and_line(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    src = tmp_path / "in"
    _image(src / "a.png")
    (src / "a.gif").write_bytes(b"GIF89a")
    (src / "memes.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with pytest.raises(HmDataError, match=message):
        intake(src, out, "memes.jsonl", "none")
    assert not (out / "predict.jsonl").exists()  # nothing half-written
