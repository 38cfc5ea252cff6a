"""The intake stage of `orchestrator predict`: new memes → a prepared split the stages read.

Input `input` (outside the data dir, hashed by content like the dataset): a folder of images, or
the folder of a jsonl (`params.jsonl` names the file) whose objects have `img` (a path relative
to the jsonl's folder) and optional `text` and `id`. A meme's id is its file stem, as in the
released dataset; a jsonl `id` must name the same image (an integer id matches a zero-padded
stem). Output (`work/predict/<tag>/memes/`):

    predict.jsonl   the memes as prepared rows (label null), in input order
    images.json     {"img/<id>.<ext>": sha256}, as the prepare stage writes it
    img/            a copy of each image, so that every stage reads the data dir only
    intake.json     texts read by OCR (engine and version), files skipped and why

What is skipped and what is an error: in a folder, a file whose extension is not an image
format we read (png, jpg/jpeg, webp) is skipped and listed (a folder of memes often holds other
files); everything the user named or that would give a wrong score is an error naming the file:
an image that does not decode, a jsonl line that is not a meme, two memes with one id, an empty
input, and a meme without text when `params.ocr` is "none".
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from hm_shared.dataset import IMG_DIR, MAX_TEXT_CHARS, PREDICT_SPLIT, Meme, write_prepared
from hm_shared.errors import HmDataError, SpecError
from hm_shared.io import atomic_write_json, sha256_file
from hm_shared.ocr import ENGINES, read_texts, tesseract_version
from hm_shared.spec import StageSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
INTAKE_FILE = "intake.json"
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SHOWN = 5


@dataclass(frozen=True)
class Candidate:
    """A meme as the input names it, before OCR: `text` None means "not given"."""

    id: str
    image: Path
    text: str | None
    where: str  # "file.jsonl:3" or the image path, for error messages


def _check_id(meme_id: str, where: str) -> str:
    if not _SAFE_ID.fullmatch(meme_id):
        raise HmDataError(
            f"id {meme_id!r} is not usable as a file name; expected letters, digits, '_', '.', "
            "'-' (ids come from the image file names unless the jsonl gives one)",
            where,
        )
    return meme_id


def _check_image(path: Path, where: str) -> None:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise HmDataError(
            f"{path.name}: unsupported image format {path.suffix or '(no extension)'}; "
            f"expected one of {', '.join(IMAGE_SUFFIXES)}",
            where,
        )
    if not path.is_file():
        raise HmDataError(f"image {path} not found", where)
    try:
        with Image.open(path) as handle:
            handle.load()  # decode it all: a truncated file fails here, not in a model stage
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise HmDataError(
            f"not a readable image ({exc}); remove it or replace it with a png, jpg or webp",
            path,
        ) from exc


def folder_candidates(folder: Path, skipped: list[dict[str, str]]) -> Iterator[Candidate]:
    """The images of `folder` (not its subfolders), sorted by name; other files are skipped."""
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append({"file": path.name, "reason": f"not an image format ({path.suffix})"})
            continue
        yield Candidate(_check_id(path.stem, str(path)), path, None, str(path))


def _jsonl_id(obj: dict[str, Any], stem: str, where: str) -> str:
    raw = obj.get("id")
    if raw is None:
        return stem
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise HmDataError(f"id must be an integer or a string, got {raw!r}", where)
    if str(raw) == stem or (stem.isdigit() and str(raw).isdigit() and int(raw) == int(stem)):
        return stem  # an integer id names the zero-padded stem, as in the released dataset
    return str(raw)


def jsonl_candidates(path: Path) -> Iterator[Candidate]:
    """The memes of a jsonl: `img` relative to its folder, optional `text` and `id`."""
    try:
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise HmDataError(f"cannot read it as UTF-8 text ({exc})", path) from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HmDataError(
                f"malformed JSON ({exc.msg}); expected one object a line", where
            ) from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("img"), str):
            raise HmDataError('expected an object with "img" (and optional "text", "id")', where)
        text = obj.get("text")
        if text is not None and not isinstance(text, str):
            raise HmDataError(f"text must be a string, got {type(text).__name__}", where)
        image = path.parent / obj["img"]
        meme_id = _check_id(_jsonl_id(obj, Path(obj["img"]).stem, where), where)
        yield Candidate(meme_id, image, text if text and text.strip() else None, where)


def _unique(candidates: list[Candidate]) -> None:
    first: dict[str, Candidate] = {}
    for meme in candidates:
        if meme.id in first:
            raise HmDataError(
                f"duplicate id {meme.id}: also {first[meme.id].where}; expected one meme an id "
                "(rename one of the images, or give distinct ids in the jsonl)",
                meme.where,
            )
        first[meme.id] = meme


def _texts(candidates: list[Candidate], ocr: str) -> tuple[list[str], dict[str, Any]]:
    """Each meme's text: as given, else read by OCR; and what intake.json says of it."""
    missing = [c for c in candidates if c.text is None]
    if missing and ocr == "none":
        shown = ", ".join(f"{c.id} ({c.where})" for c in missing[:_SHOWN])
        raise HmDataError(
            f"{len(missing)} meme(s) have no text and --ocr is none: {shown}"
            + (" …" if len(missing) > _SHOWN else "")
            + "; give their text in a jsonl or use --ocr tesseract"
        )
    info: dict[str, Any] = {"engine": ocr}
    if missing:
        info["version"] = tesseract_version()
    read = dict(zip((m.id for m in missing), read_texts([m.image for m in missing]), strict=True))
    info["read"] = read
    texts = []
    for meme in candidates:
        text = meme.text if meme.text is not None else read[meme.id]
        if len(text) > MAX_TEXT_CHARS:
            raise HmDataError(
                f"text of {len(text)} characters; at most {MAX_TEXT_CHARS}", meme.where
            )
        texts.append(text)
    return texts, info


def intake(source: Path, out_dir: Path, jsonl: str | None, ocr: str) -> list[Meme]:
    """Validate the memes of `source` (a folder, or the folder of `jsonl`) and write them, their
    images and intake.json into `out_dir`; returns the memes written."""
    if ocr not in ENGINES:
        raise SpecError(f"ocr {ocr!r}; expected one of {', '.join(ENGINES)}")
    skipped: list[dict[str, str]] = []
    if not source.is_dir():
        raise HmDataError("not found; expected a folder of images or a jsonl file", source)
    if jsonl is None:
        candidates = list(folder_candidates(source, skipped))
    else:
        candidates = list(jsonl_candidates(source / jsonl))
    if not candidates:
        what = "no memes in it" if jsonl else f"no images ({', '.join(IMAGE_SUFFIXES)}) in it"
        raise HmDataError(f"{what}; nothing to predict", source / (jsonl or ""))
    _unique(candidates)
    for meme in candidates:
        _check_image(meme.image, meme.where)
    texts, ocr_info = _texts(candidates, ocr)
    images = out_dir / IMG_DIR
    images.mkdir(parents=True, exist_ok=True)
    memes, hashes = [], {}
    for meme, text in zip(candidates, texts, strict=True):
        img = f"{IMG_DIR}/{meme.id}{meme.image.suffix.lower()}"
        shutil.copyfile(meme.image, out_dir / img)
        hashes[img] = sha256_file(out_dir / img)
        memes.append(Meme(meme.id, img, text, None))
    write_prepared(out_dir / f"{PREDICT_SPLIT}.jsonl", memes)
    atomic_write_json(out_dir / "images.json", hashes)
    atomic_write_json(
        out_dir / INTAKE_FILE, {"memes": len(memes), "ocr": ocr_info, "skipped": skipped}
    )
    return memes


def intake_stage(spec: StageSpec) -> None:
    intake(spec.path("input"), spec.output_dir, spec.params.get("jsonl"), spec.param("ocr"))
