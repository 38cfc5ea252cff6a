"""Decoding gives the pixels of upstream's `cv2.imread(path)` (OpenCV itself is the reference)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from hm_extract.images import ImageItem, as_rgb, decoded_batches

RNG = np.random.default_rng(0)


def _write(folder: Path) -> dict[str, Path]:
    """PNGs in the modes a meme folder can hold, written by the library that owns each mode."""
    paths = {}

    def path(name: str) -> Path:
        paths[name] = folder / f"{name}.png"
        return paths[name]

    grey16 = np.array([[0, 255, 256, 511, 32768, 40000, 65535, 128]], dtype=np.uint16)
    Image.fromarray(grey16).save(path("grey16"))
    cv2.imwrite(str(path("rgb16")), RNG.integers(0, 65536, (5, 7, 3), dtype=np.uint16))
    cv2.imwrite(str(path("rgba16")), RNG.integers(0, 65536, (5, 7, 4), dtype=np.uint16))
    Image.fromarray(RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8), "RGBA").save(path("rgba"))
    Image.fromarray(RNG.integers(0, 256, (5, 7, 2), dtype=np.uint8), "LA").save(path("grey_alpha"))
    rgb = Image.fromarray(RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path("palette"))
    Image.fromarray(RNG.integers(0, 2, (5, 7), dtype=np.uint8) * 255).convert("1").save(
        path("bilevel")
    )
    return paths


def test_every_mode_decodes_to_the_pixels_opencv_gives(tmp_path: Path) -> None:
    for name, path in _write(tmp_path).items():
        with Image.open(path) as image:
            ours = np.asarray(as_rgb(image))
        theirs = cv2.imread(str(path))[:, :, ::-1]  # BGR → RGB
        np.testing.assert_array_equal(ours, theirs, err_msg=name)


def test_a_16_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = _write(tmp_path)["grey16"]
    with Image.open(path) as image:
        assert image.mode.startswith("I")
        assert np.asarray(image.convert("RGB"))[0, :, 0].tolist()[2] == 255  # PIL clips 256
        assert np.asarray(as_rgb(image))[0, :, 0].tolist() == [0, 0, 1, 1, 128, 156, 255, 0]


@pytest.mark.parametrize("workers", [0, 2])
def test_decoded_batches_keep_order_and_report_unreadable_files(tmp_path: Path, workers) -> None:
    paths = _write(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut off")
    items = [ImageItem(name, path) for name, path in paths.items()]
    items.insert(2, ImageItem("broken", tmp_path / "broken.png"))

    def preprocess(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image).copy())

    batches = list(decoded_batches(items, 3, preprocess, workers))
    assert [len(b) for b in batches] == [3, 3, 2]
    loaded = [image for batch in batches for image in batch]
    assert [image.item.image_id for image in loaded] == [item.image_id for item in items]
    assert loaded[2].tensor is None and "cannot identify image file" in (loaded[2].error or "")
    grey = next(image for image in loaded if image.item.image_id == "grey16")
    assert grey.original_size == (1, 8) and grey.tensor[0, :, 0].tolist()[5] == 156
