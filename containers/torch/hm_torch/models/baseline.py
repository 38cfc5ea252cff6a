"""B — the DrivenData "concat fusion" baseline: ResNet-152 image features and fastText
sentence vectors, each projected, concatenated, fused, classified.

    image (B, 3, 224, 224) → ResNet-152 pooled (B, 2048) → Linear + ReLU → (B, vision_dim)
    text  → fastText sentence vector (B, text_dim)     → Linear + ReLU → (B, language_dim)
    concat (B, vision_dim + language_dim) → Linear + ReLU → Dropout → Linear → logits (B, 2)

The full profile starts the ResNet from torchvision's ImageNet weights (the `checkpoint` of
the recipe's full table, `resnet152-f82ba261.pth`, loaded strictly); the smoke profile uses a
small random CNN. The
`modalities` param drops one branch ("text" / "image" ablations for the learning test).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from hm_shared.dataset import Meme, read_prepared_split
from hm_shared.errors import MissingWeightsError
from hm_shared.spec import StageSpec
from hm_torch.checkpoints import CheckpointFormat, load_checkpoint
from hm_torch.data import ImageLoader, MemeDataset
from hm_torch.engine import CHECKPOINT_DIR, ENGINE_PARAMS, ModelKit
from hm_torch.models.family import ModelEntry, field_names
from hm_torch.params import config_from_params
from hm_torch.text_fasttext import load_vectors, save_vectors, train_sentence_vectors

RESNET152_URL = "https://download.pytorch.org/models/resnet152-f82ba261.pth"
RESNET152_FEATURES = 2048


@dataclass(frozen=True)
class BaselineConfig:
    """Model params of B (recipe `[models.B.params]`); defaults are the full profile."""

    backbone: Literal["resnet152", "small_cnn"] = "resnet152"
    checkpoint: str | None = None  # resnet152's torchvision ImageNet file under data/weights
    image_size: int = 224
    text_dim: int = 300  # fastText vector size
    fasttext_epoch: int = 5
    fasttext_min_count: int = 1  # memes are short; fastText's default 5 drops most words
    fasttext_bucket: int = 2_000_000  # char n-gram hash buckets (fastText default)
    vision_dim: int = 300
    language_dim: int = 300
    fusion_dim: int = 256
    dropout: float = 0.1
    small_cnn_width: int = 32
    modalities: Literal["both", "text", "image"] = "both"
    cache_images: bool = False  # keep decoded pixels in memory (small data sets only)

    @classmethod
    def from_params(cls, params: dict[str, Any], where: str) -> BaselineConfig:
        engine = sorted(ENGINE_PARAMS)
        return config_from_params(cls, params, where, "model B", note=f"; engine params: {engine}")


class BaselineSmallCNN(nn.Module):
    """Four stride-2 conv blocks and global average pooling: the smoke profile's encoder."""

    def __init__(self, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for mult in (1, 2, 4, 8):
            layers += [
                nn.Conv2d(channels, width * mult, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width * mult),
                nn.ReLU(inplace=True),
            ]
            channels = width * mult
        self.features = nn.Sequential(*layers)
        self.out_dim = channels

    def forward(self, image: Tensor) -> Tensor:
        return self.features(image).mean(dim=(2, 3))  # (B, C)


def resnet152_encoder(weights: Path | None) -> nn.Module:
    """torchvision ResNet-152 without its classifier, pooled output (B, 2048). `weights`: the
    torchvision ImageNet file, every key loaded (a missing or renamed key is an error)."""
    from torchvision.models import resnet152  # here: see ImageLoader in hm_torch.data

    model = resnet152(weights=None)
    if weights is not None:
        pairs = [(key, key) for key in model.state_dict()]
        load_checkpoint(model, weights, CheckpointFormat(name="torchvision resnet152", pairs=pairs))
    model.fc = nn.Identity()
    return model


class BaselineForHatefulMemes(nn.Module):
    def __init__(
        self, config: BaselineConfig, image_encoder: nn.Module | None, image_features: int
    ) -> None:
        super().__init__()
        self.config = config
        self.use_image = config.modalities in ("both", "image")
        self.use_text = config.modalities in ("both", "text")
        fused_in = 0
        if self.use_image:
            self.image_encoder = image_encoder
            self.vision_projection = nn.Linear(image_features, config.vision_dim)
            fused_in += config.vision_dim
        if self.use_text:
            self.language_projection = nn.Linear(config.text_dim, config.language_dim)
            fused_in += config.language_dim
        self.fusion = nn.Linear(fused_in, config.fusion_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.fusion_dim, 2)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """batch["image"] (Tensor[B, 3, S, S], ImageNet-normalised), batch["text_vec"]
        (Tensor[B, text_dim], fastText sentence vectors) → logits (Tensor[B, 2])."""
        parts = []
        if self.use_image:
            pooled = self.image_encoder(batch["image"])  # (B, image_features)
            parts.append(torch.relu(self.vision_projection(pooled)))
        if self.use_text:
            parts.append(torch.relu(self.language_projection(batch["text_vec"])))
        fused = torch.relu(self.fusion(torch.cat(parts, dim=-1)))  # (B, fusion_dim)
        return self.classifier(self.dropout(fused))


def build_model(config: BaselineConfig, weights: Path | None) -> BaselineForHatefulMemes:
    """B with its image encoder; `weights` is required for (and only read by) resnet152."""
    encoder: nn.Module | None = None
    features = 0
    if config.modalities != "text":
        if config.backbone == "resnet152":
            encoder, features = resnet152_encoder(weights), RESNET152_FEATURES
        else:
            small = BaselineSmallCNN(config.small_cnn_width)
            encoder, features = small, small.out_dim
    return BaselineForHatefulMemes(config, encoder, features)


def resnet_weights_path(spec: StageSpec, config: BaselineConfig) -> Path:
    """The torchvision ImageNet file the recipe names (`checkpoint`); MissingWeightsError
    (with its URL) when it is not named, not given to the stage or not on disk."""
    if config.checkpoint is None:
        raise MissingWeightsError(
            f"stage {spec.stage}: model B with backbone resnet152 starts from torchvision's "
            f"ImageNet weights ({RESNET152_URL}): name the file in the param checkpoint "
            '([models.B.full]), or set backbone = "small_cnn"'
        )
    try:
        return spec.weight(config.checkpoint, "ImageNet weights of ResNet-152")
    except MissingWeightsError as exc:
        raise MissingWeightsError(f"{exc}; download {RESNET152_URL}") from exc


def build_baseline(spec: StageSpec, params: dict[str, Any], train: Sequence[Meme]) -> ModelKit:
    """The train-stage kit of B: fastText fitted on the training texts, the model, its data."""
    config = BaselineConfig.from_params(params, f"stage {spec.stage}")
    weights = None
    if config.backbone == "resnet152" and config.modalities != "text":
        weights = resnet_weights_path(spec, config)
    vectors = None if config.modalities == "image" else stage_text_vectors(spec, config, train)
    images = ImageLoader(spec.path("hm"), config.image_size, cache=config.cache_images)
    return ModelKit(
        model=build_model(config, weights),
        collate=default_collate,
        dataset=lambda memes: MemeDataset(memes, baseline_encoder(config, images, vectors)),
    )


def stage_text_vectors(
    spec: StageSpec, config: BaselineConfig, train: Sequence[Meme]
) -> dict[str, np.ndarray]:
    """fastText vectors of every text the stage reads (fit, valid and predict splits), trained
    once and kept in the checkpoint dir so that a resumed stage sees the very same vectors."""
    cache = spec.output_dir / CHECKPOINT_DIR / "text_vectors.npz"
    if cache.is_file():
        return load_vectors(cache)
    model = train_sentence_vectors(
        [m.text for m in train],
        seed=spec.model_run.seed,
        dim=config.text_dim,
        epoch=config.fasttext_epoch,
        min_count=config.fasttext_min_count,
        bucket=config.fasttext_bucket,
    )
    splits = [s for s in (spec.model_run.valid, *spec.model_run.predict) if s]
    prepared = spec.path("prepared")
    memes = [*train, *(m for split in splits for m in read_prepared_split(prepared, split))]
    vectors = {m.text: model(m.text) for m in memes}
    save_vectors(cache, vectors)
    return vectors


def baseline_encoder(
    config: BaselineConfig, images: ImageLoader, vectors: dict[str, np.ndarray] | None
) -> Callable[[Meme], dict[str, Tensor]]:
    def encode(meme: Meme) -> dict[str, Tensor]:
        item: dict[str, Tensor] = {}
        if config.modalities != "text":
            item["image"] = images(meme)  # (3, S, S)
        if vectors is not None:
            item["text_vec"] = torch.from_numpy(vectors[meme.text])  # (text_dim,)
        return item

    return encode


ENTRY = ModelEntry(build=build_baseline, params=field_names(BaselineConfig))

__all__ = [
    "ENTRY",
    "RESNET152_URL",
    "BaselineConfig",
    "BaselineForHatefulMemes",
    "BaselineSmallCNN",
    "build_baseline",
    "build_model",
    "resnet152_encoder",
]
