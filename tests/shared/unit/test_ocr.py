"""OCR of meme captions with the real Tesseract (installed by .ci/run: apt-get install
tesseract-ocr): captions drawn with PIL over coloured pictures come back as drawn."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from hm_shared.ocr import read_text, tesseract_version

CAPTIONS = [
    "when the pellites are all criminals just saying",
    "remember: the drunes are a plague on us",
    "fun fact: those yarvans must be kept out again",
    "look at this cute dog",
    "everyone knows the quiblings should be banned",
    "my favourite breakfast is toast and jam",
    "nobody asked for this meme today",
    "that moment when the wifi comes back",
]


@pytest.fixture(scope="module", autouse=True)
def _tesseract() -> None:
    if shutil.which("tesseract") is None:
        pytest.fail(
            "the tesseract program is not installed: apt-get install tesseract-ocr "
            "(.ci/run installs it)",
            pytrace=False,
        )


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _meme(path: Path, caption: str, style: str, rng: random.Random) -> Path:
    """A 640x360 picture of noisy colour with the caption in two lines, top and bottom: white
    with a black outline (the Impact style), or black on a white band."""
    ground = tuple(rng.randrange(40, 200) for _ in range(3))
    image = Image.new("RGB", (640, 360), ground)
    draw = ImageDraw.Draw(image)
    for _ in range(30):  # clutter: the caption is not on a plain ground
        x, y = rng.randrange(600), rng.randrange(320)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x, y, x + rng.randrange(10, 60), y + rng.randrange(10, 60)), fill=colour)
    font = ImageFont.load_default(size=28)
    words = caption.split()
    lines = [(20, " ".join(words[: len(words) // 2])), (300, " ".join(words[len(words) // 2 :]))]
    for y, line in lines:
        if style == "outlined":
            draw.text((20, y), line, font=font, fill="white", stroke_width=2, stroke_fill="black")
        else:
            draw.rectangle((0, y - 8, 640, y + 44), fill="white")
            draw.text((20, y), line, font=font, fill="black")
    image.save(path)
    return path


@pytest.mark.parametrize("style", ["outlined", "banded"])
def test_captions_drawn_on_pictures_come_back_with_a_low_character_error_rate(
    tmp_path: Path, style: str
) -> None:
    rng = random.Random(0)
    errors = total = 0
    for i, caption in enumerate(CAPTIONS):
        got = read_text(_meme(tmp_path / f"{i}.png", caption, style, rng))
        errors += _levenshtein(got, caption)
        total += len(caption)
    # measured with Tesseract 5.3.0: 1.6 % in both styles (5 of 305 characters)
    assert errors / total <= 0.04, f"character error rate {errors / total:.3f}"


def test_an_image_without_text_reads_as_empty_and_the_version_is_known(tmp_path: Path) -> None:
    Image.new("RGB", (200, 120), (90, 140, 60)).save(tmp_path / "plain.png")
    assert read_text(tmp_path / "plain.png") == ""
    assert tesseract_version()[0].isdigit()
