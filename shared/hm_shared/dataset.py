"""The Hateful Memes dataset as released, and our prepared jsonl splits (architecture.md §3).

A dataset directory holds `img/` and five jsonl files, one JSON object a line:
`{"id": 8291 | "08291", "img": "img/08291.png", "text": "…", "label": 0 | 1}` (`label` absent
in the unlabelled test files). The meme id is ALWAYS the image file stem, as a string: the
DrivenData files carry integer ids that lost the leading zero, so a numeric id is only checked
against the stem (`8291 == int("08291")`), never used as is. Nothing here writes to the dataset.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from hm_shared.errors import HmDataError
from hm_shared.io import atomic_write_text

SPLITS = ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen")
LABELLED_SPLITS = ("train", "dev_seen", "dev_unseen")  # the test files may lack `label`
PREDICT_SPLIT = "predict"  # the new memes of `orchestrator predict` (hm_shared.intake)
IMG_DIR = "img"
# Longest meme text accepted, in characters. A caption is a sentence or two (the longest in the
# public splits is a few hundred characters); a text this long is a broken export, and one of
# 54 MB made every B stage 3–9× slower before this limit existed.
MAX_TEXT_CHARS = 10_000
_REQUIRED = ("id", "img", "text")


@dataclass(frozen=True)
class Meme:
    """One meme: `id` is the image stem ("08291"), `img` relative to the dataset dir.

    >>> Meme("08291", "img/08291.png", "look at this", 0).as_row()
    {'id': '08291', 'img': 'img/08291.png', 'text': 'look at this', 'label': 0}
    """

    id: str
    img: str
    text: str
    label: int | None

    def as_row(self) -> dict[str, Any]:
        """The prepared-jsonl object (architecture.md §3); `label` is null when unknown."""
        return {"id": self.id, "img": self.img, "text": self.text, "label": self.label}


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of each non-blank line; a decoding error names the line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise HmDataError("file not found; expected a jsonl file", path) from None
    except OSError as exc:
        raise HmDataError(f"cannot read: {exc.strerror}", path) from exc
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise HmDataError(
                f"not valid UTF-8 ({exc.reason}); expected UTF-8 text", path, number
            ) from exc
        if text.strip():
            yield number, text


def _object(path: Path, number: int, text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HmDataError(
            f"malformed JSON ({exc.msg} at column {exc.colno}); expected one JSON object a line",
            path,
            number,
        ) from exc
    if not isinstance(obj, dict):
        raise HmDataError(f"expected a JSON object, got {type(obj).__name__}", path, number)
    missing = [key for key in _REQUIRED if key not in obj]
    if missing:
        raise HmDataError(
            f"missing field(s) {', '.join(missing)}; expected keys id, img, text (and label)",
            path,
            number,
        )
    return obj


def _img_stem(img: Any, path: Path, number: int) -> str:
    if not isinstance(img, str):
        raise HmDataError(
            f"field img must be a string like 'img/08291.png', got {type(img).__name__}",
            path,
            number,
        )
    rel = PurePosixPath(img)
    if rel.is_absolute() or len(rel.parts) != 2 or rel.parts[0] != IMG_DIR or not rel.suffix:
        raise HmDataError(
            f"img {img!r} is not a file name under img/ like 'img/08291.png'", path, number
        )
    return rel.stem


def _meme_id(raw_id: Any, stem: str, path: Path, number: int) -> str:
    """The stem, once `raw_id` is known to name the same image (an int loses leading zeros)."""
    if isinstance(raw_id, bool) or not isinstance(raw_id, int | str):
        raise HmDataError(
            f"field id must be an integer or a string, got {type(raw_id).__name__}", path, number
        )
    if isinstance(raw_id, str) and raw_id == stem:
        return stem
    digits = str(raw_id)
    if stem.isdigit() and digits.isdigit() and int(digits) == int(stem):
        return stem
    raise HmDataError(
        f"id {raw_id!r} does not match the image name img/{stem}; expected the image stem "
        f"{stem!r}" + (f" or the integer {int(stem)}" if stem.isdigit() else ""),
        path,
        number,
    )


def _label(obj: Mapping[str, Any], path: Path, number: int, required: bool) -> int | None:
    label = obj.get("label")
    if label is None:
        if required:
            raise HmDataError("missing label; expected label 0 or 1 in this split", path, number)
        return None
    if isinstance(label, bool) or not isinstance(label, int):
        raise HmDataError(f"field label must be the integer 0 or 1, got {label!r}", path, number)
    if label not in (0, 1):
        raise HmDataError(
            f"label {label} is not 0 or 1 (0 = not hateful, 1 = hateful)", path, number
        )
    return label


def _check_image(image: Path, path: Path, number: int) -> None:
    if not image.is_file():
        raise HmDataError(
            f"image {image} not found; expected every meme's image in img/", path, number
        )
    try:
        with Image.open(image) as handle:
            handle.verify()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # PIL raises SyntaxError for some corrupt PNG chunks, ValueError for bad headers.
        raise HmDataError(f"image {image} is not a readable image ({exc})", path, number) from exc


def read_split(
    path: Path,
    hm_dir: Path,
    *,
    check_images: bool = True,
    require_label: bool = False,
) -> list[Meme]:
    """Memes of one released jsonl split, validated line by line.

    `hm_dir` is the dataset directory that `img` paths are relative to. With `check_images`,
    every image must exist and pass PIL's `verify`. Any problem is an `HmDataError` naming the
    file and line.
    """
    path, hm_dir = Path(path), Path(hm_dir)
    memes: list[Meme] = []
    first_line: dict[str, int] = {}
    for number, text in _lines(path):
        obj = _object(path, number, text)
        stem = _img_stem(obj["img"], path, number)
        meme_id = _meme_id(obj["id"], stem, path, number)
        if not isinstance(obj["text"], str):
            raise HmDataError(
                f"field text must be a string, got {type(obj['text']).__name__}", path, number
            )
        if len(obj["text"]) > MAX_TEXT_CHARS:
            raise HmDataError(
                f"meme {meme_id}: text of {len(obj['text']):,} characters; expected at most "
                f"{MAX_TEXT_CHARS:,} (a meme caption): check how this file was exported",
                path,
                number,
            )
        label = _label(obj, path, number, require_label)
        if meme_id in first_line:
            raise HmDataError(
                f"duplicate id {meme_id} (first on line {first_line[meme_id]}); expected each "
                "meme once per split",
                path,
                number,
            )
        first_line[meme_id] = number
        img = f"{IMG_DIR}/{PurePosixPath(obj['img']).name}"
        if check_images:
            _check_image(hm_dir / img, path, number)
        memes.append(Meme(meme_id, img, obj["text"], label))
    if not memes:
        raise HmDataError("no memes; expected one JSON object a line", path)
    return memes


def load_dataset(hm_dir: Path, *, check_images: bool = True) -> dict[str, list[Meme]]:
    """All five splits of the dataset in `hm_dir` (`img/` plus `<split>.jsonl`), validated.

    train, dev_seen and dev_unseen must be labelled; the test splits may lack labels.
    """
    hm_dir = Path(hm_dir)
    if not hm_dir.is_dir():
        raise HmDataError(
            "dataset directory not found; expected img/ and the five jsonl files "
            f"({', '.join(s + '.jsonl' for s in SPLITS)}) there, see data/README.md",
            hm_dir,
        )
    missing = [f"{s}.jsonl" for s in SPLITS if not (hm_dir / f"{s}.jsonl").is_file()]
    if missing:
        raise HmDataError(
            f"missing split file(s) {', '.join(missing)}; expected the phase-2 release "
            "(train, dev_seen, dev_unseen, test_seen, test_unseen), see data/README.md",
            hm_dir,
        )
    if not (hm_dir / IMG_DIR).is_dir():
        raise HmDataError("no img/ directory; expected the meme images in img/<id>.png", hm_dir)
    return {
        split: read_split(
            hm_dir / f"{split}.jsonl",
            hm_dir,
            check_images=check_images,
            require_label=split in LABELLED_SPLITS,
        )
        for split in SPLITS
    }


def read_prepared(path: Path) -> list[Meme]:
    """Memes of a prepared jsonl file (string ids, `label` 0, 1 or null), validated strictly."""
    path = Path(path)
    memes: list[Meme] = []
    first_line: dict[str, int] = {}
    for number, text in _lines(path):
        obj = _object(path, number, text)
        if "label" not in obj:
            raise HmDataError("missing field label; expected 0, 1 or null", path, number)
        meme_id = obj["id"]
        if not isinstance(meme_id, str):
            raise HmDataError(
                f"id must be a string, got {meme_id!r}; re-run the prepare stage", path, number
            )
        stem = _img_stem(obj["img"], path, number)
        if meme_id != stem:
            raise HmDataError(f"id {meme_id!r} does not match img {obj['img']!r}", path, number)
        if not isinstance(obj["text"], str):
            raise HmDataError(
                f"field text must be a string, got {type(obj['text']).__name__}", path, number
            )
        label = _label(obj, path, number, required=False)
        if meme_id in first_line:
            raise HmDataError(
                f"duplicate id {meme_id} (first on line {first_line[meme_id]})", path, number
            )
        first_line[meme_id] = number
        memes.append(Meme(meme_id, obj["img"], obj["text"], label))
    return memes


def read_prepared_split(prepared_dir: Path, split: str) -> list[Meme]:
    """The memes of `<prepared_dir>/<split>.jsonl`, as every stage reads a prepared split: an
    absent file is one HmDataError (exit 3) naming it and the splits that are there."""
    path = Path(prepared_dir) / f"{split}.jsonl"
    if not path.is_file():
        present = sorted(p.stem for p in Path(prepared_dir).glob("*.jsonl"))
        raise HmDataError(
            f"prepared split {split!r} not found; present: {present}. Run `orchestrator run` "
            "(its prepare stage writes the prepared splits)",
            path,
        )
    return read_prepared(path)


def write_prepared(path: Path, memes: Sequence[Meme]) -> None:
    """Write `memes` as prepared jsonl, atomically (architecture.md §3)."""
    lines = [json.dumps(m.as_row(), ensure_ascii=False) + "\n" for m in memes]
    atomic_write_text(Path(path), "".join(lines))


__all__ = [
    "LABELLED_SPLITS",
    "MAX_TEXT_CHARS",
    "PREDICT_SPLIT",
    "SPLITS",
    "Meme",
    "load_dataset",
    "read_prepared",
    "read_prepared_split",
    "read_split",
    "write_prepared",
]
