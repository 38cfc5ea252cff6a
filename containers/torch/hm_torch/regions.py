"""Prepared memes + a region-feature store → padded tensor batches for U, O, V, X and D.

Box position encodings, from pixel boxes (x1, y1, x2, y2) and the image size W, H:

| kind      | model                   | vector                                           |
|-----------|-------------------------|--------------------------------------------------|
| `uniter7` | U                       | x1/W, y1/H, x2/W, y2/H, w, h, w·h (w=(x2−x1)/W)  |
| `xyxy4`   | O (vilio, 2052), X, D   | x1/W, y1/H, x2/W, y2/H                           |
| `xyxywh6` | O (released 2054 layer) | x1/W, y1/H, x2/W, y2/H, w, h                     |
| `none`    | V                       | nothing: VisualBERT uses no box geometry         |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from hm_shared.dataset import Meme
from hm_shared.errors import HmDataError
from hm_torch.tokenization import TextTokenizer, pad_ids

if TYPE_CHECKING:
    from hm_shared.features import FeatureStore, RegionFeatures

PositionKind = Literal["uniter7", "xyxy4", "xyxywh6", "none"]
POSITION_DIMS: dict[str, int] = {"uniter7": 7, "xyxy4": 4, "xyxywh6": 6, "none": 0}
_BOX_TOLERANCE = 0.01  # detector boxes are clipped to the image; allow rounding, not garbage


def box_positions(item: RegionFeatures, kind: PositionKind, source: str = "features") -> np.ndarray:
    """Position vectors (N, POSITION_DIMS[kind]) of one image's boxes, float32."""
    boxes = np.asarray(item.boxes, dtype=np.float32)  # (N, 4) pixels
    if kind == "none":
        return np.zeros((len(boxes), 0), dtype=np.float32)
    if item.image_w <= 0 or item.image_h <= 0:
        raise HmDataError(f"image {item.image_id}: size {item.image_w}x{item.image_h}", source)
    norm = boxes / np.array([item.image_w, item.image_h] * 2, dtype=np.float32)  # (N, 4)
    if norm.size and (norm.min() < -_BOX_TOLERANCE or norm.max() > 1 + _BOX_TOLERANCE):
        raise HmDataError(
            f"image {item.image_id}: boxes reach {norm.min():.3f}…{norm.max():.3f} of the image "
            f"size {item.image_w}x{item.image_h}; expected pixel boxes inside the image",
            source,
        )
    norm = norm.clip(0.0, 1.0)
    if kind == "xyxy4":
        return norm
    w = norm[:, 2:3] - norm[:, 0:1]  # (N, 1)
    h = norm[:, 3:4] - norm[:, 1:2]  # (N, 1)
    if kind == "xyxywh6":
        return np.concatenate([norm, w, h], axis=1)
    return np.concatenate([norm, w, h, w * h], axis=1)  # uniter7


class RegionDataset(Dataset[dict[str, Any]]):
    """One meme: tokenised text (+ object tags for O), its regions and their positions.

    `drop_regions` gives the text-only ablation: every example has zero regions."""

    def __init__(
        self,
        examples: Sequence[Meme],
        store: FeatureStore | Mapping[str, RegionFeatures],
        tokenizer: TextTokenizer,
        position: PositionKind,
        max_regions: int = 100,
        tag_names: Sequence[str] | None = None,
        drop_regions: bool = False,
        store_name: str = "features",
    ) -> None:
        self.examples = list(examples)
        self.store = store
        self.tokenizer = tokenizer
        self.position = position
        self.max_regions = max_regions
        self.tag_names = tag_names
        self.drop_regions = drop_regions
        self.store_name = store_name
        absent = [e.id for e in self.examples if e.id not in store]
        if absent:
            raise HmDataError(
                f"{len(absent)} meme(s) have no region features, e.g. {absent[:5]}; "
                "run the extract stage for this feature set",
                store_name,
            )

    def __len__(self) -> int:
        return len(self.examples)

    def ids(self) -> list[str]:
        return [e.id for e in self.examples]

    def labels(self) -> np.ndarray:
        """Labels in dataset order, −1 where unknown (the engine's class balancing reads it)."""
        return np.array([-1 if e.label is None else e.label for e in self.examples], dtype=np.int64)

    def _tags(self, item: RegionFeatures) -> str:
        assert self.tag_names is not None
        names = [self.tag_names[int(i)] for i in item.object_ids[: self.max_regions]]
        return " ".join(dict.fromkeys(names))  # unique, in detection order

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.examples[index]
        item = self.store[example.id]
        tags = self._tags(item) if self.tag_names is not None else None
        ids, types = self.tokenizer.encode(example.text, tags)
        count = 0 if self.drop_regions else min(item.num_boxes, self.max_regions)
        feats = np.asarray(item.features[:count], dtype=np.float32)  # (N, D)
        positions = box_positions(item, self.position, self.store_name)[:count]  # (N, P)
        return {
            "id": example.id,
            "input_ids": ids,
            "token_type_ids": types,
            "img_feats": torch.from_numpy(feats.copy()),
            "img_pos": torch.from_numpy(positions.copy()),
            "label": -1 if example.label is None else example.label,
        }


def collate_regions(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pad a list of `RegionDataset` items into a batch.

    Returns `ids` (list[str]), `input_ids`, `token_type_ids` (Tensor[B, T] long), `text_mask`
    (Tensor[B, T] float), `img_feats` (Tensor[B, N, D]), `img_pos` (Tensor[B, N, P]), `img_mask`
    (Tensor[B, N] float) and `label` (Tensor[B] long, −1 where unlabelled)."""
    input_ids, text_mask = pad_ids([it["input_ids"] for it in items])
    token_type_ids, _ = pad_ids([it["token_type_ids"] for it in items])
    regions = max((it["img_feats"].shape[0] for it in items), default=0)
    dim, pos_dim = items[0]["img_feats"].shape[1], items[0]["img_pos"].shape[1]
    img_feats = torch.zeros(len(items), regions, dim)
    img_pos = torch.zeros(len(items), regions, pos_dim)
    img_mask = torch.zeros(len(items), regions)
    for i, it in enumerate(items):
        n = it["img_feats"].shape[0]
        img_feats[i, :n], img_pos[i, :n], img_mask[i, :n] = it["img_feats"], it["img_pos"], 1.0
    return {
        "ids": [it["id"] for it in items],
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "text_mask": text_mask,
        "img_feats": img_feats,
        "img_pos": img_pos,
        "img_mask": img_mask,
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
    }


__all__ = [
    "POSITION_DIMS",
    "PositionKind",
    "RegionDataset",
    "box_positions",
    "collate_regions",
]
