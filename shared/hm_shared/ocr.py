"""Meme text by OCR: the Tesseract engine through `pytesseract` (a maintained binding that runs
the `tesseract` program; Debian: `apt-get install tesseract-ocr`)."""

from __future__ import annotations

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


def read_text(image: Path) -> str:
    """The text Tesseract reads in `image`, its lines joined by single spaces.

    Memes are mostly white caption text on a photo; Tesseract reads dark-on-light text best, so
    its own binarisation (Otsu) is left to decide, on the greyscale image.
    """
    with Image.open(image) as handle:
        grey = handle.convert("L")
    text = _pytesseract().image_to_string(grey, lang="eng")
    return " ".join(text.split())
