"""Shared fixtures of the extract tests: synthetic images, tiny and full-size detectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hm_extract.config import BUTDConfig
from hm_extract.detector import BUTDDetector, random_detector

# Odd sizes on purpose: (height, width).
ODD_SIZES = ((37, 251), (120, 90), (64, 64), (301, 97))


def synthetic_image(height: int, width: int, seed: int) -> Image.Image:
    """Blocks of colour on noise: something for a detector to look at, deterministic."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    for _ in range(4):
        y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
        h, w = int(rng.integers(4, height // 2 + 5)), int(rng.integers(4, width // 2 + 5))
        pixels[y : y + h, x : x + w] = rng.integers(80, 255, 3, dtype=np.uint8)
    return Image.fromarray(pixels)


def _write_images(
    folder: Path, sizes: tuple[tuple[int, int], ...] = ODD_SIZES, first_id: int = 1
) -> list[str]:
    """PNG files `folder/<5-digit id>.png` of the given (height, width); returns the ids."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for offset, (h, w) in enumerate(sizes):
        image_id = f"{first_id + offset:05d}"
        synthetic_image(h, w, seed=first_id + offset).save(folder / f"{image_id}.png")
        ids.append(image_id)
    return ids


@pytest.fixture(scope="session")
def write_images():
    return _write_images


@pytest.fixture(scope="session")
def tiny_attr() -> BUTDDetector:
    return random_detector(BUTDConfig().tiny(), seed=0)


@pytest.fixture(scope="session")
def tiny_plain() -> BUTDDetector:
    return random_detector(BUTDConfig.for_weights("plain").tiny(), seed=0)


@pytest.fixture(scope="session")
def full_attr() -> BUTDDetector:
    """The full-size attribute detector with random weights (about 3 s to build)."""
    return random_detector(BUTDConfig().smoke(), seed=0)


@pytest.fixture(scope="session")
def odd_images() -> list[Image.Image]:
    return [synthetic_image(h, w, seed=i) for i, (h, w) in enumerate(ODD_SIZES)]


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)  # the CI machine has two cores shared by every suite
