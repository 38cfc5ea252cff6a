"""UNITER (ChenRocks/UNITER) as vilio's model "U": one BERT over [text tokens ; image regions].

Attribute names follow `uniter-{base,large}.pt` below its `uniter.` prefix, which are HF `BertModel`
names plus `img_embeddings.*`. UNITER packs each example as [its tokens][its regions] with
`gather_index`; we keep text padding between the two instead. That is exact, not an approximation:
regions carry no position embedding, padded tokens are masked out of attention, and the pooler reads
position 0, so the outputs at real positions are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from hm_torch.checkpoints import (
    HEAD_RANDOM,
    CheckpointFormat,
    bert_pairs,
    linear_pairs,
    slice_columns,
)
from hm_torch.models.family import RegionFamily
from hm_torch.models.layers import (
    BertEmbeddings,
    BertEncoder,
    BertPooler,
    BertSettings,
    EncoderOutput,
    classifier_head,
    extended_attention_mask,
    init_bert_weights,
)
from hm_torch.single_stream import region_entry


@dataclass
class UniterConfig(BertSettings):
    vocab_size: int = 28996  # bert-*-cased: UNITER's text side
    img_dim: int = 2048
    pos_dim: int = 7  # x1, y1, x2, y2, w, h, w·h, all divided by the image size
    num_labels: int = 2


class UniterImageEmbeddings(nn.Module):
    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.img_linear = nn.Linear(config.img_dim, config.hidden_size)
        self.img_layer_norm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.pos_linear = nn.Linear(config.pos_dim, config.hidden_size)
        self.pos_layer_norm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        # Row 1 is added to the (zeroed) features of masked regions in pre-training; row 0 unused.
        self.mask_embedding = nn.Embedding(2, config.img_dim)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        img_feats: Tensor,
        img_pos: Tensor,
        type_embedding: Tensor,
        masked_regions: Tensor | None = None,
    ) -> Tensor:
        if masked_regions is not None:
            mask_row = self.mask_embedding.weight[1]  # (img_dim,)
            img_feats = img_feats + masked_regions[..., None].to(img_feats.dtype) * mask_row
        feats = self.img_layer_norm(self.img_linear(img_feats))  # (B, N, H)
        pos = self.pos_layer_norm(self.pos_linear(img_pos))  # (B, N, H)
        return self.dropout(self.LayerNorm(feats + pos + type_embedding))


class UniterModel(nn.Module):
    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.img_embeddings = UniterImageEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)

    def forward(
        self,
        input_ids: Tensor,
        text_mask: Tensor,
        img_feats: Tensor,
        img_pos: Tensor,
        img_mask: Tensor,
        masked_regions: Tensor | None = None,
    ) -> EncoderOutput:
        """Encode text and regions as one sequence.

        Args:
            input_ids (Tensor[B, T]): word-piece ids, `[CLS] text [SEP]`, padded with 0.
            text_mask (Tensor[B, T]): 1 for real tokens, 0 for padding.
            img_feats (Tensor[B, N, img_dim]): region features; N may be 0.
            img_pos (Tensor[B, N, 7]): boxes as (x1, y1, x2, y2, w, h, w·h), normalised by W and H.
            img_mask (Tensor[B, N]): 1 for real regions, 0 for padding.
            masked_regions (Tensor[B, N] | None): 1 where a region is masked (pre-training).

        Returns:
            EncoderOutput with `sequence` (Tensor[B, T + N, H]), text first, then regions.
        """
        text = self.embeddings(input_ids)  # (B, T, H); token type 0, positions 0..T-1
        type_one = self.embeddings.token_type_embeddings.weight[1]  # (H,)
        regions = self.img_embeddings(img_feats, img_pos, type_one, masked_regions)  # (B, N, H)
        hidden = torch.cat([text, regions], dim=1)  # (B, T + N, H)
        mask = torch.cat([text_mask, img_mask], dim=1)  # (B, T + N)
        states = self.encoder(hidden, extended_attention_mask(mask, hidden.dtype))
        return EncoderOutput(states[-1], self.pooler(states[-1]), states)


class UniterForHatefulMemes(nn.Module):
    """UNITER + vilio's head (Linear(H,2H) → GeLU → LayerNorm → Linear(2H,2)); reads the pooler."""

    def __init__(self, config: UniterConfig) -> None:
        super().__init__()
        self.config = config
        self.uniter = UniterModel(config)
        self.classifier = classifier_head(config.hidden_size, config.num_labels)
        self.apply(partial(init_bert_weights, initializer_range=config.initializer_range))

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits (Tensor[B, 2]) from a batch of `hm_torch.regions` with keys `input_ids`,
        `text_mask` (Tensor[B, T]), `img_feats` (Tensor[B, N, 2048]), `img_pos` (Tensor[B, N, 7])
        and `img_mask` (Tensor[B, N])."""
        out = self.uniter(
            batch["input_ids"],
            batch["text_mask"],
            batch["img_feats"],
            batch["img_pos"],
            batch["img_mask"],
        )
        return self.classifier(out.pooled)


def uniter_format(
    model: nn.Module, state: Mapping[str, Tensor] | None = None, source: str = ""
) -> CheckpointFormat:
    """`uniter-{base,large}.pt` (ChenRocks/UNITER `ModelSaver`) → `UniterForHatefulMemes`."""
    config = model.config
    pairs = bert_pairs("uniter.", "uniter.", config.num_hidden_layers)
    for module in ("img_linear", "img_layer_norm", "pos_linear", "pos_layer_norm", "LayerNorm"):
        pairs += linear_pairs(f"uniter.img_embeddings.{module}", f"uniter.img_embeddings.{module}")
    pairs.append(
        (
            "uniter.img_embeddings.mask_embedding.weight",
            "uniter.img_embeddings.mask_embedding.weight",
        )
    )
    heads = "UNITER pre-training head, not used for fine-tuning"
    return CheckpointFormat(
        name="uniter",
        pairs=pairs,
        allow_missing={
            "classifier.*": HEAD_RANDOM,
            "uniter.img_embeddings.mask_embedding.weight": "masked-region pre-training only",
        },
        allow_unexpected={
            f"{top}.*": heads for top in ("cls", "feat_regress", "region_classifier", "itm_output")
        },
        adapters={"uniter.img_embeddings.pos_linear.weight": slice_columns},
        legacy_renames={".gamma": ".weight", ".beta": ".bias"},  # old apex LayerNorm names
    )


def _configure(config: BertSettings, params: Mapping[str, Any], feature_dim: int) -> BertSettings:
    return config.replace(img_dim=feature_dim)


FAMILY = RegionFamily(
    config=UniterConfig,
    model=UniterForHatefulMemes,
    pretraining=None,  # vilio fine-tunes U from UNITER's release, no task pre-training
    position="uniter7",
    configure=_configure,
    checkpoint_format=uniter_format,
    backbone="uniter",
)


ENTRY = region_entry(FAMILY)

__all__ = [
    "ENTRY",
    "FAMILY",
    "UniterConfig",
    "UniterForHatefulMemes",
    "UniterImageEmbeddings",
    "UniterModel",
    "uniter_format",
]
