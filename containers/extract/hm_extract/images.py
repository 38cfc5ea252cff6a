"""Which images to extract, and decoding them to the pixels upstream's `cv2.imread` gives.

vilio's extraction read every image with `cv2.imread(path)` (IMREAD_COLOR): 8-bit BGR, the
alpha channel dropped without compositing, and 16-bit samples reduced to their high byte
(libpng's strip-16, which OpenCV asks for when it wants 8 bits). PIL's `convert("RGB")` agrees
on 8-bit images but clips a 16-bit grey sample to 255 instead, so such images are reduced here
first (tests compare with OpenCV itself).

Decoding and resizing run in DataLoader worker processes (`decoded_batches`), so the detector
does not wait on PNG decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from hm_shared.dataset import PREDICT_SPLIT, SPLITS, read_prepared
from hm_shared.errors import HmDataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# the prepare stage's splits, and the new memes of `orchestrator predict` (hm_shared.intake)
PREPARED_SPLITS = (*SPLITS, "traindev", "pretrain", PREDICT_SPLIT)
# PIL modes of 16- and 32-bit single-channel images (16-bit grey PNGs open as one of these)
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")

Preprocess = Callable[[Image.Image], torch.Tensor]


class UnreadableImageError(HmDataError):
    """An image file that PIL cannot decode."""


@dataclass(frozen=True)
class ImageItem:
    image_id: str
    path: Path


@dataclass
class LoadedImage:
    item: ImageItem
    tensor: torch.Tensor | None  # (3, h, w) float BGR at the detector's input size
    original_size: tuple[int, int]  # (height, width) of the file
    error: str | None = None


def list_images(images_dir: Path) -> list[ImageItem]:
    """Every image file of a folder (id = file stem), sorted by name."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise HmDataError("image folder not found; expected the meme images here", images_dir)
    items: dict[str, ImageItem] = {}
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in items:
            raise HmDataError(
                f"two images share the id {path.stem!r}: "
                f"{items[path.stem].path.name} and {path.name}",
                images_dir,
            )
        items[path.stem] = ImageItem(path.stem, path)
    return list(items.values())


def prepared_images(prepared_dir: Path, hm_dir: Path) -> list[ImageItem]:
    """The images referenced by the prepared splits, each once, in first-seen order."""
    items: dict[str, ImageItem] = {}
    found = False
    for split in PREPARED_SPLITS:
        path = Path(prepared_dir) / f"{split}.jsonl"
        if not path.is_file():
            continue
        found = True
        for meme in read_prepared(path):
            items.setdefault(meme.id, ImageItem(meme.id, Path(hm_dir) / meme.img))
    if not found:
        raise HmDataError(
            f"no prepared split found; expected {', '.join(PREPARED_SPLITS)} "
            ".jsonl here (run the prepare stage first)",
            prepared_dir,
        )
    return list(items.values())


def as_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB with the values `cv2.imread(path)` gives (in RGB order).

    >>> grey = Image.fromarray(np.array([[0, 255, 256, 65535]], dtype=np.uint16))
    >>> np.asarray(as_rgb(grey))[0, :, 0].tolist()
    [0, 0, 1, 255]
    """
    if image.mode in _WIDE_GREY:
        wide = np.asarray(image).astype(np.int64)
        grey = (np.clip(wide, 0, 0xFFFF) >> 8).astype(np.uint8)  # libpng strip-16: high byte
        return Image.fromarray(grey).convert("RGB")
    return image.convert("RGB")


def load_image(item: ImageItem, preprocess: Preprocess) -> LoadedImage:
    """Decode (EXIF orientation applied, as cv2.imread does) and resize one image."""
    try:
        with Image.open(item.path) as image:
            image = ImageOps.exif_transpose(image)
            size = (image.height, image.width)
            tensor = preprocess(as_rgb(image))
    except (
        OSError,
        UnidentifiedImageError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as exc:
        return LoadedImage(item, None, (0, 0), f"{type(exc).__name__}: {exc}")
    return LoadedImage(item, tensor, size)


class _Decoded(Dataset[LoadedImage]):
    def __init__(self, items: Sequence[ImageItem], preprocess: Preprocess) -> None:
        self.items = list(items)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> LoadedImage:
        return load_image(self.items[index], self.preprocess)


def _as_list(batch: list[LoadedImage]) -> list[LoadedImage]:
    return batch


def decoded_batches(
    items: Sequence[ImageItem], batch_size: int, preprocess: Preprocess, workers: int
) -> Iterator[list[LoadedImage]]:
    """Batches of decoded images in `items` order; `workers` processes decode ahead (0: in this
    process, one batch at a time)."""
    loader = DataLoader(
        _Decoded(items, preprocess),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_as_list,
        prefetch_factor=2 if workers else None,
    )
    yield from loader


__all__ = [
    "IMAGE_SUFFIXES",
    "ImageItem",
    "LoadedImage",
    "UnreadableImageError",
    "as_rgb",
    "decoded_batches",
    "list_images",
    "load_image",
    "prepared_images",
]
