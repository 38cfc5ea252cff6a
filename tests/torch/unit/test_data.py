"""Prepared splits as datasets, image loading and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hm_shared.dataset import Meme
from hm_shared.errors import HmDataError
from hm_torch.data import IMAGENET_MEAN, IMAGENET_STD, ImageLoader, MemeDataset


def _image(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_image_loader_resizes_crops_and_normalises(tmp_path: Path) -> None:
    _image(tmp_path / "img" / "01234.png", (300, 200), (255, 0, 0))
    meme = Meme(id="01234", img="img/01234.png", text="t", label=1)
    loader = ImageLoader(tmp_path, size=32, cache=True)
    pixels = loader(meme)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32
    expected = torch.tensor(
        [
            (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0],
            (0.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1],
            (0.0 - IMAGENET_MEAN[2]) / IMAGENET_STD[2],
        ]
    )
    torch.testing.assert_close(pixels.mean(dim=(1, 2)), expected)
    (tmp_path / "img" / "01234.png").unlink()
    torch.testing.assert_close(loader(meme), pixels)  # served from the cache


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "00001.png").write_bytes(b"not a png")
    loader = ImageLoader(tmp_path, size=16)
    with pytest.raises(HmDataError, match=r"img/00001\.png: cannot read image"):
        loader(Meme(id="00001", img="img/00001.png", text="t", label=0))


def test_meme_dataset_adds_labels_and_marks_unknown() -> None:
    memes = [Meme("00001", "img/00001.png", "a", 1), Meme("00002", "img/00002.png", "b", None)]
    data = MemeDataset(memes, lambda m: {"n": torch.tensor(len(m.text))})
    assert len(data) == 2
    assert data[0]["label"] == 1 and data[1]["label"] == -1
    np.testing.assert_array_equal(data.labels(), [1, -1])
    assert data.ids() == ["00001", "00002"]
