"""Prepared splits as torch datasets, and image loading for the raw-image model (B).

Items are dicts (the engine's data contract, `hm_torch.engine`): each model family turns one
`Meme` into its tensors with an `encode` function; the dataset adds the int `label` (-1 when
the split has none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from hm_shared.dataset import Meme
from hm_shared.errors import HmDataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MemeDataset(Dataset):
    """`encode(meme)` plus `label` per item; `labels()` and `ids()` without encoding."""

    def __init__(self, memes: Sequence[Meme], encode: Callable[[Meme], dict[str, Any]]) -> None:
        self.memes = list(memes)
        self.encode = encode

    def __len__(self) -> int:
        return len(self.memes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        meme = self.memes[index]
        return {**self.encode(meme), "label": -1 if meme.label is None else meme.label}

    def labels(self) -> np.ndarray:
        return np.array([-1 if m.label is None else m.label for m in self.memes], dtype=np.int64)

    def ids(self) -> list[str]:
        return [m.id for m in self.memes]


def load_image(path: Path) -> Image.Image:
    """The image at `path` as RGB; HmDataError naming the file when it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise HmDataError(f"cannot read image: {exc}", path) from exc


class ImageLoader:
    """Meme → Tensor[3, size, size]: resize the short side to `size`, centre crop, ImageNet
    normalisation. With `cache`, the cropped uint8 pixels are kept in memory (small sets)."""

    def __init__(self, hm_dir: Path, size: int = 224, cache: bool = False) -> None:
        self.hm_dir = Path(hm_dir)
        self.size = size
        self.cache: dict[str, Tensor] | None = {} if cache else None
        # imported here: only B reads images, and torchvision's import costs every other
        # stage process seconds
        from torchvision.transforms import v2

        self.crop = v2.Compose(
            [
                v2.PILToTensor(),
                v2.Resize(size, antialias=True),
                v2.CenterCrop(size),
            ]
        )
        self.normalise = v2.Compose(
            [
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def pixels(self, meme: Meme) -> Tensor:
        if self.cache is not None and meme.img in self.cache:
            return self.cache[meme.img]
        pixels = self.crop(load_image(self.hm_dir / meme.img))  # (3, size, size) uint8
        if self.cache is not None:
            self.cache[meme.img] = pixels
        return pixels

    def __call__(self, meme: Meme) -> Tensor:
        return self.normalise(self.pixels(meme))


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageLoader",
    "MemeDataset",
    "load_image",
]
