"""C — Hate-CLIPper (Kumar & Nandakumar 2022): a small trained head on frozen CLIP features.

    image_pooled (B, Hv) → image map: Linear(Hv, m) + Dropout(p_map) [+ (ReLU, Linear, Dropout)…]
    text_pooled  (B, Ht) → text map:  Linear(Ht, m) + Dropout(p_map) [+ …]   (num_mapping_layers)
    both L2-normalised, then fused:
        align  f = image ⊙ text                        (B, m)
        cross  f = vec(image ⊗ text), the outer product (B, m²)   ("feature interaction matrix")
    Dropout(p_fusion) → [Linear(·, m) + ReLU + Dropout(p_pre)] × num_pre_output_layers
    → Linear(·, 1) → z; logits (0, z): softmax over them is sigmoid(z), so the engine's
    cross-entropy is Hate-CLIPper's BCE-with-logits.

As gokulkarthik/hateclipper's `engine.py` with its defaults (no pretrained map, CLIP's pooled
outputs as inputs). The features come from the embed stage's store (`hm_torch.clip_embed`),
computed once: the encoders are frozen, so training reads vectors only. `modalities` "image" or
"text" keeps one branch (its mapped, normalised features go to the pre-output layers): the
ablations of the learning test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from hm_shared.dataset import Meme
from hm_shared.spec import StageSpec
from hm_torch.clip_embed import EmbeddingStore
from hm_torch.engine import ENGINE_PARAMS, ModelKit
from hm_torch.models.family import ModelEntry, field_names
from hm_torch.params import config_from_params


@dataclass(frozen=True)
class HateClipperConfig:
    """Model params of C (recipe `[models.C.params]`); defaults are the published best (align,
    map 1024, 3 pre-output layers, dropout 0.2/0.4/0.1 of its run.sh)."""

    fusion: Literal["align", "cross"] = "align"
    map_dim: int = 1024
    num_mapping_layers: int = 1
    num_pre_output_layers: int = 3
    map_dropout: float = 0.2
    fusion_dropout: float = 0.4
    pre_output_dropout: float = 0.1
    modalities: Literal["both", "image", "text"] = "both"

    @classmethod
    def from_params(cls, params: dict[str, Any], where: str) -> HateClipperConfig:
        engine = sorted(ENGINE_PARAMS)
        return config_from_params(cls, params, where, "model C", note=f"; engine params: {engine}")


def _mapping(in_dim: int, config: HateClipperConfig) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(in_dim, config.map_dim), nn.Dropout(config.map_dropout)]
    for _ in range(1, config.num_mapping_layers):
        layers += [
            nn.ReLU(),
            nn.Linear(config.map_dim, config.map_dim),
            nn.Dropout(config.map_dropout),
        ]
    return nn.Sequential(*layers)


class HateClipperHead(nn.Module):
    def __init__(self, config: HateClipperConfig, image_dim: int, text_dim: int) -> None:
        super().__init__()
        self.config = config
        if config.modalities != "text":
            self.image_map = _mapping(image_dim, config)
        if config.modalities != "image":
            self.text_map = _mapping(text_dim, config)
        fused = config.map_dim
        if config.modalities == "both" and config.fusion == "cross":
            fused = config.map_dim**2
        layers: list[nn.Module] = [nn.Dropout(config.fusion_dropout)]
        width = fused
        for _ in range(config.num_pre_output_layers):
            layers += [
                nn.Linear(width, config.map_dim),
                nn.ReLU(),
                nn.Dropout(config.pre_output_dropout),
            ]
            width = config.map_dim
        self.pre_output = nn.Sequential(*layers)
        self.output = nn.Linear(width, 1)

    def fuse(self, batch: dict[str, Tensor]) -> Tensor:
        """The fused features (B, m) or (B, m²) of a batch of pooled CLIP features."""
        modalities = self.config.modalities
        image = text = None
        if modalities != "text":
            image = F.normalize(self.image_map(batch["image_pooled"]), p=2, dim=1)
        if modalities != "image":
            text = F.normalize(self.text_map(batch["text_pooled"]), p=2, dim=1)
        if image is None or text is None:
            return image if text is None else text  # type: ignore[return-value]
        if self.config.fusion == "align":
            return image * text
        return torch.bmm(image.unsqueeze(2), text.unsqueeze(1)).flatten(1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """batch["image_pooled"] (B, Hv), batch["text_pooled"] (B, Ht) → logits (B, 2)."""
        z = self.output(self.pre_output(self.fuse(batch)))  # (B, 1)
        return torch.cat([torch.zeros_like(z), z], dim=1)


class EmbeddingDataset(Dataset):
    """The memes of a split as rows of the embedding store (`MemeDataset`'s interface)."""

    def __init__(self, memes: Sequence[Meme], store: EmbeddingStore, where: str) -> None:
        self.memes = list(memes)
        rows = store.rows([m.id for m in self.memes], where)
        self.image = torch.from_numpy(store.columns["image_pooled"][rows])
        self.text = torch.from_numpy(store.columns["text_pooled"][rows])

    def __len__(self) -> int:
        return len(self.memes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        label = self.memes[index].label
        return {
            "image_pooled": self.image[index],
            "text_pooled": self.text[index],
            "label": -1 if label is None else label,
        }

    def labels(self) -> np.ndarray:
        return np.array([-1 if m.label is None else m.label for m in self.memes], dtype=np.int64)

    def ids(self) -> list[str]:
        return [m.id for m in self.memes]


def build_hateclipper(spec: StageSpec, params: dict[str, Any], train: Sequence[Meme]) -> ModelKit:
    """The train-stage kit of C: the head sized by the store, the store's rows as data."""
    config = HateClipperConfig.from_params(params, f"stage {spec.stage}")
    store = EmbeddingStore.open(spec.path("embeddings"))
    image_dim = store.columns["image_pooled"].shape[1]
    text_dim = store.columns["text_pooled"].shape[1]
    where = f"stage {spec.stage}: {spec.path('embeddings')}"
    return ModelKit(
        model=HateClipperHead(config, image_dim, text_dim),
        collate=default_collate,
        dataset=lambda memes: EmbeddingDataset(memes, store, where),
    )


ENTRY = ModelEntry(build=build_hateclipper, params=field_names(HateClipperConfig))

__all__ = ["ENTRY", "EmbeddingDataset", "HateClipperConfig", "HateClipperHead", "build_hateclipper"]
