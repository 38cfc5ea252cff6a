"""Synthetic memes whose label needs both modalities (XOR of a text cue and an image cue)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from hm_shared.features import FeatureStoreWriter, RegionFeatures

WORDS = ("look", "at", "this", "picture", "today", "friend", "funny", "again", "now", "here")
CUES = ("sunny", "rainy")


@dataclass(frozen=True)
class XorMemes:
    rows: list[tuple[str, str, int]]  # (id, text, label)
    main: dict[str, RegionFeatures]
    extra: dict[str, RegionFeatures]


def _regions(
    image_id: str, rng: np.random.Generator, n: int, dim: int, pattern: np.ndarray
) -> RegionFeatures:
    h, w = int(rng.integers(200, 400)), int(rng.integers(200, 400))
    x1, y1 = rng.uniform(0, w / 2, n), rng.uniform(0, h / 2, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(5, w / 2, n), y1 + rng.uniform(5, h / 2, n)], 1)
    feats = np.abs(rng.normal(0, 1, (n, dim))) + 2.0 * pattern  # the cue rides on every box
    return RegionFeatures(
        image_id=image_id,
        image_h=h,
        image_w=w,
        boxes=boxes.astype(np.float32),
        features=feats.astype(np.float32),
        object_ids=rng.integers(0, 1600, n),
        object_conf=rng.uniform(0, 1, n).astype(np.float32),
        attr_ids=rng.integers(0, 400, n),
        attr_conf=rng.uniform(0, 1, n).astype(np.float32),
    )


def xor_memes(n: int, seed: int, dim: int = 16, first_id: int = 0) -> XorMemes:
    """Label = (text cue) XOR (image cue); each cue alone carries no information."""
    rng = np.random.default_rng(seed)
    patterns = np.zeros((2, dim), np.float32)
    patterns[0, : dim // 2], patterns[1, dim // 2 :] = 1.0, 1.0
    rows, main, extra = [], {}, {}
    for i in range(n):
        meme_id = f"{first_id + i:05d}"
        text_cue, image_cue = int(rng.integers(2)), int(rng.integers(2))
        words = [*rng.choice(WORDS, size=4).tolist(), CUES[text_cue]]
        rng.shuffle(words)
        rows.append((meme_id, " ".join(words), text_cue ^ image_cue))
        main[meme_id] = _regions(meme_id, rng, 6, dim, patterns[image_cue])
        extra[meme_id] = _regions(meme_id, rng, int(rng.integers(3, 9)), dim, patterns[image_cue])
    return XorMemes(rows, main, extra)


def write_store(root: Path, regions: dict[str, RegionFeatures], dim: int) -> Path:
    with FeatureStoreWriter(root, feature_dim=dim) as writer:
        for item in regions.values():
            writer.add(item)
    return root


def write_prepared_split(path: Path, rows: list[tuple[str, str, int | None]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"id": i, "img": f"img/{i}.png", "text": t, "label": y}) for i, t, y in rows
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def xor_train() -> XorMemes:
    return xor_memes(240, seed=1)


@pytest.fixture(scope="session")
def xor_dev() -> XorMemes:
    return xor_memes(100, seed=2, first_id=1000)
