"""Meme text by OCR: the Tesseract engine through `pytesseract` (a maintained binding that runs
the `tesseract` program; Debian: `apt-get install tesseract-ocr`)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from hm_shared.errors import HmError

ENGINES = ("tesseract", "none")


class OcrUnavailableError(HmError):
    """The OCR engine asked for is not installed."""

    exit_code = 2


def _pytesseract():  # type: ignore[no-untyped-def]
    import pytesseract

    return pytesseract


def tesseract_version() -> str:
    """The engine's version ("5.3.0"); a clear error when the program is missing."""
    pytesseract = _pytesseract()
    try:
        return str(pytesseract.get_tesseract_version())
    except pytesseract.TesseractNotFoundError:
        raise OcrUnavailableError(
            "--ocr tesseract needs the tesseract program, which is not on PATH: install it "
            "(Debian/Ubuntu: apt-get install tesseract-ocr), or give every meme its text in a "
            "jsonl and pass --ocr none"
        ) from None


# Meme captions are white with a dark outline (Impact) or dark on a light band. Tesseract reads
# dark text on a plain light ground best, so each image is read as three binarisations: as it is
# (greyscale, Tesseract's own Otsu), bright pixels as ink, dark pixels as ink; the reading with
# the most characters read confidently wins. Measured with Tesseract 5.3.0 on captions drawn over
# cluttered coloured pictures (tests/shared/unit/test_ocr.py): 1.6 % character error rate, white
# outlined or dark on a band; the greyscale pass alone read white outlined captions at 21 %.
BRIGHT_INK = 200  # grey level at or above which a pixel is caption ink (white text)
DARK_INK = 60  # at or below: ink of dark text
MIN_CONFIDENCE = 60.0  # Tesseract's per-word confidence, 0-100


def _binarisations(grey: Image.Image) -> list[Image.Image]:
    return [
        grey,
        grey.point(lambda v: 0 if v >= BRIGHT_INK else 255),
        grey.point(lambda v: 0 if v <= DARK_INK else 255),
    ]


def _reading(image: Image.Image) -> tuple[float, str]:
    """(expected correct characters: Σ length × confidence, the words joined by spaces) of one
    Tesseract pass; words Tesseract itself doubts (confidence under MIN_CONFIDENCE: specks
    and edges of the picture read as letters) are left out."""
    pytesseract = _pytesseract()
    data = pytesseract.image_to_data(image, lang="eng", output_type=pytesseract.Output.DICT)
    words = [
        (word.strip(), float(conf))
        for word, conf in zip(data["text"], data["conf"], strict=True)
        if word.strip() and float(conf) >= MIN_CONFIDENCE
    ]
    return sum(c * len(w) for w, c in words) / 100, " ".join(w for w, _ in words)


def read_text(image: Path) -> str:
    """The caption Tesseract reads in `image` ("" when it finds none), words joined by spaces."""
    with Image.open(image) as handle:
        grey = handle.convert("L")
    return max((_reading(b) for b in _binarisations(grey)), key=lambda r: r[0])[1]


def read_texts(images: list[Path]) -> list[str]:
    """`read_text` of each image, one Tesseract process per core at a time (each limited to one
    thread: one image is too small to share between cores)."""
    if not images:
        return []
    os.environ["OMP_THREAD_LIMIT"] = "1"  # inherited by the tesseract processes
    with ThreadPoolExecutor(max_workers=min(len(images), os.cpu_count() or 1)) as pool:
        return list(pool.map(read_text, images))
